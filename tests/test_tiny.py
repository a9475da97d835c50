"""The offline model's world, its analyser, the training script end to end, and the shipped weights."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections import Counter
from pathlib import Path

import cv2
import random

import numpy as np
import pytest
import torch
from PIL import Image

from playground import settings as settings_mod
from playground.engine import Engine
from playground.schema import ControlRequest, GenerateRequest
from playground.loading import load_model
from playground.preprocessors import canny
from playground.tiny import analyse, evaluate, export, stages, toolkit, train, world
from playground.tiny.arch import OFFLINE, SD15_SCHEDULER, Arch, rescaled_betas, scheduler_config
from playground.tiny.vocab import build_tokenizer


# ---------------------------------------------------------------- the world

def test_scenes_are_reproducible_from_their_seed():
    a, b, c = world.sample(42), world.sample(42), world.sample(43)
    assert a.caption == b.caption and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (world.SIZE, world.SIZE)
    assert (a.caption, np.asarray(a.image).tobytes()) != (c.caption, np.asarray(c.image).tobytes())


def test_captions_say_what_is_drawn():
    """For one-shape scenes the analyser (checked on ground truth below) reads the caption's words back."""
    checked = 0
    for seed in range(300):
        scene = world.sample(seed, "shape")
        words = scene.caption.replace(",", " ").replace(":", " ").split()
        colour = next(w for w in words if w in world.COLOURS)
        shape = next(w for w in words if w in world.SHAPES)
        background = words[words.index("background") - 1]
        found = analyse.analyse(scene.image)
        assert found.background == background, scene.caption
        assert found.objects[0].colour == colour, scene.caption
        checked += found.objects[0].shape == shape
    assert checked >= 294  # the analyser's shape accuracy is >= 98%


def test_people_scenes_carry_their_keypoints_and_pose_word():
    for seed in range(20):
        scene = world.sample(seed, "person")
        assert scene.keypoints.shape == (18, 2)
        assert any(p in scene.caption for p in world.POSES)
        figure, _ = analyse.foreground_mask(np.asarray(scene.image))
        ys, xs = np.nonzero(figure)
        # the drawn figure spans its keypoints: head to ankles, wrist to wrist
        assert ys.min() <= scene.keypoints[:, 1].min() + 2 and ys.max() >= scene.keypoints[:, 1].max() - 2


def test_training_never_sees_an_evaluation_prompt():
    prompts = world.evaluation_prompts(240)
    assert len(prompts) == 240 and len({p["prompt"] for p in prompts}) == 240
    assert all(world.held_out(p["prompt"]) for p in prompts)
    scenes = [world.sample(seed) for seed in range(3000)]
    captions = {s.caption for s in scenes} | {s.canonical for s in scenes if s.canonical}
    assert not captions & {p["prompt"] for p in prompts}
    assert not captions & {p["prompt"] for p in world.two_shape_prompts(60)}
    assert not any(world.held_out(c) for c in captions)
    # a caption that says what an evaluation prompt says in other words is held out with it
    rng = random.Random(3)
    for p in prompts[:20]:
        caption = world.shape_caption(rng, p["colour"], p["shape"], p["background"], p["size"], p["place"])
        assert world.held_out(world.one_shape_caption(**{k: p[k] for k in ("size", "colour", "shape", "place",
                                                                              "background")}))
        assert all(w in caption for w in (p["colour"], p["shape"], p["place"], p["background"]))


def test_the_training_mix_sets_the_share_of_each_kind_of_scene():
    def kinds(mix):
        scenes = [world.sample(seed, mix=mix) for seed in range(400)]
        return Counter("person" if s.keypoints is not None else "two" if len(s.objects) == 2 else "shape"
                       for s in scenes)

    default = kinds(None)
    assert 0.38 < default["shape"] / 400 < 0.52 and 0.24 < default["two"] / 400 < 0.36
    shifted = kinds(train.mix_shares("0.35,0.5,0.15"))
    assert 0.43 < shifted["two"] / 400 < 0.57 and 0.1 < shifted["person"] / 400 < 0.2
    assert kinds(train.mix_shares("0,1,0")) == {"two": 400}
    with pytest.raises(argparse.ArgumentTypeError, match="'0.5,0.5'"):
        train.mix_shares("0.5,0.5")


def test_the_round_trip_ceiling_finds_each_drawn_object_where_it_was_drawn():
    drawn_again = evaluate.drawn_again
    scenes = [world.sample(seed, "two") for seed in range(30)]
    found = [analyse.analyse(s.image).objects for s in scenes]  # a perfect round trip: the world's own renders
    assert all(drawn_again(f, obj) for f, s in zip(found, scenes) for obj in s.objects)
    colour, shape, cx, cy, side = scenes[0].objects[0]
    assert not drawn_again(found[0], (colour, shape, cx + 40, cy, side))  # somewhere else
    other = next(s for s in world.SHAPES if s != shape)
    assert not drawn_again(found[0], (colour, other, cx, cy, side))  # another shape


def test_captions_put_the_colour_before_and_after_the_shape():
    rng = random.Random(0)
    phrases = [world.object_phrase(rng, "orange", "square", "large") for _ in range(200)]
    before = sum(p.index("orange") < p.index("square") for p in phrases)
    assert 70 <= before <= 130  # both orders, about half each
    assert {p.split()[0] for p in phrases} == {"a"}
    assert {world.object_phrase(random.Random(k), "orange", "ring").split()[0] for k in range(20)} == {"a", "an"}
    two = [world.sample(s, "two") for s in range(300)]
    assert sum(s.caption != s.canonical for s in two) > 100
    assert all(s.caption.count(" and ") == 1 and s.canonical.count(" and ") == 1 for s in two)


def test_pose_map_is_drawn_like_controlnet_aux():
    kp = world.pose_keypoints("in a t-pose", 64, 20, 90)
    pose = np.asarray(world.pose_map(kp))
    assert pose.shape == (128, 128, 3)
    # the neck-to-right-shoulder limb is controlnet_aux's first colour, red dimmed to 60%, on black
    x, y = ((kp[1] + kp[2]) / 2).round().astype(int)
    r, g, b = pose[y, x].astype(int)
    assert r > 100 and g < 60 and b < 60
    assert pose[5, 5].sum() == 0 and pose[y - 20, 5].sum() == 0


def test_canny_map_traces_the_shape_outline():
    scene = world.sample(3, "shape")
    edges = np.asarray(canny(scene.image).convert("L")) > 0
    figure, _ = analyse.foreground_mask(np.asarray(scene.image))
    outline = figure & ~cv2.erode(figure.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    near = analyse._near(edges, 2)
    assert edges.any() and (outline & near).sum() / outline.sum() > 0.9


# ---------------------------------------------------------------- the analyser

def test_analyser_is_right_on_ground_truth():
    accuracy = analyse.accuracy_on_ground_truth(400, seed=5)
    assert min(accuracy.values()) >= 0.98, accuracy


def test_analyser_tells_shapes_apart():
    for shape in world.SHAPES:
        image = world.render_shapes([("blue", shape, 64, 64, 60)], "white")
        assert analyse.analyse(image).objects[0].shape == shape


def test_analyser_reads_place_size_and_pose():
    for place in world.PLACES:
        fx, fy = world.PLACES[place]
        found = analyse.analyse(world.render_shapes([("red", "star", fx * 128, fy * 128, 30)], "black")).objects[0]
        assert (found.place, found.size) == (place, "small")
    big = analyse.analyse(world.render_shapes([("red", "star", 64, 64, 60)], "black")).objects[0]
    assert big.size == "large"
    for pose in world.POSES:
        scene = next(s for k in range(200) if world.caption_pose((s := world.sample(k, "person")).caption) == pose)
        assert analyse.analyse(scene.image).objects[0].pose == pose


def test_evaluation_prompts_are_held_out_and_fully_specified():
    for p in world.two_shape_prompts(20):
        assert world.held_out(p["prompt"]) and len(p["objects"]) == 2
    for p in world.person_prompts(20):
        assert world.held_out(p["prompt"]) and world.caption_pose(p["prompt"]) == p["pose"] and p["place"] in p["prompt"]


def test_edge_f1_and_skeleton_recall_can_fail():
    scene = world.sample(11, "shape")
    edges = np.asarray(canny(scene.image).convert("L"))
    blank = Image.new("RGB", (128, 128), (245, 245, 245))
    assert analyse.edge_f1(edges, scene.image) > 0.95
    assert analyse.edge_f1(edges, blank) == 0.0
    other = world.render_shapes([("red", "square", 30, 30, 30)], "white")  # elsewhere: no overlap
    assert analyse.edge_f1(edges, other) < 0.3

    person = world.sample(12, "person")
    pose = world.pose_map(person.keypoints)
    assert analyse.skeleton_recall(pose, person.image) > 0.9
    assert analyse.skeleton_recall(pose, blank) == 0.0
    assert all(analyse.limbs_drawn(person.keypoints, person.image)) and not any(analyse.limbs_drawn(person.keypoints, blank))
    # a thick silhouette over the skeleton covers every limb, but most of its pixels are off the skeleton
    figure, _ = analyse.foreground_mask(np.asarray(person.image))
    background = np.asarray(person.image)[0, 0]
    blob = np.where(cv2.dilate(figure.astype(np.uint8), np.ones((25, 25), np.uint8))[..., None] > 0, (200, 30, 30),
                    background).astype(np.uint8)
    assert analyse.figure_precision(pose, person.image) > 0.8
    assert analyse.skeleton_recall(pose, Image.fromarray(blob)) > 0.9 and analyse.figure_precision(pose, Image.fromarray(blob)) < 0.5
    moved = person.keypoints.copy()  # a skeleton 40 px above the drawn figure: some of its limbs are not drawn
    moved[:, 1] -= 40
    assert not all(analyse.limbs_drawn(moved, person.image))


# ---------------------------------------------------------------- the noise schedule

def test_rescaled_schedule_ends_in_near_pure_noise():
    from diffusers import DDPMScheduler

    sd = DDPMScheduler.from_config(SD15_SCHEDULER).alphas_cumprod.double()
    ours = torch.cumprod(1 - torch.tensor(rescaled_betas(0.02), dtype=torch.float64), 0)
    assert sd[-1].sqrt() == pytest.approx(0.068, abs=1e-3)  # SD 1.5 leaves 6.8% of the image at its last step
    assert ours[-1].sqrt() == pytest.approx(0.02, rel=1e-6)
    assert ours[0] == pytest.approx(float(sd[0]), rel=1e-6)  # the same first step
    assert bool((ours[1:] < ours[:-1]).all())  # still a noise schedule: every step noisier
    assert bool((ours <= sd + 1e-6).all())  # noisier than SD's everywhere
    assert float(ours[950].sqrt()) < 0.05 < float(sd[950].sqrt())


def test_every_scheduler_samples_the_offline_models_schedule():
    """No scheduler the app offers may fall back to SD's betas for the offline model (PNDM, LMS and Heun
    have no `rescale_betas_zero_snr`: hence `trained_betas`), and every one reads v-prediction."""
    from diffusers import DDPMScheduler

    from playground import schedulers

    config = scheduler_config(OFFLINE)
    expected = DDPMScheduler.from_config(config).alphas_cumprod
    assert OFFLINE.prediction_type == "v_prediction" and expected[-1].sqrt() == pytest.approx(0.02, rel=1e-4)
    for name in schedulers.NAMES:
        s = schedulers.make(name, config)
        assert torch.allclose(s.alphas_cumprod, expected), name
        assert s.config.prediction_type == "v_prediction", name
        s.set_timesteps(25)
        assert int(s.timesteps[0]) == 999, (name, s.timesteps[:2])  # sampling starts from the last step


def test_v_target_is_what_the_schedulers_read():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(scheduler_config(OFFLINE))
    x0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    target, weight = stages.regression(sched, x0, noise, t, (a / (1 - a)).flatten())
    assert torch.allclose(target, a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)
    assert weight[2] == pytest.approx(1.0) and weight[0] < 0.01  # full weight where the layout is decided


def test_noisy_share_draws_that_share_from_the_noisiest_steps():
    gen = torch.Generator().manual_seed(0)
    uniform, half = stages.timesteps(1000, 4000, 0.0, gen), stages.timesteps(1000, 4000, 0.5, gen)
    assert 0.12 < float((uniform >= 850).float().mean()) < 0.18 and int(uniform.min()) < 20
    assert 0.52 < float((half >= 850).float().mean()) < 0.62 and int(half.min()) < 20  # 0.5 + 0.5 * 0.15
    assert int(stages.timesteps(1000, 500, 1.0, gen).min()) >= 850 and int(half.max()) == 999


# ---------------------------------------------------------------- training, export, loading

@pytest.fixture(scope="module")
def small_arch(monkeypatch_module):
    arch = dataclasses.replace(OFFLINE, vae_channels=(8, 8, 16, 16), unet_channels=(16, 32, 32), text_width=32,
                               text_layers=1, text_heads=2)  # the shipped model's schedule, small
    monkeypatch_module.setattr(stages, "ARCH", arch)
    return arch


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_arch) -> Path:
    """Every stage of the small model trained for 2 steps of 2, in order (each reads the ones before)."""
    run = tmp_path_factory.mktemp("run")
    for stage in ("vae", "unet", "canny", "openpose"):
        train.main([stage, "--ckpt-dir", str(run), "--steps", "2", "--batch", "2"])
    return run


@pytest.fixture(scope="module")
def exported(run) -> Path:
    out = run / "model"
    train.main(["export", str(out), "--ckpt-dir", str(run)])
    return out


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=False)["step"]


@pytest.mark.slow
def test_each_stage_saves_its_step_and_a_later_chunk_resumes_there(run, tmp_path):
    assert {stage: step_of(run / f"{stage}.pt") for stage in ("vae", "unet", "canny", "openpose")} == {
        "vae": 2, "unet": 2, "canny": 2, "openpose": 2}
    for stage in ("vae", "unet"):  # a copy, so the module's run stays as the export reads it
        (tmp_path / f"{stage}.pt").write_bytes((run / f"{stage}.pt").read_bytes())
    trained = torch.load(run / "unet.pt", weights_only=False)
    # a step too small to move anything: the chunk's weights are the ones it started from
    train.main(["unet", "--ckpt-dir", str(tmp_path), "--steps", "1", "--batch", "2", "--lr", "1e-12"])
    state = torch.load(tmp_path / "unet.pt", weights_only=False)
    assert state["step"] == 3 and state["scale"] == trained["scale"]  # the latent scale is measured once
    assert int(state["opt"]["state"][0]["step"]) == 3  # the optimiser's moments resumed too
    assert all(torch.allclose(state[part][k], w, atol=1e-6) for part in ("unet", "text")
               for k, w in trained[part].items())


@pytest.mark.slow
def test_the_unets_denoising_loss_falls_as_it_trains(run, tmp_path):
    """The v-prediction loss on 8 fixed scenes, fixed noise and timesteps, before and after 40 steps."""
    (tmp_path / "vae.pt").write_bytes((run / "vae.pt").read_bytes())
    train.main(["unet", "--ckpt-dir", str(tmp_path), "--steps", "0"])  # the starting weights, saved
    from diffusers import DDPMScheduler

    tokenizer, vae = build_tokenizer(), stages.load_vae(tmp_path, "cpu")
    scenes = toolkit.batch("unet", 10**6, 8, "shape")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x0 = vae.encode(toolkit.to_tensor(s.image for s in scenes)).latent_dist.mean
    noise, t = torch.randn(x0.shape, generator=gen), torch.linspace(100, 900, 8).long()

    def loss() -> float:
        state = torch.load(tmp_path / "unet.pt", weights_only=False)
        unet, text = stages.new_unet(), stages.new_text_encoder(tokenizer)
        unet.load_state_dict(state["unet"]), text.load_state_dict(state["text"])
        sched = DDPMScheduler.from_config(scheduler_config(stages.ARCH))
        a = sched.alphas_cumprod[t]
        latents = x0 * state["scale"]
        with torch.no_grad():
            pred = unet(sched.add_noise(latents, noise, t), t,
                        stages.encode_captions(tokenizer, text, [s.caption for s in scenes], "cpu")).sample
        target, weight = stages.regression(sched, latents, noise, t, a / (1 - a))
        return float((weight * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean())

    before = loss()
    train.main(["unet", "--ckpt-dir", str(tmp_path), "--steps", "40", "--batch", "4", "--lr", "3e-3"])
    assert loss() < 0.7 * before


@pytest.mark.slow
def test_the_export_is_a_safetensors_diffusers_folder_the_app_loads(run, exported):
    assert (exported / "controlnet-canny").is_dir() and (exported / "controlnet-openpose").is_dir()
    assert all(f.suffix != ".bin" for f in exported.rglob("*"))  # safetensors only
    settings = settings_mod.Settings(model=str(exported), device="cpu", safety_checker=False)
    model = load_model(settings)
    assert model.trained and model.name == "playground-offline" and model.native_size == 128
    assert model.attention_example == export.ATTENTION_EXAMPLE and export.ATTENTION_EXAMPLE in model.examples
    assert model.cfg_scale == export.CFG_SCALE  # the forms start at the guidance the model was measured best at
    state = torch.load(run / "unet.pt", weights_only=False)
    assert model.pipe.vae.config.scaling_factor == pytest.approx(state["scale"], rel=1e-3)
    # the EMA weights, in fp16
    name, weight = next(iter(state["ema_unet"].items()))
    assert torch.equal(model.pipe.unet.state_dict()[name].cpu().float(), weight.half().float())


@pytest.mark.slow
def test_the_exported_model_draws_and_follows_a_control_map(exported):
    settings = settings_mod.Settings(model=str(exported), device="cpu", safety_checker=False)
    engine = Engine(load_model(settings), settings)
    image = engine.generate(GenerateRequest(prompt="a red circle", seed=1, steps=2, scheduler="DDIM")).images[0]
    assert image.image.size == (128, 128)
    controlled = engine.control(ControlRequest(image=canny(world.sample(1).image), mode="image", base=GenerateRequest(
        prompt="a red circle", seed=1, steps=2))).images[0]
    assert controlled.image.size == (128, 128)


@pytest.mark.slow
def test_an_export_imports_back_into_checkpoints_a_later_run_trains_on(exported, tmp_path):
    train.main(["import", str(exported), "--ckpt-dir", str(tmp_path)])
    state = torch.load(tmp_path / "unet.pt", weights_only=False)
    assert state["step"] == 2 and "opt" not in state and step_of(tmp_path / "canny.pt") == 2
    train.main(["unet", "--ckpt-dir", str(tmp_path), "--steps", "1", "--batch", "2", "--ground", "0.1",
                "--agree", "2"])  # with the grounding and agreement losses
    assert step_of(tmp_path / "unet.pt") == 3


@pytest.fixture(scope="module")
def evaluated(exported) -> dict:
    return evaluate.evaluate(str(exported), n_prompts=2, n_control=1, n_two=2, n_people=2, n_focus=2, n_round_trip=2)


@pytest.mark.slow
def test_the_evaluation_scores_each_prompt_once_and_both_only_where_each_is_right(evaluated):
    for cfg in ("cfg7.5", "cfg1.0", "cfg0.0", "cfg_own"):  # shares of the 2 prompts
        scores = evaluated[cfg]
        assert all(scores[k] * 2 in (0, 1, 2) for k in ("colour", "shape", "both", "place", "background", "size"))
        assert scores["both"] <= min(scores["colour"], scores["shape"])
    assert evaluated["round_trip_one"] * 2 in (0, 1, 2) and evaluated["round_trip_two"] * 2 in (0, 1, 2)
    assert evaluated["analyser"]["shape"] >= 0.98
    assert evaluated["guidance_from_0"] == evaluated["cfg7.5"]["both"] - evaluated["cfg0.0"]["both"]
    assert evaluated["own_cfg"] == export.CFG_SCALE  # the scale the app starts this model at, its marker's


@pytest.mark.slow
def test_the_report_names_every_target_and_each_figure_in_its_row(evaluated):
    text = evaluate.report(evaluated)
    # every goal once, the guidance one twice: beside both guidance metrics
    assert text.count(" | >= ") == len(evaluate.TARGETS) + 1 and "CFG gap" in text and "n/a" not in text
    from_0 = next(line for line in text.splitlines() if "CFG 7.5 minus CFG 0" in line)
    assert from_0.split("|")[2].strip().startswith(f"{100 * evaluated['guidance_from_0']:.1f}%")
    assert f"at the model's own CFG {export.CFG_SCALE:g}: two shapes both right" in text
    stop_row = next(line for line in text.splitlines() if "CFG 7.5 stopping at 0.6" in line)
    assert stop_row.split("|")[2].strip() == f"{100 * evaluated['two_both_stop']:.1f}%"


@pytest.mark.slow
def test_the_report_puts_each_model_in_a_column(evaluated):
    text = evaluate.report(evaluated)
    two = evaluate.report(evaluated, {**evaluated, "model": "other"})
    verdicts = lambda t: len(re.findall(r"\b(?:met|NOT MET)\b", t))  # noqa: E731
    assert f"| {Path(evaluated['model']).name} | other | target |" in two and verdicts(two) == 2 * verdicts(text) > 0
    mixed = evaluate.report(evaluated, {**evaluated, "model": "none", "own_cfg": None})  # a model naming no scale
    own_row = next(line for line in mixed.splitlines() if "own CFG" in line and "shape right" in line)
    assert own_row.split(" | ")[2] == "n/a" and len(mixed.splitlines()) == len(text.splitlines()) + 1


@pytest.mark.slow
def test_the_evaluation_runs_its_parts_alone(exported):
    alone = evaluate.evaluate(str(exported), n_prompts=1, n_control=0, n_two=0, n_people=0, n_analyser=0, n_focus=1,
                              n_round_trip=0)  # one part alone: the word maps without two-shape prompts
    assert alone["focus_colour"] in (0, 1) and alone["two_focus_colour"] is None and alone["two_both"] is None
    quick = evaluate.evaluate(str(exported), n_prompts=1, n_control=0, n_two=1, n_people=0, n_analyser=0, n_focus=0,
                              n_round_trip=0, low_cfg=False)  # CFG 7.5 alone, to compare training runs
    assert quick["cfg7.5"]["colour"] in (0, 1) and quick["two_both"] in (0, 1)
    assert quick["cfg1.0"] is None and quick["two_both_cfg1"] is None and quick["guidance"] is None
    assert "CFG gap (colour at 7.5 minus at 1.0) | n/a" in evaluate.report(quick)


class Drawer:
    """An engine stand-in that draws the world's own picture of what a prompt asks for (through `change`)."""

    def __init__(self, drawings: dict[str, tuple[list, str]], change=lambda objects: objects):
        self.drawings, self.change = drawings, change
        self.model = argparse.Namespace(family=argparse.Namespace(schedulers="flow"))

    def generate(self, req: GenerateRequest):
        objects, background = self.drawings[req.prompt]
        image = world.render_shapes(self.change(objects), background)
        return argparse.Namespace(images=[argparse.Namespace(image=image)])


def at(place: str, side: float) -> tuple[float, float, float]:
    fx, fy = world.PLACES[place]
    return fx * world.SIZE, fy * world.SIZE, side


def test_the_evaluation_scores_a_right_picture_right_and_a_wrong_shape_wrong():
    prompts = world.evaluation_prompts(24)
    drawings = {p["prompt"]: ([(p["colour"], p["shape"], *at(p["place"], sum(world.SIZES[p["size"]]) / 2))],
                              p["background"]) for p in prompts}
    right = evaluate.score_prompts(Drawer(drawings), prompts, 7.5)
    assert min(right.values()) >= 0.9, right  # the analyser reads the world's own pictures (>= 98% on them)
    circles = evaluate.score_prompts(Drawer(drawings, lambda objs: [(c, "circle", *rest) for c, _, *rest in objs]),
                                     prompts, 7.5)
    asked = sum(p["shape"] == "circle" for p in prompts) / len(prompts)
    assert circles["shape"] <= asked + 0.05 and circles["both"] <= circles["shape"] and circles["colour"] >= 0.9


def test_two_shapes_are_both_right_only_with_each_on_its_own_side():
    prompts = world.two_shape_prompts(12)
    drawings = {p["prompt"]: ([(c, s, *at(place, 40)) for c, s, place in p["objects"]], p["background"])
                for p in prompts}
    assert evaluate.score_two_shapes(Drawer(drawings), prompts) >= 0.9
    swapped = lambda objs: [(a[0], a[1], *b[2:]) for a, b in zip(objs, objs[::-1])]  # noqa: E731 (sides swapped)
    assert evaluate.score_two_shapes(Drawer(drawings, swapped), prompts) == 0
    one = lambda objs: objs[:1]  # noqa: E731 (the second object left out)
    assert evaluate.score_two_shapes(Drawer(drawings, one), prompts) == 0


def test_a_word_lands_on_its_object_only_where_its_map_points_there():
    square = analyse.Found(colour="red", shape="square", area=900, bbox=(8, 8, 30, 30), iou=1.0)  # top left
    heat = np.full((16, 16), 0.1)
    heat[1:5, 1:5] = 1.0  # on the square (16x16 latents of a 128 px image: 8 px a cell)
    assert evaluate.lands_on(heat, square)
    assert not evaluate.lands_on(heat[::-1, ::-1].copy(), square)  # bottom right
    everything_else = np.ones((16, 16))
    everything_else[1:5, 1:5] = 0.0  # the background lit, the object dark: "red" as it was
    assert not evaluate.lands_on(everything_else, square)
    assert not evaluate.lands_on(heat, None)  # no object drawn: a miss


# ---------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def shipped() -> Engine:
    settings = dataclasses.replace(settings_mod.Settings(model="bundled", device="cpu"), safety_checker=False)
    return Engine(load_model(settings), settings)


@pytest.mark.slow
def test_shipped_model_is_the_trained_one_within_size(shipped):
    assert shipped.model.trained and shipped.model.name == "playground-offline"
    assert shipped.native_size == 128
    size = sum(f.stat().st_size for f in settings_mod.BUNDLED_MODEL.rglob("*") if f.is_file())
    assert size <= 60e6
    tensors = [f for f in settings_mod.BUNDLED_MODEL.rglob("*.safetensors")]
    assert len(tensors) == 5  # VAE, text encoder, UNet, two ControlNets


@pytest.mark.slow
def test_shipped_decoder_draws_back_what_the_world_drew(shipped):
    """The decoder is the ceiling of what the model can draw; the one shipped before drew both objects of
    these two-shape scenes back in 45% of them, and 87.5% of the one-shape ones (stars came back round, yellow
    came back orange)."""
    found = evaluate.score_round_trip(shipped, 40)
    assert found["shape"] >= 0.9 and found["two"] >= 0.7, found
    # the MMDiT model decodes with the same VAE
    mmdit_vae = settings_mod.BUNDLED_MMDIT / "vae" / "diffusion_pytorch_model.safetensors"
    assert mmdit_vae.read_bytes() == (settings_mod.BUNDLED_MODEL / "vae" / mmdit_vae.name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("colour,shape,background", [
    ("red", "circle", "white"), ("blue", "square", "black"), ("yellow", "star", "gray"), ("green", "triangle", "white"),
])
def test_shipped_model_draws_the_colour_asked_for(shipped, colour, shape, background):
    prompt = f"a large {colour} {shape} in the center on a {background} background"
    image = shipped.generate(GenerateRequest(prompt=prompt, seed=0, steps=25, scheduler="DDIM")).images[0].image
    found = analyse.analyse(image)
    assert found.objects and found.objects[0].colour == colour, (prompt, found.objects[:1])
