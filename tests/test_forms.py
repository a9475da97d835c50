"""Every endpoint's values reach its request under their own names. Each tab is built alone against fake
functions that keep the request they are given; each handler is called by its API parameter names with a value
unlike any default, and every value must arrive in the field of that name. A handler parameter renamed (or a
field left out when its request is built) fails here rather than running with the field's default."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import gradio as gr
import pytest

from playground.preprocessors import PREPROCESSORS
from playground.schema import GenerateRequest, TokenCount
from playground.settings import Settings
from playground.ui import control as control_tab
from playground.ui import grid as grid_tab
from playground.ui import inspector as inspector_tab
from playground.ui import prompt as prompt_tab
from playground.ui import walk as walk_tab
from playground.ui.fields import Fields

pytestmark = pytest.mark.nomodel

FORM = dict(prompt="a red circle", negative_prompt="blurry", seed=11, steps=12, cfg_scale=3.5, scheduler="Euler",
            width=72, height=80)
POSE = dict(detector="openpose", hands=True, face=True)
# each endpoint's parameters in the API's order, each with a value no default has
CALLS = {
    "generate": dict(FORM, num_images=3, shift=2.5, refiner_start=0.25, skip_layer_guidance=1.5, model="m-2",
                     cfg_stop=0.75),
    "grid": dict(prompt="a red circle", negative_prompt="blurry", seed=11, steps=12, schedulers=["DDIM", "Heun"],
                 columns="2, 9", width=72, height=80, axis="steps", cfg_scale=3.5, models=["m-2"]),
    "inspect": dict(FORM, attention_of="the negative prompt", refiner_start=0.25, model="m-2"),
    "attention": dict(FORM, attention_of="the negative prompt", word="red", resolution="8x8", model="m-2"),
    "walk": dict(FORM, between="seeds", to_prompt="a blue square", to_seed=21, frames_count=5, shift=2.5,
                 model="m-2"),
    "preprocess": dict(image="photo.png", mode="Pose JSON", controlnet="openpose", low=10, high=20, resize="pad",
                       width=72, height=80, **POSE, pose="{}"),
    "pose": dict(image="photo.png", resize="pad", width=72, height=80, **POSE),
    "control": dict(image="photo.png", mode="Pose JSON", controlnet="openpose", low=10, high=20, resize="pad",
                    conditioning_scale=0.5, guidance_start=0.1, guidance_end=0.9, **FORM, num_images=3, **POSE,
                    pose="{}", model="m-2"),
}
# Live's private event: the edit's stamp, then the whole form (one image, whatever the Images slider says)
LIVE = dict(stamp=5.0, **FORM, shift=2.5, refiner_start=0.25, skip_layer_guidance=1.5, model="m-2", cfg_stop=0.75)
# where a parameter lands when its request is not a GenerateRequest: the base for the form's fields, else these
WHERE = {"frames_count": "frames", "low": "canny.low", "high": "canny.high", "detector": "openpose.detector",
         "hands": "openpose.hands", "face": "openpose.face", "models": "base.model"}
FORM_FIELDS = {"prompt", "negative_prompt", "seed", "steps", "cfg_scale", "scheduler", "width", "height", "num_images",
               "shift", "refiner_start", "skip_layer_guidance", "model", "cfg_stop"}


class Kept(Exception):
    """Raised by the fakes once they have kept the request: no handler gets as far as its outputs."""


def keeper(kept: list):
    def action(request, *args, **kwargs):
        kept.append(request)
        raise Kept
    return action


@pytest.fixture(scope="module")
def app():
    """The five tabs of the generation form, each built alone against fakes that keep what they are given."""
    kept: list = []
    keep = keeper(kept)
    settings = Settings(max_cfg=12.0, max_steps=40, max_size=256)
    fields = Fields(settings, 128, ["Euler", "DDIM", "Heun", "DPM++ 2M Karras", "Euler a"])
    with gr.Blocks() as demo:
        prompt_tab.build(keep, lambda text, model="": TokenCount(2, 77, ""), fields, settings)
        grid_tab.build(keep, lambda req: {name: 20 for name in req.schedulers}, fields, settings)
        control_tab.build(keep, keep, keep, keep, lambda kind, model="": f"/models/controlnet-{kind}", fields,
                          settings)
        walk_tab.build(keep, fields, settings)
        inspector_tab.build(keep, keep, keep, keep, keep, keep, fields, settings)
    return demo, kept


def handler(demo: gr.Blocks, name: str):
    """The function behind the event called `name` (its API name, or the handler's own for a private event)."""
    found = [f.fn for f in demo.fns.values() if f.api_name == name or getattr(f.fn, "__name__", "") == name]
    assert len(found) == 1, f"{name}: {len(found)} events"
    return found[0]


def parameters(fn) -> list[str]:
    """What the API sends, in order (gradio's progress tracker and request object are not sent)."""
    return [p.name for p in inspect.signature(fn).parameters.values()
            if not isinstance(p.default, gr.Progress) and p.annotation not in (gr.Request, "gr.Request")]


def call(fn, values: dict, kept: list):
    """The request `fn` hands to its action when called with `values` by name."""
    kept.clear()
    try:
        out = fn(**values)
        if inspect.isgenerator(out):
            list(out)
    except (Kept, gr.Error):
        pass
    assert len(kept) == 1, f"the action got {len(kept)} requests"
    return kept[0]


def landed(request, name: str):
    """The value of the request's field that the parameter `name` fills."""
    path = name if isinstance(request, GenerateRequest) else "base." + name if name in FORM_FIELDS else name
    value = request
    for part in WHERE.get(name, path).split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("endpoint", list(CALLS))
def test_every_parameter_reaches_the_field_of_its_name(app, endpoint):
    demo, kept = app
    fn, values = handler(demo, endpoint), CALLS[endpoint]
    assert parameters(fn) == list(values)  # the API's names and order, as clients call them
    request = call(fn, values, kept)
    for name, value in values.items():
        want = value[0] if name == "models" else value  # one model ticked: the grid of that model
        assert landed(request, name) == want, f"/{endpoint}: {name}"


def test_the_pose_endpoint_asks_for_the_openpose_map(app):
    demo, kept = app
    request = call(handler(demo, "pose"), CALLS["pose"], kept)
    assert (request.mode, request.controlnet) == (PREPROCESSORS["openpose"].label, PREPROCESSORS["openpose"].feeds)


def test_several_models_in_the_grid_are_its_rows(app):
    demo, kept = app
    request = call(handler(demo, "grid"), dict(CALLS["grid"], models=["m-1", "m-2"]), kept)
    assert (request.base.model, list(request.models)) == ("", ["m-1", "m-2"])


def test_live_sends_the_whole_form_for_one_image(app):
    demo, kept = app
    fn = handler(demo, "on_live")
    assert parameters(fn) == list(LIVE)
    request = call(fn, dict(LIVE, request=SimpleNamespace(session_hash="visitor")), kept)
    for name, value in LIVE.items():
        if name != "stamp":
            assert getattr(request, name) == value, name
    assert request.num_images == 1
