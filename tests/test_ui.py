"""The UI without a model. Every tab is built against fake Engine functions, as
docs/architecture.md describes; its controls come from the registries and the settings, its events carry
their API names, and its handlers turn results into files and text."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image, PngImagePlugin

from playground import preprocessors, schedulers
from playground.loading import LoadedModel
from playground.metadata import Params, read_png
from playground.errors import InvalidRequest
from playground.families import FAMILIES
from playground.limits import Limits
from playground.schema import GenerateRequest, GenerateResult, Generated, Progress, TokenCount
from playground.settings import ASSETS, CONTROLNETS, Settings
from playground.ui import SD_EXAMPLES, banner, build_app, cache_schedule, examples
from playground.ui import control as control_tab
from playground.ui import inspector as inspector_tab
from playground.ui import prompt as prompt_tab
from playground.ui.common import GPU
from playground.ui.fields import Fields


def fake_model(**changes) -> LoadedModel:
    fields = dict(pipe=None, name="fake-model", source="/models/fake", reason="chosen with --model /models/fake",
                  trained=True, device=torch.device("cpu"), dtype=torch.float32)
    return LoadedModel(**{**fields, **changes})


def refuse(*args, **kwargs):
    raise AssertionError("building the UI must not run the model")


def fake_engine(model: LoadedModel) -> SimpleNamespace:
    return SimpleNamespace(model=model, native_size=128, count_tokens=lambda req: TokenCount(2, 77, ""),
                           limits=Limits(),
                           annotators=SimpleNamespace(source=lambda kind: f"/models/fake/controlnet-{kind}"),
                           grid_evaluations=lambda req: {name: 20 for name in req.schedulers},
                           **{name: refuse for name in ("generate", "grid", "control", "preprocess", "inspect",
                                                         "step_view", "decode_x0", "roundtrip", "attention_view",
                                                         "attention", "detect_pose", "draw_pose", "anatomy")})


@pytest.fixture(scope="module")
def app():
    settings = Settings(max_cfg=12.0, max_steps=40, max_size=256)
    return build_app(fake_engine(fake_model()), settings), settings


def api_names(demo: gr.Blocks) -> list[str]:
    return [f.api_name for f in demo.fns.values() if f.api_visibility == "public"]


def test_every_action_has_one_api_name(app):
    demo, _ = app
    assert sorted(api_names(demo)) == sorted(["generate", "restore", "grid", "preprocess", "control", "inspect", "schedules", "walk",
                                              "vae_roundtrip", "attention", "pose", "draw_pose", "mirror_pose", "anatomy",
                                              "lesson_compression", "lesson_cfg", "lesson_steps"])  # Generate and Enter: one event, one name


def test_controls_come_from_the_settings_and_the_registries(app):
    demo, settings = app
    blocks = list(demo.blocks.values())
    cfg = [b for b in blocks if isinstance(b, gr.Slider) and b.label == "CFG scale"]
    assert len(cfg) == 4 and all(b.maximum == settings.max_cfg for b in cfg)  # Prompt, ControlNet, Walk, inspector
    steps = [b for b in blocks if isinstance(b, gr.Slider) and b.label == "Steps"]
    assert steps and all(b.maximum == settings.max_steps for b in steps)
    dropdowns = [b for b in blocks if isinstance(b, gr.Dropdown) and b.label.startswith("Scheduler")]
    assert all([c[0] for c in b.choices] == schedulers.NAMES for b in dropdowns)
    modes = next(b for b in blocks if isinstance(b, gr.Radio) and b.label == "Control map")
    assert [c[0] for c in modes.choices] == [p.label for p in preprocessors.PREPROCESSORS.values()]
    nets = next(b for b in blocks if isinstance(b, gr.Radio) and b.label == "ControlNet")
    assert [c[0] for c in nets.choices] == list(CONTROLNETS)
    low = next(b for b in blocks if isinstance(b, gr.Slider) and b.label == "Canny low threshold")
    assert (low.minimum, low.maximum, low.value) == (0, 255, 100)


def test_noise_plot_has_a_legend_naming_each_series_it_draws(app):
    demo, _ = app
    plot = next(b for b in demo.blocks.values() if isinstance(b, gr.LinePlot) and b.label == "Noise level over the steps")
    legend = next(b for b in demo.blocks.values() if isinstance(b, gr.HTML) and "noise-legend" in str(b.value))
    drawn = set(inspector_tab.noise_plot(fake_trajectory(), 1)["series"])
    assert drawn == set(plot.color_map) == set(inspector_tab.NOISE_SERIES)
    for name, (colour, _) in inspector_tab.NOISE_SERIES.items():
        assert f"<b>{name}</b>" in legend.value and colour in legend.value


def fake_trajectory():
    return SimpleNamespace(sigmas=[14.6, 3.0, 0.5], flow=False, handoff=2)  # all noise_plot reads of a Trajectory


def test_banner_says_which_model_why_and_what_it_knows():
    text = banner(fake_model(trained=False))
    assert "fake-model on cpu (float32)" in text and "UNTRAINED" in text and "chosen with --model" in text
    knows = banner(fake_model(description="a model of shapes", compiled="inductor"))
    assert "UNTRAINED" not in knows and "It is a model of shapes." in knows and "torch.compile (inductor)" in knows


def test_examples_are_the_models_own_else_general_ones():
    assert examples(fake_model(examples=("a red square",))) == ["a red square"]
    assert examples(fake_model()) == list(SD_EXAMPLES)


def test_control_examples_follow_the_model_not_the_prompt_text():
    offline, general = control_tab.control_examples(True), control_tab.control_examples(False)
    assert [r[:3] for r in offline] == [r[:3] for r in general]  # the same maps, modes and ControlNets
    assert all("background" in r[3] for r in offline) and not any("background" in r[3] for r in general)
    labels = {p.label for p in preprocessors.PREPROCESSORS.values()}
    assert all(Image.open(r[0]) and r[1] in labels and r[2] in CONTROLNETS for r in offline)
    assert sum(r[2] == "openpose" for r in offline) == len(list((ASSETS / "examples").glob("pose-*.png")))


def test_prompt_handler_streams_progress_then_writes_pngs(tmp_path):
    settings = Settings(output_dir=tmp_path)
    seen, previewed = [], threading.Event()

    def generate(req: GenerateRequest, on_progress=None, cancel=None) -> GenerateResult:
        seen.append(req)
        on_progress(Progress(1, 2, Image.new("RGB", (8, 8), "gray")))
        assert previewed.wait(10)  # the handler shows the newest progress only: finish after it was shown
        params = [Params(req.prompt, "", 2, req.scheduler, 7.5, 40 + k, 8, 8, "fake") for k in range(2)]
        images = [Generated(Image.new("RGB", (8, 8), "red"), p) for p in params]
        return GenerateResult(images, GenerateRequest(prompt=req.prompt, seed=40, num_images=2), 2, 0.5)

    with gr.Blocks() as demo:
        prompt_tab.build(generate, lambda req: TokenCount(2, 77, ""), Fields(settings, 128, schedulers.NAMES), settings)
    handler = next(f.fn for f in demo.fns.values() if f.api_name == "generate")
    outputs = handler("a red square", "", 40, 2, 7.5, "DDIM", 8, 8, 2, progress=lambda *a, **k: None)
    assert isinstance(next(outputs)[0], Image.Image)  # the live preview first
    previewed.set()
    path, gallery, text, seed = list(outputs)[-1]
    assert seen == [GenerateRequest("a red square", "", 40, 2, 7.5, "DDIM", 8, 8, 2)]  # raw values, checked later
    assert seed == 40 and "Seed 40" in text and [c for _, c in gallery] == ["seed 40", "seed 41"]
    assert read_png(gallery[1][0]).seed == 41 and str(tmp_path) in path


def test_engine_errors_become_gradio_errors(tmp_path):
    def bad(req, on_progress=None, cancel=None, **options):
        raise InvalidRequest("steps must be an integer from 1 to 50, got 0")

    with gr.Blocks() as demo:
        settings = Settings(output_dir=tmp_path)
        inspector_tab.build(bad, refuse, refuse, refuse, refuse, refuse, Fields(settings, 128, schedulers.NAMES), settings)
    handler = next(f.fn for f in demo.fns.values() if f.api_name == "inspect")
    with pytest.raises(gr.Error, match="steps must be an integer from 1 to 50, got 0"):
        list(handler("x", "", 1, 0, 7.5, "DDIM", 64, 64, "prompt", progress=lambda *a, **k: None))


MODEL_WORK = ["generate", "grid", "preprocess", "control", "inspect", "vae_roundtrip", "attention", "pose", "walk"]


def test_every_event_that_runs_the_model_is_in_the_one_gpu_group(app):
    demo, settings = app
    fns = {f.api_name: f for f in demo.fns.values() if f.api_visibility == "public"}
    for name in MODEL_WORK:  # preprocess runs the pose detector too
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == (GPU, settings.gpu_concurrency), name
    decodes = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_decode"]
    assert len(decodes) == 2 and all(f.concurrency_id == GPU for f in decodes)  # after a run, and after scrubbing
    # a visitor's jobs are counted when they ask to run; a scrub's decode follows a run already let in, never refused
    assert all(fns[name].validator is not None for name in MODEL_WORK) and all(f.validator is None for f in decodes)
    light = ["restore", "draw_pose", "mirror_pose", "anatomy"]  # no model: never queued behind a generation
    assert all(fns[name].concurrency_id != GPU for name in light)


def test_a_bad_png_on_restore_is_named_beside_the_action(tmp_path):
    settings = Settings(output_dir=tmp_path)
    with gr.Blocks() as demo:
        prompt_tab.build(refuse, lambda req: TokenCount(2, 77, ""), Fields(settings, 128, schedulers.NAMES), settings)
    restore = next(f.fn for f in demo.fns.values() if f.api_name == "restore")
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(gr.Error, match="plain.png has no 'parameters' text chunk"):
        restore(str(plain))
    for line in ("Steps: abc, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 8x8", 'Steps: 2, Sampler: "DDIM, Seed: 1'):
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"a red circle\n{line}")
        Image.new("RGB", (8, 8)).save(tmp_path / "odd.png", pnginfo=info)
        with pytest.raises(gr.Error, match="unreadable settings line|no Stable Diffusion settings line"):
            restore(str(tmp_path / "odd.png"))


def test_gradio_cache_is_deleted_by_age_unless_kept():
    assert cache_schedule(Settings(cache_hours=6)) == (1800, 21600)  # every half hour, what is 6 hours old
    assert cache_schedule(Settings(cache_hours=0.25)) == (900, 900)
    assert cache_schedule(Settings(cache_hours=0)) is None
    demo = build_app(fake_engine(fake_model()), Settings(cache_hours=2))
    assert demo.delete_cache == (1800, 7200)


def test_the_token_legend_names_t5_only_for_a_model_with_t5(app):
    demo, _ = app  # a U-Net model: CLIP's tokens alone
    chips = next(b for b in demo.blocks.values() if isinstance(b, gr.HighlightedText))
    assert set(chips.color_map) == {"start / end", "word", "cut off (past 77 tokens)"}
    with gr.Blocks() as sd3:  # an MMDiT's: T5's tokens follow CLIP's
        inspector_tab.attention.section(refuse, gr.State(None), joint=True)
    chips = next(b for b in sd3.blocks.values() if isinstance(b, gr.HighlightedText))
    assert {"T5 token", "T5: cut off (past its window)"} <= set(chips.color_map)


def test_every_cfg_slider_starts_at_the_models_recommended_guidance():
    """A model whose marker names a CFG (the offline U-Net's 3) starts every tab's CFG slider there; a model that
    names none starts at the request's 7.5."""

    def cfgs(model):
        demo = build_app(fake_engine(model), Settings())
        return [b.value for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label.startswith("CFG scale")]

    assert len(cfgs(fake_model())) >= 4 and set(cfgs(fake_model())) == {7.5}  # Prompt, ControlNet, Grid, inspector...
    assert set(cfgs(fake_model(cfg_scale=3.0))) == {3.0}


def test_the_inspector_starts_with_the_models_attention_example():
    """The offline model names a two-object prompt for the inspector (each colour word lighting its own
    object); every other tab starts with its first example, and a model that names none changes nothing."""
    two = "a red circle on the left and a blue square on the right on a white background"

    def prompts(model):
        demo = build_app(fake_engine(model), Settings())
        return [b.value for b in demo.blocks.values() if isinstance(b, gr.Textbox) and b.label == "Prompt"]

    named = prompts(fake_model(examples=("a red square", two), attention_example=two))
    assert named.count(two) == 1 and set(named) == {"a red square", two} and len(named) >= 4
    assert set(prompts(fake_model(examples=("a red square", two)))) == {"a red square"}


def test_a_model_still_learning_says_so_in_the_model_menu():
    """The bundled MMDiT's marker says what it has not learnt yet; its entry in the Model menus and in the Grid's
    "Models (rows)" (both read this label) says so, and a model whose marker says nothing is labelled plainly."""
    import json
    from types import SimpleNamespace

    from playground.settings import BUNDLED_MMDIT
    from playground.ui import model_label

    learning = json.loads((BUNDLED_MMDIT / "playground.json").read_text())["learning"]
    mmdit = SimpleNamespace(name="playground-offline-mmdit", learning=learning)
    unet = SimpleNamespace(name="playground-offline", learning="")
    assert model_label(mmdit, FAMILIES["StableDiffusion3Pipeline"].summary) == \
        "playground-offline-mmdit (MMDiT, rectified flow; still learning its shapes)"
    assert model_label(unet, FAMILIES["StableDiffusionPipeline"].summary) == "playground-offline (U-Net)"


def test_a_restore_says_what_it_set_beside_the_drop_box(app):
    """Restoring from a PNG confirms itself right under the drop box (in view of where the file was dropped), not in
    the run's info at the foot of the other column; the API's outputs stay as they were (14, the message 12th)."""
    demo, _ = app
    restore = next(f for f in demo.fns.values() if f.api_name == "restore")
    assert len(restore.outputs) == 14
    message = restore.outputs[11]
    ids = sorted(demo.blocks)
    drop = next(i for i in ids if isinstance(demo.blocks[i], gr.File) and "restore its settings" in demo.blocks[i].label)
    assert isinstance(message, gr.Markdown) and message._id == ids[ids.index(drop) + 1]


def test_after_stop_the_note_says_the_images_beside_it_are_an_earlier_runs():
    from playground.ui.common import stopped

    note = stopped("Running: DPM++ 2M Karras, step 7 of 25")
    assert note.startswith("**Stopped** at step 7 of 25: nothing was finished or saved")
    assert "from an earlier run" in note
    assert stopped(None) == "**Stopped** before the first step."


def test_a_job_waiting_for_a_place_in_the_batch_says_where_it_stands():
    from playground.schema import Progress
    from playground.ui.common import running, stopped

    waiting = Progress(step=0, total=25, preview=None, label="waiting: 2 jobs ahead, about 6 s")
    assert running(waiting) == "Waiting: 2 jobs ahead, about 6 s"
    assert running(Progress(step=3, total=25, preview=None, label="DDIM")) == "Running: DDIM, step 3 of 25"
    assert stopped(running(waiting)) == "**Stopped** before the first step."
