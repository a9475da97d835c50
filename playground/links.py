"""Links to experiments: each tab's settings written in the page's address, and read back from it.

A link names the tab (`?tab=grid`) and its settings by the API parameter names of that tab's main endpoint
(`generate`, `grid`, `control`, `walk`, `inspect`), for example
`?tab=grid&prompt=a%20red%20square&seed=7&schedulers=Euler,DDIM&columns=1,3,7.5`. It carries the values
themselves, not a session, so it still works after the server restarts and reads well in a lesson plan.

Reading a link checks every value the way the API's validators do (`playground.validation`, against the
chosen model's `Limits`), one setting at a time and each with those already accepted: an unknown name or a bad
value is named in a note and left out, and the rest still applies. No gradio here (the Lesson tab wires it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlencode

from PIL import Image

from playground import preprocessors
from playground.errors import InvalidRequest
from playground.axes import AXES
from playground.attention.sources import ATTENTION_OF
from playground.limits import Limits
from playground.schema import WALKS, ControlRequest, GenerateRequest, GridRequest, InspectRequest, WalkRequest
from playground.validation import (
    model_choice, validate_control, validate_generate, validate_grid, validate_inspect, validate_walk,
)

TAB = "tab"  # the address's name for the tab
GRID = GridRequest()
MODE_LABELS = {key: p.label for key, p in preprocessors.PREPROCESSORS.items()}  # the control tab's radio shows labels


@dataclass(frozen=True)
class Setting:
    """One setting of a tab, by its API parameter name, and how its text in the address is read."""

    name: str
    kind: str = "text"  # text, int, number, names (a comma-separated list), flag, choice
    choices: Mapping[str, str] = field(default_factory=dict)  # choice: key -> label (either is read; `keep` is stored)
    keep: str = "key"  # choice: which of the two the tab's input takes ("key" or "label")
    omit: Any = None  # a link written from the tab leaves the setting out at this value (an "off" value)


@dataclass(frozen=True)
class Page:
    """A tab a link can open: its key in the address, its main endpoint, and the settings that endpoint takes."""

    key: str
    endpoint: str  # the api_name of the tab's main action ("" for a tab without settings)
    settings: tuple[Setting, ...] = ()
    request: Callable[[dict, Limits], Any] | None = None  # the values (defaults filled in) as the endpoint's request
    validate: Callable[[Any, Limits], Any] | None = None  # the endpoint's own validator
    first: tuple[str, ...] = ()  # read before the others: those the others depend on (the model, the grid's axis)
    no_link: Mapping[str, str] = field(default_factory=dict)  # parameters a link cannot carry, and why

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.settings]

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)


@dataclass
class Link:
    """A link read: the tab it opens, the settings it sets (as the tab's inputs take them), and a note for each
    value that was left out."""

    tab: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the tabs' requests, defaults filled in

def scheduler_for(values: dict, limits: Limits, default: str = GenerateRequest.scheduler) -> str:
    """The link's scheduler, else the request's default where it fits the model, else the model's first."""
    if "scheduler" in values:
        return values["scheduler"]
    return default if default in limits.schedulers else limits.schedulers[0]


GENERATE_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "cfg_scale", "width", "height", "num_images", "shift",
                   "refiner_start", "skip_layer_guidance", "cfg_stop")


def base(values: dict, limits: Limits, **defaults) -> GenerateRequest:
    """The generation settings among `values` (the model's own default scheduler where none is given)."""
    given = {k: values[k] for k in GENERATE_FIELDS if k in values}
    return replace(GenerateRequest(**defaults), **given, scheduler=scheduler_for(values, limits))


def generate_of(values: dict, limits: Limits) -> GenerateRequest:
    return base(values, limits)


def grid_of(values: dict, limits: Limits) -> GridRequest:
    fits = [n for n in GRID.schedulers if n in limits.schedulers] or limits.schedulers[:2]
    return GridRequest(base=replace(base(values, limits, steps=GRID.base.steps), scheduler=limits.schedulers[0]),
                       schedulers=tuple(values.get("schedulers", fits)),
                       columns=values.get("columns", AXES[values.get("axis", GRID.axis)].default),
                       axis=values.get("axis", GRID.axis))


PLACEHOLDER = Image.new("RGB", (8, 8))  # a link carries no image: its checks run as if one were uploaded


def mode_key(mode: str) -> str:
    """A control mode's key, given its key or its label."""
    return next((k for k, label in MODE_LABELS.items() if mode in (k, label)), mode)


def control_of(values: dict, limits: Limits) -> ControlRequest:
    """The control request; a mode or a ControlNet left out follows the other, as the tab's radios do."""
    d = ControlRequest()
    feeds = {k: p.feeds for k, p in preprocessors.PREPROCESSORS.items()}
    net = values.get("controlnet") or feeds.get(mode_key(values.get("mode", d.mode))) or d.controlnet
    mode = values.get("mode") or next((k for k, f in feeds.items() if f == net), d.mode)
    return ControlRequest(
        image=PLACEHOLDER, mode=mode_key(mode), controlnet=net,
        canny=preprocessors.CannyOptions(values.get("low", d.canny.low), values.get("high", d.canny.high)),
        openpose=preprocessors.PoseOptions(values.get("detector", d.openpose.detector), values.get("hands", d.openpose.hands),
                                     values.get("face", d.openpose.face)),
        pose=values.get("pose", d.pose), resize=values.get("resize", d.resize),
        conditioning_scale=values.get("conditioning_scale", d.conditioning_scale),
        guidance_start=values.get("guidance_start", d.guidance_start),
        guidance_end=values.get("guidance_end", d.guidance_end), base=base(values, limits))


def walk_of(values: dict, limits: Limits) -> WalkRequest:
    d = WalkRequest()
    return WalkRequest(base=base(values, limits, steps=d.base.steps), between=values.get("between", d.between),
                       to_prompt=values.get("to_prompt", d.to_prompt), to_seed=values.get("to_seed", d.to_seed),
                       frames=values.get("frames_count", d.frames))


def inspect_of(values: dict, limits: Limits) -> InspectRequest:
    return InspectRequest(base=base(values, limits), attention_of=values.get("attention_of", "prompt"))


# ---------------------------------------------------------------- the tabs

PROMPT, NEGATIVE, SEED = Setting("prompt"), Setting("negative_prompt"), Setting("seed", "int")
STEPS, CFG = Setting("steps", "int"), Setting("cfg_scale", "number")
SCHEDULER, WIDTH, HEIGHT = Setting("scheduler"), Setting("width", "int"), Setting("height", "int")
MODEL = Setting("model")
IMAGES = Setting("num_images", "int")
SHIFT = Setting("shift", "number", omit=0.0)
REFINER = Setting("refiner_start", "number", omit=0.0)

PAGES: dict[str, Page] = {p.key: p for p in (
    Page("lesson", ""),
    Page("prompt", "generate",
         (PROMPT, NEGATIVE, SEED, STEPS, CFG, SCHEDULER, WIDTH, HEIGHT, IMAGES, SHIFT, REFINER,
          Setting("skip_layer_guidance", "number", omit=0.0), MODEL, Setting("cfg_stop", "number", omit=1.0)),
         generate_of, validate_generate, first=("model",)),
    Page("grid", "grid",
         (PROMPT, NEGATIVE, SEED, STEPS, Setting("schedulers", "names"), Setting("columns"), WIDTH, HEIGHT,
          Setting("axis", "choice", {k: a.label for k, a in AXES.items()}), CFG, Setting("models", "names")),
         grid_of, validate_grid, first=("models", "axis")),
    Page("controlnet", "control",
         (Setting("mode", "choice", MODE_LABELS, keep="label"), Setting("controlnet"), Setting("low", "int"),
          Setting("high", "int"), Setting("resize"), Setting("conditioning_scale", "number"),
          Setting("guidance_start", "number"), Setting("guidance_end", "number"), PROMPT, NEGATIVE, SEED, STEPS, CFG,
          SCHEDULER, WIDTH, HEIGHT, IMAGES, Setting("detector"), Setting("hands", "flag"), Setting("face", "flag"),
          Setting("pose", omit=""), MODEL),
         control_of, validate_control, first=("model", "controlnet", "pose", "mode"),
         no_link={"image": "a link carries no image: upload one or click an example"}),
    Page("walk", "walk",
         (PROMPT, NEGATIVE, SEED, STEPS, CFG, SCHEDULER, WIDTH, HEIGHT, Setting("between", "choice", WALKS),
          Setting("to_prompt"), Setting("to_seed", "int"), Setting("frames_count", "int"), SHIFT, MODEL),
         walk_of, validate_walk, first=("model",)),
    Page("inspector", "inspect",
         (PROMPT, NEGATIVE, SEED, STEPS, CFG, SCHEDULER, WIDTH, HEIGHT,
          Setting("attention_of", "choice", {k: a.label for k, a in ATTENTION_OF.items()}), REFINER, MODEL),
         inspect_of, validate_inspect, first=("model",)),
    Page("anatomy", "anatomy"),
)}


# ---------------------------------------------------------------- reading a link

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def read_value(s: Setting, text: str):
    """The text of one setting as the value its input takes; InvalidRequest naming the setting otherwise."""
    if s.kind == "text":
        return text
    if s.kind == "names":
        return [part.strip() for part in text.split(",") if part.strip()]
    if s.kind == "flag":
        if text.strip().lower() in TRUE + FALSE:
            return text.strip().lower() in TRUE
        raise InvalidRequest(f"{s.name} must be true or false, got {text!r}")
    if s.kind == "choice":
        for key, label in s.choices.items():
            if text in (key, label):
                return key if s.keep == "key" else label
        raise InvalidRequest(f"unknown {s.name} {text!r}; choose one of: {', '.join(map(repr, s.choices))}")
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"{s.name} must be a number, got {text!r}") from None
    if s.kind == "int":
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidRequest(f"{s.name} must be a whole number, got {text!r}")
        return int(value)
    return value


def limits_for(page: Page, values: dict, limits: Mapping[str, Limits]) -> Limits:
    """The Limits of the model the values name (a grid: its first row model), else of the first loaded."""
    names = values.get("models") or [values.get("model", "")]
    return limits.get(names[0], next(iter(limits.values())))


def check(page: Page, values: dict, limits: Mapping[str, Limits]) -> None:
    """Raise InvalidRequest where `values` together fail the endpoint's checks (on every model a grid names)."""
    loaded = list(limits)
    if "model" in values:
        model_choice(values["model"], loaded)
    models = values.get("models", [])
    for name in models:
        model_choice(name, loaded)
    if len(models) > 1:  # each model runs the rows that fit it, else its own default: as Models.rows does
        for name in models:
            own = limits[name]
            fitting = [n for n in values.get("schedulers", []) if n in own.schedulers] or own.schedulers[:1]
            page.validate(page.request({**values, "schedulers": fitting}, own), own)
        unknown = [n for n in values.get("schedulers", []) if not any(n in lim.schedulers for lim in limits.values())]
        if unknown:
            raise InvalidRequest(f"scheduler {unknown[0]!r} fits none of the models")
        return
    own = limits_for(page, values, limits)
    page.validate(page.request(values, own), own)


def parse(query: Mapping[str, str], limits: Mapping[str, Limits]) -> Link:
    """The page address's settings (name -> text, as the browser sent them), checked against the loaded models'
    Limits (name -> Limits, the first the default): every unknown name or bad value named in a note and left out."""
    link = Link()
    query = dict(query)
    if TAB not in query:
        if query:
            link.notes.append(f"these settings name no tab (add tab= one of: {', '.join(PAGES)}); "
                              f"not applied: {', '.join(sorted(query))}")
        return link
    key = query.pop(TAB).strip().lower()
    page = PAGES.get(key)
    if page is None:
        link.notes.append(f"unknown tab {key!r}; choose one of: {', '.join(PAGES)}")
        return link
    link.tab = key
    order = [n for n in page.first if n in query] + [n for n in query if n not in page.first]
    for name in order:
        text, s = query[name], page.setting(name)
        if s is None:
            why = page.no_link.get(name) or (f"the {key} tab takes: {', '.join(page.names)}" if page.names
                                             else f"the {key} tab takes no settings")
            link.notes.append(f"unknown setting {name!r} ({why})")
            continue
        try:
            value = read_value(s, text)
            check(page, {**link.values, name: value}, limits)
        except InvalidRequest as exc:
            link.notes.append(f"{name}: {exc}")
            continue
        link.values[name] = value
    return link


# ---------------------------------------------------------------- writing one

def text_of(value) -> str:
    """A value as the address writes it: numbers short (7.5, not 7.500), lists comma-separated, flags true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == value and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(text_of(v) for v in value)
    return "" if value is None else str(value)


def write(tab: str, values: Mapping[str, Any]) -> str:
    """The query of a link to `tab` with `values` (its settings by API name; others are ignored): `?tab=...`.
    Spaces are %20 and a plus is %2B, so a scheduler such as "DPM++ 2M" reads back as written."""
    page = PAGES[tab]
    pairs = [(TAB, tab)]
    for s in page.settings:
        if s.name not in values:
            continue
        value = values[s.name]
        if s.omit is not None and value == s.omit:
            continue
        pairs.append((s.name, text_of(value)))
    return "?" + urlencode(pairs, quote_via=quote, safe=",")
