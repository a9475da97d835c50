"""Every request's validation: value checks and one validator per request type; plain data, no torch.

Every validator takes a raw request (values straight from the UI or the API) and one `Limits` value
(built once from the settings and the loaded model), checks each value, and returns a checked copy
with the size filled in and the seed resolved, or raises `InvalidRequest`: a ValueError whose message
names the bad value and what is accepted. Each request is validated once, at the door of its Engine action
(`playground.actions`). Nothing here touches a model, so all of it runs in the fast tests.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import replace

from playground import poses, preprocessors, schedulers, tokens
from playground.attention.sources import ATTENTION_OF
from playground.axes import AXES, parse_scales
from playground.errors import InvalidRequest
from playground.limits import Limits
from playground.schema import (
    MAX_WALK_FRAMES, WALKS, ControlRequest, GenerateRequest, GridRequest, InspectRequest, PoseRequest,
    RoundTripRequest, TokenRequest, WalkRequest,
)
from playground.settings import CONTROLNETS
from playground.weights import plain

MAX_SEED = 2**32 - 1  # seeds are uint32, as torch.Generator.manual_seed and A1111 take them


# ---------------------------------------------------------------- value checks

def integer(name: str, value, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi] (a whole float like 3.0 is accepted), else InvalidRequest."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value, ok = int(value), True
    if not ok or not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def number(name: str, value, lo: float, hi: float) -> float:
    """`value` as a finite float in [lo, hi], else InvalidRequest."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def text(name: str, value, limit: int) -> str:
    """A prompt: None means empty; anything but a string, or over `limit` characters, is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {limit}")
    return value


def check_param(p: "preprocessors.Param", value):
    """A preprocessor parameter's value, checked by its kind: a choice, a flag, or a number in range."""
    if p.choices:
        return choice(p.label, value, {c: c for c in p.choices})
    if p.flag:
        return flag(p.label, value)
    return (integer if p.integer else number)(p.label, value, p.lo, p.hi)


def flag(name: str, value) -> bool:
    """On or off: True / False (1 / 0 accepted), else InvalidRequest."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidRequest(f"{name} must be true or false, got {value!r}")


def choice(name: str, value, options: dict[str, str]) -> str:
    """The key that `value` names in `options` (key -> label; either is accepted), else InvalidRequest."""
    if isinstance(value, str):
        if value in options:
            return value
        for key, label in options.items():
            if value == label:
                return key
    accepted = ", ".join(repr(k) if k == label else f"{label!r} ({k!r})" for k, label in options.items())
    raise InvalidRequest(f"unknown {name} {value!r}; choose one of: {accepted}")


def model_choice(value, loaded: list[str]) -> str:
    """A request's `model`: "" (the first loaded) or a loaded model's name, else InvalidRequest naming the choices."""
    if not isinstance(value, str):
        raise InvalidRequest(f"model must be text (a loaded model's name), got {value!r}")
    if value and value not in loaded:
        raise InvalidRequest(f"model must be one of the loaded models ({', '.join(map(repr, loaded))}), got {value!r}")
    return value


def model_choices(values, loaded: list[str]) -> tuple[str, ...]:
    """A grid's `models`: a list of loaded models' names (empty: the base's model)."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise InvalidRequest(f"models must be a list of loaded models' names, got {values!r}")
    return tuple(model_choice(v, loaded) for v in values)


def own_model(value, limits: Limits) -> str:
    """A request's `model` at its model's door: "" or this model's name (among the loaded ones, else the choices are
    named); the checked request names this model, so that its result says which model made it."""
    value = model_choice(value, list(limits.models or (limits.model,)))
    if value and value != limits.model:
        raise InvalidRequest(f"model {value!r} is loaded, but this request reached {limits.model!r}")
    return limits.model


def resolve_seed(seed: int) -> int:
    """-1 -> a random seed; any other (checked) seed as it is."""
    return secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed


# ---------------------------------------------------------------- validators

def validate_generate(req: GenerateRequest, limits: Limits) -> GenerateRequest:
    """A checked copy of `req`: size filled in (a multiple of the VAE's factor), seed resolved."""
    width, height = validate_size(req.width, req.height, limits)
    return replace(
        req,
        model=own_model(req.model, limits),
        prompt=text("prompt", req.prompt, limits.max_prompt_chars),
        negative_prompt=text("negative prompt", req.negative_prompt, limits.max_prompt_chars),
        seed=resolve_seed(integer("seed", req.seed, -1, MAX_SEED)),
        steps=integer("steps", req.steps, 1, limits.max_steps),
        cfg_scale=number("CFG scale", req.cfg_scale, 0.0, limits.max_cfg),
        cfg_stop=number("CFG stop", req.cfg_stop, 0.0, 1.0),
        scheduler=scheduler(req.scheduler, limits),
        width=width,
        height=height,
        num_images=integer("number of images", req.num_images, 1, limits.max_images),
        shift=shift(req.shift, limits),
        refiner_start=refiner_start(req.refiner_start, limits),
        **skip_layer_guidance(req.skip_layer_guidance, limits, req.cfg_scale),
    )


def skip_layer_guidance(value, limits: Limits, cfg_scale=7.5) -> dict:
    """SD3.5's skip-layer guidance scale, 0 (off) to 10, and the blocks it skips (SLG_LAYERS, checked against the
    model's MMDiT): the request's two fields. It works on the guided output, so it needs CFG."""
    value = number("skip-layer guidance", value, 0.0, 10.0)
    if not value:
        return {"skip_layer_guidance": 0.0, "skip_layers": ()}
    if isinstance(cfg_scale, (int, float)) and cfg_scale == 1:
        raise InvalidRequest(f"skip-layer guidance {value:g} works with classifier-free guidance, and CFG scale 1 "
                             "has none: raise the CFG scale, or leave it at 0")
    if not limits.blocks:
        raise InvalidRequest(f"skip-layer guidance {value:g} skips blocks of an MMDiT (SD3); this model "
                             f"({limits.family}) has none: leave it at 0")
    bad = [k for k in limits.skip_layers if not 0 <= k < limits.blocks]
    if bad or not limits.skip_layers:
        raise InvalidRequest(f"skip-layer guidance skips blocks {list(limits.skip_layers)} (SLG_LAYERS), but this "
                             f"MMDiT has blocks 0 to {limits.blocks - 1}; set SLG_LAYERS, or leave it at 0")
    return {"skip_layer_guidance": value, "skip_layers": limits.skip_layers}


def refiner_start(value, limits: Limits) -> float:
    """Where SDXL's refiner takes over: 0 (no refiner) or a fraction from 0.05 to 0.95, with a refiner loaded."""
    value = number("refiner start", value, 0.0, 0.95)
    if value and not limits.refiner:
        raise InvalidRequest(f"refiner start {value:g} needs an SDXL refiner loaded beside the base (start the app "
                             "with --refiner HUB_ID or DIR); leave it at 0")
    if 0 < value < 0.05:
        raise InvalidRequest(f"refiner start {value:g} is too small: 0 (no refiner) or from 0.05 to 0.95")
    return value


def scheduler(name, limits: Limits) -> str:
    """A scheduler that fits the model; a registered one that does not is refused by name, with those that fit."""
    fits = limits.schedulers
    if isinstance(name, str) and name in schedulers.REGISTRY and name not in fits:
        kind = {"flow": "a flow-matching", "noise": "a noise-prediction"}[limits.scheduler_kind]
        raise InvalidRequest(f"scheduler {name!r} does not fit this model ({limits.family}, {kind} model); "
                             f"choose one of: {', '.join(map(repr, fits))}")
    return choice("scheduler", name, {n: n for n in fits})


def shift(value, limits: Limits) -> float:
    """A flow scheduler's shift, 0 (the model's own) or 0.1 to 20; only a flow model takes one."""
    value = number("shift", value, 0.0, 20.0)
    if value and not limits.shift:
        raise InvalidRequest(f"shift {value:g} applies to flow-matching models (SD3); this model "
                             f"({limits.family}) has none: leave it at 0")
    if 0 < value < 0.1:
        raise InvalidRequest(f"shift {value:g} is too small: 0 (the model's own) or from 0.1 to 20")
    return value


def validate_size(width, height, limits: Limits) -> tuple[int, int]:
    """(width, height): 0 or None is the model's native size; each a multiple of the VAE's factor."""
    width = limits.native_size if width in (0, None) else width
    height = limits.native_size if height in (0, None) else height
    width, height = integer("width", width, 64, limits.max_size), integer("height", height, 64, limits.max_size)
    m = limits.multiple
    for name, v in (("width", width), ("height", height)):
        if v % m:
            raise InvalidRequest(f"{name} must be a multiple of {m}, got {v} (try {v - v % m} or {v - v % m + m})")
    return width, height


def validate_inspect(req: InspectRequest | GenerateRequest, limits: Limits) -> InspectRequest:
    """A recorded generation: one image, and whose attention to record (the negative prompt's needs CFG); a
    GenerateRequest is the recording of its prompt's attention."""
    req = InspectRequest(base=req) if isinstance(req, GenerateRequest) else req
    base = validate_generate(replace(req.base, num_images=1), limits)
    if base.skip_layer_guidance:  # its extra pass would be recorded as if it were the prompt's
        raise InvalidRequest("skip-layer guidance is for the Prompt tab; the inspector records runs without it: "
                             "leave it at 0")
    if base.cfg_stop < 1:  # the recording keeps one shape a step, and its CFG views need both halves at every step
        raise InvalidRequest(f"CFG stop {base.cfg_stop:g} is for the Prompt and Grid tabs; the "
                             "inspector records runs guided to the end: leave it at 1")
    of = choice("attention of", req.attention_of, {k: a.label for k, a in ATTENTION_OF.items()})
    ATTENTION_OF[of].check(base)
    return replace(req, base=base, attention_of=of)


def validate_attention(req: InspectRequest, limits: Limits) -> InspectRequest:
    """Every value of an `attention` call, before any work: the recording, whose tokens (not 'off'), the
    word among them ("" = the first word worth a map), the layer choice at this size."""
    req = validate_inspect(req, limits)
    source = ATTENTION_OF[req.attention_of]
    if not source.records:
        raise InvalidRequest("attention of 'off' records no maps; ask for 'prompt' or 'negative'")
    split = tokens.split_prompt(limits.tokenizer, plain(source.text(req.base)))  # the words, not the weights
    word = text("word", req.word, tokens.MAX_WORD_CHARS).strip()
    chosen = tokens.find_word(split, word, limits.tokenizer) if word else [tokens.first_word(split)]
    resolution = tokens.check_resolution(req.resolution, limits.attention_layers(req.base.height, req.base.width))
    return replace(req, word=word, resolution=resolution, tokens=tuple(chosen))


def grid_columns(raw, what: str) -> list:
    """The grid's columns from text ('1, 3, 7.5', '2-12 (+2)'), one number, or a list (checked per cell)."""
    try:
        if raw is None or isinstance(raw, str):
            return parse_scales(raw or "", what=what)
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return [raw]  # one number: one column
        if isinstance(raw, (list, tuple)):
            return list(raw)
        raise ValueError(f"{what} must be text such as '1, 3, 7.5' or a list of numbers, got {raw!r}")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def validate_grid(req: GridRequest, limits: Limits) -> GridRequest:
    """A checked copy of a grid request: every cell passes the Prompt tab's checks; one seed for all."""
    axis_key = choice("grid axis", req.axis, {k: a.label for k, a in AXES.items() if limits.shift or not a.needs_shift})
    axis = AXES[axis_key]
    scales = grid_columns(req.columns, axis.plural)
    names = [req.schedulers] if isinstance(req.schedulers, str) else list(req.schedulers or [])
    names = [n for k, n in enumerate(names) if n not in names[:k]]  # a scheduler picked twice is one row
    if not names:
        raise InvalidRequest("pick at least one scheduler for the grid's rows")
    if not scales:
        raise InvalidRequest(f"give at least one of the {axis.plural} for the grid's columns")
    cells = len(names) * len(scales)
    if cells > limits.max_grid_cells:
        raise InvalidRequest(f"{len(names)} schedulers x {len(scales)} {axis.plural} = {cells} cells; "
                             f"the limit is {limits.max_grid_cells} (MAX_GRID_CELLS)")
    # resolves the seed once (each row's scheduler is checked with its cells)
    base = validate_generate(replace(req.base, num_images=1, scheduler=limits.schedulers[0]), limits)
    values = []
    for name in names:
        for v in scales:  # the Prompt tab's checks, cell by cell, with the cell's own values
            cell = validate_generate(replace(base, scheduler=name, **{axis.field: v}), limits)
            values.append(getattr(cell, axis.field))
    return replace(req, base=base, schedulers=tuple(names), columns=tuple(values[:len(scales)]), axis=axis_key,
                   models=model_choices(req.models, list(limits.models or (limits.model,))))


def check_options(options, params: tuple[preprocessors.Param, ...]):
    """A checked copy of a preprocessor's options dataclass: each field by its Param's kind and range."""
    return replace(options, **{p.name: check_param(p, getattr(options, p.name)) for p in params})


def validate_preprocess(req: ControlRequest, limits: Limits) -> ControlRequest:
    """The map's part of a ControlNet request: an image, the preprocessor and its options, ControlNet, fit, size."""
    mode = choice("control mode", req.mode, {k: p.label for k, p in preprocessors.PREPROCESSORS.items()})
    pre = preprocessors.PREPROCESSORS[mode]
    pose = text("pose JSON", req.pose, limits.max_prompt_chars)
    if pre.needs_image and (req.image is None or req.image == ""):
        raise InvalidRequest("no image given; upload one first")
    if pre.needs_pose:
        poses.from_json(pose)  # names what is wrong with it
    net = choice("ControlNet", req.controlnet, {k: k for k in CONTROLNETS})
    if pre.feeds and net != pre.feeds:
        raise InvalidRequest(f"{pre.short} need the {pre.feeds} ControlNet; pick '{pre.feeds}', or give a ready map")
    # every option is checked whatever the mode: a bad value is never silently kept
    canny = check_options(req.canny, preprocessors.CANNY_PARAMS)
    openpose = check_options(req.openpose, preprocessors.POSE_PARAMS)
    if pre.check is not None:
        pre.check(canny, openpose)
    resize = choice("resize mode", req.resize, {k: k for k in preprocessors.RESIZE_MODES})
    width, height = validate_size(req.base.width, req.base.height, limits)
    return replace(req, mode=mode, controlnet=net, canny=canny, openpose=openpose, resize=resize, pose=pose,
                   base=replace(req.base, width=width, height=height, model=own_model(req.base.model, limits)))


def validate_detect_pose(req: ControlRequest, limits: Limits) -> ControlRequest:
    """A photo to find people in: the map's part of a ControlNet request, with OpenPose's detector and options."""
    return validate_preprocess(replace(req, mode="openpose", controlnet="openpose"), limits)


def validate_control(req: ControlRequest, limits: Limits) -> ControlRequest:
    """A checked copy of a ControlNet request: the generation's settings, the ControlNet's, then the map's."""
    base = validate_generate(req.base, limits)
    if base.refiner_start or base.skip_layer_guidance:
        raise InvalidRequest("a ControlNet run takes neither a refiner start nor skip-layer guidance: leave them at 0")
    scale = number("conditioning scale", req.conditioning_scale, 0.0, 2.0)
    start = number("guidance start", req.guidance_start, 0.0, 1.0)
    end = number("guidance end", req.guidance_end, 0.0, 1.0)
    if start >= end:
        raise InvalidRequest(f"guidance start ({start:g}) must be below guidance end ({end:g})")
    req = validate_preprocess(replace(req, base=base), limits)
    return replace(req, conditioning_scale=scale, guidance_start=start, guidance_end=end)


def validate_walk(req: WalkRequest, limits: Limits) -> WalkRequest:
    """A checked walk: the first picture's settings (one image, no refiner or skip-layer guidance), what it walks
    between, where it ends (seed resolved), how many frames."""
    base = validate_generate(replace(req.base, num_images=1), limits)
    if base.refiner_start or base.skip_layer_guidance:
        raise InvalidRequest("a walk takes neither a refiner start nor skip-layer guidance: leave them at 0")
    between = choice("walk between", req.between, WALKS)
    return replace(req, base=base, between=between,
                   to_prompt=text("prompt to walk to", req.to_prompt, limits.max_prompt_chars),
                   to_seed=resolve_seed(integer("seed to walk to", req.to_seed, -1, MAX_SEED)),
                   frames=integer("frames", req.frames, 2, MAX_WALK_FRAMES))


def validate_draw_pose(req: PoseRequest, limits: Limits) -> PoseRequest:
    """A pose to draw: its OpenPose JSON read (every malformed part named), the size it is drawn at, mirrored or not."""
    width, height = validate_size(req.width, req.height, limits)
    pose = text("pose JSON", req.pose, limits.max_prompt_chars)
    poses.from_json(pose)  # names what is wrong with it
    return replace(req, pose=pose, width=width, height=height, mirror=flag("mirror", req.mirror),
                   model=own_model(req.model, limits))


def validate_tokens(req: TokenRequest, limits: Limits) -> TokenRequest:
    """A prompt to count the tokens of (its weighting syntax is not counted)."""
    return replace(req, prompt=text("prompt", req.prompt, limits.max_prompt_chars), model=own_model(req.model, limits))


def validate_roundtrip(req: RoundTripRequest, limits: Limits) -> RoundTripRequest:
    """An image to send through the VAE (it is opened, fitted and checked by the round trip itself)."""
    if req.image is None or req.image == "":
        raise InvalidRequest("no image given; upload one first")
    return replace(req, model=own_model(req.model, limits))
