"""The PNG "parameters" text chunk, in the format AUTOMATIC1111's web UI writes and reads.

    a red circle on a blue background
    Negative prompt: blurry
    Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: ...
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, PngImagePlugin

from playground.errors import InvalidRequest

KEY = "parameters"
# one "Key: value" pair of the last line; values with commas are JSON-quoted (as A1111 does)
_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class Params:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # more "Key: value" pairs for the settings line
    shift: float = 0.0  # a flow model's (SD3) scheduler shift; 0: the model's own (not written)
    refiner_start: float = 0.0  # SDXL: where its refiner took over; 0: no refiner (not written)
    skip_layer_guidance: float = 0.0  # SD3.5: the skip-layer guidance scale; 0: off (not written)
    cfg_stop: float = 1.0  # the fraction of the steps after which CFG stopped; 1: guided to the end (not written)


def _quote(value: str) -> str:
    return json.dumps(value) if any(ch in value for ch in ',:"\n') else value


def _number(x: float) -> str:
    return f"{x:g}"


def format_parameters(p: Params) -> str:
    """A1111's three-part text: prompt, 'Negative prompt: ...', then the settings line."""
    pairs = {
        "Steps": str(p.steps),
        "Sampler": p.sampler,
        "CFG scale": _number(p.cfg_scale),
        "Seed": str(p.seed),
        "Size": f"{p.width}x{p.height}",
        "Model": p.model,
        "Shift": _number(p.shift) if p.shift else "",
        "Refiner start": _number(p.refiner_start) if p.refiner_start else "",
        "SLG scale": _number(p.skip_layer_guidance) if p.skip_layer_guidance else "",
        "CFG stop": _number(p.cfg_stop) if p.cfg_stop < 1 else "",
        **dict(p.extra),
        "Version": "diffusion-playground",
    }
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in pairs.items() if v != "")
    text = p.prompt
    if p.negative_prompt:
        text += f"\nNegative prompt: {p.negative_prompt}"
    return f"{text}\n{line}"


def parse_parameters(text: str) -> Params:
    """Read A1111-style parameters (ours or another tool's); InvalidRequest (a ValueError) when it isn't that."""
    lines = text.strip().split("\n")
    pairs = dict(_PAIR.findall(lines[-1])) if lines else {}
    if len(pairs) < 3:
        raise InvalidRequest("no Stable Diffusion settings line found in the PNG's parameters text")
    try:
        pairs = {k.strip(): (json.loads(v) if v.startswith('"') else v.strip()) for k, v in pairs.items()}
    except ValueError as exc:  # a quoted value that is not valid JSON
        raise InvalidRequest(f"unreadable settings line {lines[-1]!r}: {exc}") from None
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    sampler = pairs.get("Sampler", "")
    schedule = pairs.get("Schedule type", "")
    if schedule.lower() == "karras" and not sampler.endswith("Karras"):  # A1111 >= 1.9 splits them
        sampler = f"{sampler} Karras"
    width, _, height = pairs.get("Size", "0x0").partition("x")
    try:
        return Params(prompt="\n".join(prompt), negative_prompt="\n".join(negative), steps=int(pairs.get("Steps", 0)),
                      sampler=sampler, cfg_scale=float(pairs.get("CFG scale", 0)), seed=int(pairs.get("Seed", -1)),
                      width=int(width), height=int(height), model=pairs.get("Model", ""),
                      shift=float(pairs.get("Shift", 0) or 0),
                      refiner_start=float(pairs.get("Refiner start", 0) or 0),
                      skip_layer_guidance=float(pairs.get("SLG scale", 0) or 0),
                      cfg_stop=float(pairs.get("CFG stop", 1) or 1))
    except ValueError as exc:
        raise InvalidRequest(f"unreadable settings line {lines[-1]!r}: {exc}") from None


def save_png(image: Image.Image, params: Params, path: str | Path) -> Path:
    """Write `image` as PNG with the parameters chunk, atomically: a crash leaves no half PNG behind."""
    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, format_parameters(params))
    return write_atomically(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def write_atomically(path: str | Path, write) -> Path:
    """`write(temporary path)` in the same folder, then a rename onto `path` (atomic on POSIX): readers see the
    old file or the whole new one, never a part; a failed write leaves nothing. The temporary file is the
    writer's own (process and thread), so two writers of one path never write into one temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_png(path: str | Path) -> Params:
    """Settings stored in a PNG; InvalidRequest (naming the file) when it has none."""
    try:
        with Image.open(path) as im:
            im.load()
            text = im.info.get(KEY) or getattr(im, "text", {}).get(KEY)
    except (OSError, SyntaxError) as exc:
        why = str(exc).replace(repr(str(path)), "").replace(str(path), Path(path).name).strip()  # no server path
        raise InvalidRequest(f"{Path(path).name} is not a readable image ({why})") from None
    if not text:
        raise InvalidRequest(f"{Path(path).name} has no 'parameters' text chunk (was it made by a Stable Diffusion tool?)")
    return parse_parameters(text)
