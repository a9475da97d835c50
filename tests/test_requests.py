"""Ring (a): requests and their validators, with no model. The whole bad-input table runs here, built
into requests exactly as the tabs' handlers build them, so the HTTP matrix only needs one row per
parameter to show that the server passes the same message on."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from playground import attention, control, poses, schedulers
from playground.requests import (
    ControlRequest,
    GenerateRequest,
    GridRequest,
    InvalidRequest,
    choice,
    text,
    validate_attention,
    validate_control,
    validate_generate,
    validate_grid,
    validate_preprocess,
)
from playground.settings import CONTROLNETS, Settings
from playground.tiny.vocab import build_tokenizer
from playground.ui.control import control_request
from playground.ui.grid import grid_request

from bad_inputs import CASES, POSE_JSON, VALID, case_id

LIMITS = Settings(max_steps=50, max_size=128, max_images=4, max_grid_cells=6)
NATIVE = 64

TOKENIZER = build_tokenizer()
UNET_CONFIG = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D")}  # arch.TEST's: 8x8 and 4x4 (mid)


def generate_only(p: dict) -> GenerateRequest:
    return GenerateRequest(**{k: v for k, v in p.items() if k not in ("attention_of", "word", "resolution")})


def validate_inspect(p: dict, s, native):
    req = validate_generate(generate_only(p), s, native)
    validate_attention(p["attention_of"], req)
    return req


def validate_attention_call(p: dict, s, native):
    return attention.validate(generate_only(p), p["attention_of"], p["word"], p["resolution"], s, native, 8,
                              TOKENIZER, UNET_CONFIG).request


# endpoint -> (the tab's request builder, the validator its Engine action runs first)
ENDPOINTS = {
    "/generate": (lambda p: GenerateRequest(**p), validate_generate),
    "/inspect": (lambda p: p, validate_inspect),
    "/attention": (lambda p: p, validate_attention_call),
    "/grid": (lambda p: grid_request(**p), validate_grid),
    "/preprocess": (lambda p: control_request(**p), validate_preprocess),
    "/pose": (lambda p: control_request(p["image"], "openpose", "openpose", 100, 200, p["resize"], width=p["width"],
                                        height=p["height"], detector=p["detector"], hands=p["hands"], face=p["face"]),
              validate_preprocess),
    "/draw_pose": (lambda p: p, lambda p, s, native: GenerateRequest(
        width=validate_generate(GenerateRequest(width=p["width"], height=p["height"]), s, native).width,
        prompt=str(poses.from_json(text("pose JSON", p["pose"], s.max_prompt_chars))))),
    "/control": (lambda p: control_request(**p), validate_control),
}


def check(endpoint: str, params: dict):
    build, validate = ENDPOINTS[endpoint]
    params = {k: POSE_JSON if v == "POSE" else v for k, v in params.items()}  # the table's stand-in for a pose
    return validate(build(params), LIMITS, NATIVE)


@pytest.mark.parametrize("endpoint", list(VALID))
def test_every_valid_call_passes(endpoint):
    checked = check(endpoint, VALID[endpoint])
    base = checked if isinstance(checked, GenerateRequest) else checked.base
    no_seed = endpoint in ("/preprocess", "/pose", "/draw_pose")  # a map needs no seed
    assert base.width == 64 and base.seed == (-1 if no_seed else 1)


@pytest.mark.parametrize("endpoint,name,value,words", CASES, ids=[case_id(e, n, v) for e, n, v, _ in CASES])
def test_bad_value_is_named(endpoint, name, value, words):
    with pytest.raises(InvalidRequest) as err:
        check(endpoint, {**VALID[endpoint], name: value})
    for w in words:
        assert w.lower() in str(err.value).lower(), str(err.value)


def test_requests_module_imports_no_torch():
    code = "import sys, playground.requests; print(sorted({'torch', 'diffusers', 'gradio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_size_and_seed_are_filled_in():
    req = validate_generate(GenerateRequest(prompt=None, seed=-1), LIMITS, NATIVE)
    assert (req.width, req.height, req.prompt) == (64, 64, "") and 0 <= req.seed < 2**32
    assert validate_generate(GenerateRequest(seed=5, width=72.0), LIMITS, NATIVE).width == 72


def test_limits_come_from_settings():
    strict = dataclasses.replace(LIMITS, max_cfg=12.0, max_prompt_chars=10, max_steps=8)
    for change, words in ((dict(cfg_scale=13), "0 to 12"), (dict(prompt="x" * 11), "limit is 10"),
                          (dict(steps=9), "1 to 8")):
        with pytest.raises(InvalidRequest, match=words):
            validate_generate(GenerateRequest(**{"steps": 8, **change}), strict, NATIVE)
    validate_generate(GenerateRequest(cfg_scale=12, prompt="x" * 10, steps=8), strict, NATIVE)


def test_grid_resolves_one_seed_and_merges_repeated_rows():
    req = validate_grid(GridRequest(GenerateRequest(seed=-1), schedulers=("Euler", "DDIM", "Euler"), columns=[1, 7]),
                        LIMITS, NATIVE)
    assert req.schedulers == ("Euler", "DDIM") and req.columns == (1.0, 7.0) and 0 <= req.base.seed < 2**32
    assert validate_grid(GridRequest(columns=3), LIMITS, NATIVE).columns == (3.0,)


def test_grid_steps_axis_takes_whole_step_counts_within_the_limit():
    req = validate_grid(GridRequest(GenerateRequest(seed=1), schedulers=("DDIM",), columns="5, 10-20 (+5)",
                                    axis="Steps"), LIMITS, NATIVE)
    assert req.axis == "steps" and req.columns == (5, 10, 15, 20) and all(isinstance(v, int) for v in req.columns)
    for columns, words in (("5, 60", "steps must be an integer from 1 to 50, got 60"), ("2.5", "got 2.5"),
                           ("", "step counts are empty"), ("5, x", "'x' in step counts")):
        with pytest.raises(InvalidRequest, match=words):
            validate_grid(GridRequest(schedulers=("DDIM",), columns=columns, axis="steps"), LIMITS, NATIVE)


def test_choices_accept_the_key_or_the_label_and_list_both():
    options = {k: p.label for k, p in control.PREPROCESSORS.items()}
    assert choice("control mode", "canny", options) == choice("control mode", "Canny edges from the photo", options)
    with pytest.raises(InvalidRequest, match="'My image is already the control map' \\('image'\\)"):
        choice("control mode", "edges", options)


def test_preprocessor_registry_carries_its_rules():
    for key, p in control.PREPROCESSORS.items():
        assert p.label and p.short and (p.feeds is None or p.feeds in CONTROLNETS), key
        for param in p.params:
            if param.choices:
                assert param.default in param.choices, (key, param)
            elif param.flag:
                assert isinstance(param.default, bool), (key, param)
            else:
                assert param.lo <= param.default <= param.hi, (key, param)
    req = validate_preprocess(ControlRequest(image="x.png"), LIMITS, NATIVE)  # defaults from the registry
    assert req.params == {"low": 100, "high": 200} and req.base.width == 64
    pose = validate_preprocess(ControlRequest(image="x.png", mode="openpose", controlnet="openpose",
                                              params={"low": 10, "hands": 1}), LIMITS, NATIVE)
    assert pose.params == {"detector": "auto", "hands": True, "face": False}  # its own, with defaults
    ready = validate_control(ControlRequest(image="x.png", mode="image", controlnet="openpose", params={"low": 50}),
                             LIMITS, NATIVE)
    assert ready.params == {}  # a ready map takes no parameters: others' are checked, not kept
    with pytest.raises(InvalidRequest, match="Canny low threshold must be .* 999"):
        validate_control(ControlRequest(image="x.png", mode="image", controlnet="openpose", params={"low": 999}),
                         LIMITS, NATIVE)
    # a pose needs no image, but valid OpenPose JSON
    drawn = validate_preprocess(ControlRequest(mode="pose", controlnet="openpose", pose=POSE_JSON), LIMITS, NATIVE)
    assert drawn.pose == POSE_JSON and drawn.params == {}
    with pytest.raises(InvalidRequest, match="pose JSON is not valid JSON"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="openpose", pose="{people"), LIMITS, NATIVE)
    with pytest.raises(InvalidRequest, match="pose JSON is empty"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="openpose"), LIMITS, NATIVE)
    with pytest.raises(InvalidRequest, match="Pose drawings need the openpose ControlNet"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="canny", pose=POSE_JSON), LIMITS, NATIVE)



def test_every_registered_scheduler_is_accepted_and_makes_its_class():
    for name in schedulers.NAMES:
        assert validate_generate(GenerateRequest(scheduler=name), LIMITS, NATIVE).scheduler == name
        made = schedulers.make(name, {"num_train_timesteps": 1000})
        assert type(made).__name__ == schedulers.REGISTRY[name].cls
    assert schedulers.evaluations("Heun", {"num_train_timesteps": 1000}, 5) == 9  # two per step but the last
