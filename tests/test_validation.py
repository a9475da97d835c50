"""No model: requests and their validators, with no model. The whole bad-input table runs here, built
into requests exactly as the tabs' handlers build them, so the HTTP matrix only needs one row per
parameter to show that the server passes the same message on."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from playground import preprocessors, schedulers, tokens
from playground.families.sd import layer_grids
from playground.preprocessors import CannyOptions, PoseOptions
from playground.attention.sources import ATTENTION_OF
from playground.errors import InvalidRequest
from playground.limits import Limits
from playground.schema import ControlRequest, GenerateRequest, GridRequest, InspectRequest, PoseRequest
from playground.validation import (
    choice, model_choice, model_choices, validate_attention, validate_control, validate_draw_pose,
    validate_generate, validate_grid, validate_inspect, validate_preprocess,
)
from playground.settings import CONTROLNETS, Settings
from playground.tiny.vocab import build_tokenizer
from playground.ui.control import control_request
from playground.ui.grid import grid_request

from bad_inputs import CASES, POSE_JSON, VALID, case_id

TOKENIZER = build_tokenizer()
UNET_CONFIG = {"down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D")}  # arch.TEST's: 8x8 and 4x4 (mid)
# the limits a tiny model's Engine builds: its native size, VAE factor, tokenizer and attention layers
LIMITS = Limits.of(Settings(max_steps=50, max_size=128, max_images=4, max_grid_cells=6), native_size=64,
                   multiple=8, tokenizer=TOKENIZER, attention_layers=lambda h, w: tokens.resolution_names(
                       layer_grids(UNET_CONFIG, (h // 8, w // 8))))


def inspect_request(p: dict) -> InspectRequest:
    gen = GenerateRequest(**{k: v for k, v in p.items() if k not in ("attention_of", "word", "resolution")})
    return InspectRequest(gen, p["attention_of"], p.get("word", ""), p.get("resolution", "all"))


# endpoint -> (the tab's request builder, the validator its Engine action runs first: the one check it gets)
ENDPOINTS = {
    "/generate": (lambda p: GenerateRequest(**p), validate_generate),
    "/inspect": (inspect_request, validate_inspect),
    "/attention": (inspect_request, validate_attention),
    "/grid": (lambda p: grid_request(**p), validate_grid),
    "/preprocess": (lambda p: control_request(**p), validate_preprocess),
    "/pose": (lambda p: control_request(p["image"], "openpose", "openpose", resize=p["resize"], width=p["width"],
                                        height=p["height"], detector=p["detector"], hands=p["hands"], face=p["face"]),
              validate_preprocess),
    "/draw_pose": (lambda p: p, lambda p, limits: GenerateRequest(
        width=validate_draw_pose(PoseRequest(p["pose"], p["width"], p["height"]), limits).width)),
    "/control": (lambda p: control_request(**p), validate_control),
}


LOADED = ["playground-offline", "playground-offline-mmdit"]  # the models a request may name (playground.models)


def check(endpoint: str, params: dict):
    build, validate = ENDPOINTS[endpoint]
    params = {k: POSE_JSON if v == "POSE" else v for k, v in params.items()}  # the table's stand-in for a pose
    request = build(params)
    # the model a request names is checked first, by playground.models, then that model's Engine validates
    base = request if isinstance(request, GenerateRequest) else getattr(request, "base", None)
    if base is not None:
        model_choice(base.model, LOADED)
    if isinstance(request, GridRequest):
        model_choices(request.models, LOADED)
    return validate(request, LIMITS)


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


def test_request_types_and_validation_import_no_torch():
    code = ("import sys, playground.schema, playground.limits, playground.validation, playground.attention.sources; "
            "print(sorted({'torch', 'diffusers', 'gradio'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_size_and_seed_are_filled_in():
    req = validate_generate(GenerateRequest(prompt=None, seed=-1), LIMITS)
    assert (req.width, req.height, req.prompt) == (64, 64, "") and 0 <= req.seed < 2**32
    assert validate_generate(GenerateRequest(seed=5, width=72.0), LIMITS).width == 72


def test_limits_come_from_settings():
    strict = dataclasses.replace(LIMITS, max_cfg=12.0, max_prompt_chars=10, max_steps=8)
    for change, words in ((dict(cfg_scale=13), "0 to 12"), (dict(prompt="x" * 11), "limit is 10"),
                          (dict(steps=9), "1 to 8")):
        with pytest.raises(InvalidRequest, match=words):
            validate_generate(GenerateRequest(**{"steps": 8, **change}), strict)
    validate_generate(GenerateRequest(cfg_scale=12, prompt="x" * 10, steps=8), strict)


def test_grid_resolves_one_seed_and_merges_repeated_rows():
    req = validate_grid(GridRequest(GenerateRequest(seed=-1), schedulers=("Euler", "DDIM", "Euler"), columns=[1, 7]),
                        LIMITS)
    assert req.schedulers == ("Euler", "DDIM") and req.columns == (1.0, 7.0) and 0 <= req.base.seed < 2**32
    assert validate_grid(GridRequest(columns=3), LIMITS).columns == (3.0,)


def test_grid_steps_axis_takes_whole_step_counts_within_the_limit():
    req = validate_grid(GridRequest(GenerateRequest(seed=1), schedulers=("DDIM",), columns="5, 10-20 (+5)",
                                    axis="Steps"), LIMITS)
    assert req.axis == "steps" and req.columns == (5, 10, 15, 20) and all(isinstance(v, int) for v in req.columns)
    for columns, words in (("5, 60", "steps must be an integer from 1 to 50, got 60"), ("2.5", "got 2.5"),
                           ("", "step counts are empty"), ("5, x", "'x' in step counts")):
        with pytest.raises(InvalidRequest, match=words):
            validate_grid(GridRequest(schedulers=("DDIM",), columns=columns, axis="steps"), LIMITS)


def test_choices_accept_the_key_or_the_label_and_list_both():
    options = {k: p.label for k, p in preprocessors.PREPROCESSORS.items()}
    assert choice("control mode", "canny", options) == choice("control mode", "Canny edges from the photo", options)
    with pytest.raises(InvalidRequest, match="'My image is already the control map' \\('image'\\)"):
        choice("control mode", "edges", options)


def test_preprocessor_registry_carries_its_rules():
    for key, p in preprocessors.PREPROCESSORS.items():
        assert p.label and p.short and (p.feeds is None or p.feeds in CONTROLNETS), key
        for param in p.params:
            if param.choices:
                assert param.default in param.choices, (key, param)
            elif param.flag:
                assert isinstance(param.default, bool), (key, param)
            else:
                assert param.lo <= param.default <= param.hi, (key, param)
    req = validate_preprocess(ControlRequest(image="x.png"), LIMITS)  # defaults from the registry
    assert req.canny == CannyOptions(100, 200) and req.openpose == PoseOptions("auto", False, False)
    assert req.base.width == 64
    pose = validate_preprocess(ControlRequest(image="x.png", mode="openpose", controlnet="openpose",
                                              canny=CannyOptions(low=10), openpose=PoseOptions(hands=1)), LIMITS)
    assert pose.openpose == PoseOptions("auto", True, False) and pose.openpose.hands is True  # 1 read as True
    with pytest.raises(InvalidRequest, match="Canny low threshold must be .* 999"):  # every option is checked
        validate_control(ControlRequest(image="x.png", mode="image", controlnet="openpose",
                                        canny=CannyOptions(low=999)), LIMITS)
    # the thresholds' order matters where Canny runs, and only there
    validate_preprocess(ControlRequest(image="x.png", mode="image", canny=CannyOptions(150, 100)), LIMITS)
    with pytest.raises(InvalidRequest, match="must not be above the high one"):
        validate_preprocess(ControlRequest(image="x.png", canny=CannyOptions(150, 100)), LIMITS)
    # a pose needs no image, but valid OpenPose JSON
    drawn = validate_preprocess(ControlRequest(mode="pose", controlnet="openpose", pose=POSE_JSON), LIMITS)
    assert drawn.pose == POSE_JSON
    with pytest.raises(InvalidRequest, match="pose JSON is not valid JSON"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="openpose", pose="{people"), LIMITS)
    with pytest.raises(InvalidRequest, match="pose JSON is empty"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="openpose"), LIMITS)
    with pytest.raises(InvalidRequest, match="Pose drawings need the openpose ControlNet"):
        validate_preprocess(ControlRequest(mode="pose", controlnet="canny", pose=POSE_JSON), LIMITS)



def test_every_registered_scheduler_is_accepted_and_makes_its_class():
    for name in schedulers.NAMES:
        assert validate_generate(GenerateRequest(scheduler=name), LIMITS).scheduler == name
        made = schedulers.make(name, {"num_train_timesteps": 1000})
        assert type(made).__name__ == schedulers.REGISTRY[name].cls
    assert schedulers.evaluations("Heun", {"num_train_timesteps": 1000}, 5) == 9  # two per step but the last


def test_attention_sources_say_which_row_of_the_batch_they_record():
    cfg, plain = GenerateRequest(cfg_scale=7.5), GenerateRequest(cfg_scale=1.0)
    prompt, negative, off = (ATTENTION_OF[k] for k in ("prompt", "negative", "off"))
    assert (prompt.sample(cfg), prompt.sample(plain), negative.sample(cfg)) == (1, 0, 0)  # [negative, prompt] with CFG
    assert prompt.text(GenerateRequest("a", "b")) == "a" and negative.text(GenerateRequest("a", "b")) == "b"
    assert prompt.records and negative.records and not off.records
    with pytest.raises(InvalidRequest, match="needs a CFG scale other than 1"):
        negative.check(plain)


def test_attention_call_is_checked_whole_before_any_work():
    req = validate_attention(InspectRequest(GenerateRequest("a red circle on a blue background", seed=1, width=64),
                                            "the prompt", " Blue ", None), LIMITS)
    assert req.attention_of == "prompt" and req.word == "Blue" and req.resolution == "all"
    assert req.tokens == tuple(tokens.find_word(tokens.split_prompt(TOKENIZER, req.base.prompt), "blue", TOKENIZER))
    assert validate_attention(InspectRequest(GenerateRequest("a red circle"), "prompt"), LIMITS).tokens == (2,)  # red
    with pytest.raises(InvalidRequest, match="records no maps"):
        validate_attention(InspectRequest(GenerateRequest("a red circle"), "off"), LIMITS)


def test_inspector_records_runs_guided_to_the_end():
    base = GenerateRequest(prompt="a red circle", seed=1, steps=3, cfg_stop=0.5)
    with pytest.raises(InvalidRequest, match="CFG stop 0.5 is for the Prompt and Grid tabs"):
        validate_inspect(InspectRequest(base), LIMITS)
    assert validate_inspect(InspectRequest(dataclasses.replace(base, cfg_stop=1)), LIMITS).base.cfg_stop == 1
