"""Several models in one process (playground/models.py): each request names its model and runs on it alone, a
recording goes back to the model that made it, a grid's rows can come from several models, and the settings load
each model once."""

from __future__ import annotations

import dataclasses

import gradio as gr
import numpy as np
import pytest

from playground.engine import Engine
from playground.errors import InvalidRequest
from playground.loading import load_model, load_models
from playground.models import Models
from playground.schema import GenerateRequest, GridRequest, InspectRequest, TokenRequest
from playground.settings import parse_args

from conftest import tiny_settings

PROMPT = "a red circle on the left"


@pytest.fixture(scope="module")
def models(tiny_model, tiny_dir, tiny_sd3_dir) -> Models:
    sd3 = load_model(tiny_settings(tiny_sd3_dir))
    # the steps axis compares with a 16-step reference run (200 in the app): the same comparison, 12x fewer steps
    return Models([Engine(tiny_model, tiny_settings(tiny_dir, grid_reference_steps=16)),
                   Engine(sd3, tiny_settings(tiny_sd3_dir, grid_reference_steps=16))])


def picture(result) -> np.ndarray:
    return result.images[0].array


def test_each_request_runs_on_the_model_it_names(models):
    unet, sd3 = models.names
    first = models.generate(GenerateRequest(prompt=PROMPT, seed=3, steps=3))
    assert first.request.model == unet and first.images[0].params.model == unet  # "": the first loaded
    other = models.generate(GenerateRequest(prompt=PROMPT, seed=3, steps=3, scheduler="Flow Euler", model=sd3))
    assert other.request.model == sd3 and other.images[0].params.model == sd3
    assert other.images[0].params.sampler == "Flow Euler"
    # the same request on the first model again: untouched by the other model's run in between
    again = models.generate(GenerateRequest(prompt=PROMPT, seed=3, steps=3, model=unet))
    assert np.array_equal(picture(first), picture(again))
    assert not np.array_equal(picture(first), picture(other))


def test_a_model_not_loaded_is_named_with_the_choices(models):
    with pytest.raises(InvalidRequest, match=r"model must be one of the loaded models .*got 'sdxl'"):
        models.generate(GenerateRequest(prompt=PROMPT, steps=2, model="sdxl"))
    # a scheduler that does not fit the model named is refused by that model's own checks
    with pytest.raises(InvalidRequest, match="Flow Euler"):
        models.generate(GenerateRequest(prompt=PROMPT, steps=2, scheduler="DDIM", model=models.names[1]))


def test_a_grids_models_are_checked_at_the_first_models_door(models):
    """A grid's `models` that is not a list of loaded names is named before any work, whatever it holds."""
    base = GenerateRequest(prompt=PROMPT, steps=2)
    with pytest.raises(InvalidRequest, match=r"models must be a list of loaded models' names, got 'sdxl'"):
        models.grid(GridRequest(base=base, models="sdxl"))
    with pytest.raises(InvalidRequest, match=r"model must be text \(a loaded model's name\), got \{'a': 1\}"):
        models.grid(GridRequest(base=base, models=[{"a": 1}, models.names[0]]))
    with pytest.raises(InvalidRequest, match=r"model must be one of the loaded models .*got 'sdxl'"):
        models.grid_evaluations(GridRequest(base=base, models=[models.names[0], "sdxl"]))


def test_a_recording_goes_back_to_the_model_that_made_it(models):
    sd3 = models.names[1]
    traj = models.inspect(InspectRequest(base=GenerateRequest(prompt=PROMPT, seed=1, steps=3, scheduler="Flow Euler",
                                                             model=sd3)))
    assert traj.request.model == sd3 and traj.flow
    view = models.step_view(traj, 1)
    assert len(view.channels) == 16  # the tiny SD3's latent channels, not the U-Net's 4
    assert models.decode_x0(traj, 2).size == (64, 64)
    assert models.count_tokens(TokenRequest("a red circle", sd3)).t5 is not None
    assert models.count_tokens(TokenRequest("a red circle")).t5 is None


def test_a_grid_takes_rows_from_several_models_from_one_seed(models):
    unet, sd3 = models.names
    req = GridRequest(base=GenerateRequest(prompt=PROMPT, seed=-1, steps=2), schedulers=("DDIM", "Euler", "Flow Euler"),
                      columns="1, 4", models=(unet, sd3))
    calls = models.grid_evaluations(req)
    assert list(calls) == [f"{unet} · DDIM", f"{unet} · Euler", f"{sd3} · Flow Euler"]  # each model, what fits it
    result = models.grid(req)
    assert [row[0].row for row in result.cells] == list(calls)
    seeds = {c.generated.params.seed for row in result.cells for c in row}
    assert len(seeds) == 1 and -1 not in seeds  # one seed resolved once, for every model
    assert {c.generated.params.model for c in result.cells[2]} == {sd3}
    assert result.flow_rows == {f"{sd3} · Flow Euler"} and not result.flow_sigmas
    # a model none of whose ticked schedulers fits it runs its default one
    only_unet_rows = dataclasses.replace(req, schedulers=("DDIM",))
    assert list(models.grid_evaluations(only_unet_rows)) == [f"{unet} · DDIM", f"{sd3} · Flow Euler"]


def test_the_steps_axis_compares_each_model_with_its_own_reference(models, tiny_dir, tiny_sd3_dir):
    unet, sd3 = models.names
    req = GridRequest(base=GenerateRequest(prompt=PROMPT, seed=5, steps=2), schedulers=("DDIM", "Flow Euler"),
                      columns="2", axis="steps", models=(unet, sd3))
    result = models.grid(req)
    for row, model in zip(result.cells, (unet, sd3)):
        alone = models.pick(model).grid(GridRequest(base=dataclasses.replace(req.base, model=model),
                                                    schedulers=(row[0].scheduler,), columns="2", axis="steps"))
        assert row[0].psnr == pytest.approx(alone.cells[0][0].psnr)


def test_the_settings_load_every_model_once(tiny_dir, tiny_sd3_dir):
    settings = parse_args(["--model", str(tiny_dir), "--model", str(tiny_sd3_dir), "--model", str(tiny_dir),
                           "--device", "cpu", "--dtype", "float32"])
    assert settings.model == str(tiny_dir) and settings.more_models == (str(tiny_sd3_dir), str(tiny_dir))
    loaded = load_models(settings)
    assert [m.family.shift for m in loaded] == [False, True]  # the third --model is the first again: loaded once
    assert "loaded once" in loaded[0].reason


def test_every_tab_has_a_model_menu_that_sets_the_requests_model(models):
    from playground.ui import build_app

    demo = build_app(models, tiny_settings("unused", cache_hours=0))
    menus = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
    # Prompt, Walk, inspector, VAE round trip list both; the ControlNet tab lists the models with ControlNets (an
    # offline model: only those in its folder), shown when there is a choice
    both = [b for b in menus if [c[1] for c in b.choices] == models.names]
    assert len(both) >= 4 and all(b.visible for b in both)
    assert all(b.visible == (len(b.choices) > 1) for b in menus)
    rows = next(b for b in demo.blocks.values() if isinstance(b, gr.CheckboxGroup) and b.label.startswith("Models"))
    assert [c[1] for c in rows.choices] == models.names
    for name in ("generate", "grid", "control", "walk", "inspect", "attention", "vae_roundtrip"):
        fn = next(f for f in demo.fns.values() if f.api_name == name)
        assert any(isinstance(b, (gr.Dropdown, gr.CheckboxGroup)) and b.label.startswith("Model") for b in fn.inputs), name


def follow_handlers(demo, menu) -> list:
    return [f for f in demo.fns.values() if (menu._id, "input") in [tuple(t) for t in f.targets]]


def test_the_form_follows_the_model_chosen(models):
    from playground.ui import build_app

    demo = build_app(models, tiny_settings("unused", cache_hours=0))
    menus = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]  # every tab's
    follow = next(f for menu in menus for f in follow_handlers(demo, menu)  # the Prompt tab's: schedulers, shift
                  if any(getattr(o, "label", "").startswith("Scheduler") for o in f.outputs)
                  and any(getattr(o, "label", "").startswith("Flow shift") for o in f.outputs))
    labels = [o.label for o in follow.outputs]
    unet, sd3 = models.names
    native = models.first.native_size
    to_sd3 = dict(zip(labels, follow.fn(sd3, "DPM++ 2M Karras", native, native)))
    assert to_sd3[labels[0]].value == "Flow Euler" and "DDIM" not in to_sd3[labels[0]].choices
    shift = next(label for label in labels if label.startswith("Flow shift"))
    assert to_sd3[shift].visible is True
    back = dict(zip(labels, follow.fn(unet, "Flow Euler", native, native)))
    assert back[labels[0]].value == "DPM++ 2M Karras" and back[shift].visible is False
    assert dict(zip(labels, follow.fn(unet, "DDIM", native, native)))[labels[0]].value == "DDIM"  # it fits: kept
    assert dict(zip(labels, follow.fn(unet, "DDIM", 96, native)))["Width"] == gr.skip()  # the user's own size stays


def test_the_cfg_follows_the_models_recommended_guidance(models):
    """A model whose marker names a CFG (the offline U-Net: 3) sets the slider when chosen; a CFG the user set
    stays."""
    from playground.ui import build_app

    own = Models([Engine(dataclasses.replace(models.first.model, cfg_scale=3.0), models.first.settings),
                  models.engines[models.names[1]]])
    demo = build_app(own, tiny_settings("unused", cache_hours=0))
    cfg = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "CFG scale")  # Prompt's
    assert cfg.value == 3.0
    menus = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Model"]
    follow = next(f for menu in menus for f in follow_handlers(demo, menu) if any(o is cfg for o in f.outputs))
    at = [o for o in follow.outputs].index(cfg)
    unet, sd3 = own.names
    native = own.first.native_size
    assert follow.fn(sd3, "DDIM", native, native, 3.0)[at].value == 7.5  # the SD3's default (it names none)
    assert follow.fn(unet, "Flow Euler", native, native, 7.5)[at].value == 3.0
    assert follow.fn(unet, "Flow Euler", native, native, 5.0)[at] == gr.skip()  # the user's own CFG stays


def test_a_form_with_one_setting_to_follow_gets_a_value_not_a_list(models):
    from playground.ui import build_app

    demo = build_app(models, tiny_settings("unused", cache_hours=0))
    single = [f for f in demo.fns.values() if len(f.outputs) == 1 and (getattr(f.outputs[0], "label", "") or "").startswith(
        "Refiner takes over") and f.fn.__name__ == "on_model"]
    assert single  # the inspector's: its refiner slider alone
    update = single[0].fn(models.names[1], models.names[1])
    assert isinstance(update, gr.Slider) and update.visible is False  # gradio read a list as the slider's value


def test_a_png_of_another_model_restores_that_models_form(models, tmp_path):
    from playground.outputs import save_images, Folder
    from playground.ui import build_app

    sd3 = models.names[1]
    made = models.generate(GenerateRequest(prompt=PROMPT, seed=3, steps=2, scheduler="Flow Euler", shift=6.0, model=sd3))
    path = save_images(made.images, Folder(tmp_path))[0][0]
    demo = build_app(models, tiny_settings("unused", cache_hours=0))
    restore = next(f for f in demo.fns.values() if f.api_name == "restore")
    out = restore.fn(path, models.names[0])  # the menu on the U-Net
    scheduler, shift, message, menu = out[5], out[8], out[11], out[12]
    assert menu == sd3 and sd3 in message
    assert scheduler.value == "Flow Euler" and "DDIM" not in scheduler.choices  # the choices come with the value
    assert shift.visible is True and shift.value == 6.0
