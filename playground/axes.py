"""Grid helpers (pure Python and PIL): the column axes, value lists and ranges, the labelled grid image."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Axis:
    """What a grid's columns vary: a GenerateRequest field, one value per column."""

    label: str  # the choice as the UI and the API name it
    plural: str  # the values, in a sentence: "CFG scales"
    field: str  # the GenerateRequest field each column sets
    cell: Callable[[float], str]  # a column's label on the sheet: "CFG 7.5", "20 steps"
    default: str  # a sensible list to start from
    fixed: Callable[[Any], str]  # what the grid holds fixed, from its base request: "20 steps", "CFG 7.5"
    # True: a row's columns run as one batch (the value is per sample in our loop, as CFG is). False: one pass
    # a column (the value changes the whole run: its steps, or a flow model's shift)
    batched: bool
    # each column compared with a reference run of its scheduler: the field's value for that run, from the settings'
    # reference step count (the steps axis: a long run, what more steps change; CFG stop: guided to the end)
    reference: Callable[[int], float] | None = None
    reference_text: str = ""  # that run, in a sentence: "a 200-step run"
    needs_shift: bool = False  # only for models whose schedulers take a shift (SD3's rectified flow)
    cast: Callable[[float], Any] = float  # a column's value as its field takes it (steps: a whole number)
    steps: bool = False  # the value is the run's step count
    column: str = ""  # the cell table's column for the value, where its usual columns do not show it

    def step_counts(self, values: list[float], base_steps: int, reference: int) -> list[int]:
        """The step count of each pass one row of this axis makes (its reference run last)."""
        if self.batched:
            return [base_steps]
        runs = [*values, self.reference(reference)] if self.reference else list(values)
        return [int(v) if self.steps else base_steps for v in runs]


AXES: dict[str, Axis] = {
    "cfg": Axis("CFG scales", "CFG scales", "cfg_scale", lambda v: f"CFG {v:g}", "1, 3, 7.5, 12",
                fixed=lambda base: f"{base.steps} steps", batched=True),
    "steps": Axis("Steps", "step counts", "steps", lambda v: f"{v:g} steps", "5, 10, 20, 50",
                  fixed=lambda base: f"CFG {base.cfg_scale:g}", batched=False, reference=lambda n: n,
                  reference_text="a {value:g}-step run", cast=int, steps=True),
    # classifier-free guidance on for the first part of the steps only: the later steps evaluate the prompt alone
    # (half the batch, so cheaper), each cell compared with the run guided to the end
    "cfg_stop": Axis("CFG stops at", "CFG stops", "cfg_stop", lambda v: f"CFG to {v:g}", "0.2, 0.4, 0.6, 1",
                     fixed=lambda base: f"{base.steps} steps, CFG {base.cfg_scale:g}", batched=False,
                     reference=lambda n: 1.0, reference_text="the run guided to the end", column="CFG stop"),
    # SD3's flow shift: sigma' = shift sigma / (1 + (shift - 1) sigma), more of the steps at high noise
    "shift": Axis("Flow shift", "shifts", "shift", lambda v: f"shift {v:g}", "1, 3, 6",
                  fixed=lambda base: f"{base.steps} steps, CFG {base.cfg_scale:g}", batched=False, needs_shift=True),
}

_RANGE_STEP = re.compile(r"^(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*\(\s*\+\s*([\d.]+)\s*\)$")  # 2-12 (+2)
_RANGE_COUNT = re.compile(r"^(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*\[\s*(\d+)\s*\]$")  # 2-12 [6]


def _float(text: str, whole: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} in {what} {whole!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} in {what} {whole!r} is not a finite number")
    return value


def parse_scales(text: str, limit: int = 1000, what: str = "CFG scales") -> list[float]:
    """'1, 3, 7.5' or ranges like '2-12 (+2)' (step) and '2-12 [6]' (count), A1111's X/Y/Z syntax."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} are empty; write a list such as '1, 3, 7.5' or a range such as '2-12 (+2)'")
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if m := _RANGE_STEP.match(part):
            lo, hi, step = (_float(g, text, what) for g in m.groups())
            if step <= 0:
                raise ValueError(f"the step in {part!r} must be above 0")
            count = math.floor((hi - lo) / step + 1e-9) + 1
            if count < 1 or count > limit:
                raise ValueError(f"{part!r} gives {count} values; at most {limit}")
            out += [round(lo + k * step, 6) for k in range(count)]
        elif m := _RANGE_COUNT.match(part):
            lo, hi = _float(m.group(1), text, what), _float(m.group(2), text, what)
            count = int(m.group(3))
            if not 1 <= count <= limit:
                raise ValueError(f"{part!r} asks for {count} values; from 1 to {limit}")
            out += [lo] if count == 1 else [round(lo + (hi - lo) * k / (count - 1), 6) for k in range(count)]
        else:
            out.append(_float(part, text, what))
        if len(out) > limit:
            raise ValueError(f"{what} {text!r} give more than {limit} values")
    if not out:
        raise ValueError(f"no CFG scale found in {text!r}")
    return out


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font (needs FreeType; falls back to the bitmap one)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def wrap(text: str, f, width: float, measure: ImageDraw.ImageDraw) -> list[str]:
    """`text` in lines no wider than `width` pixels in font `f`, broken between words (a longer word alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and measure.textlength(f"{lines[-1]} {word}", font=f) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def layout(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str],
           title: str = "") -> Image.Image:
    """Cells (rows x cols, one size) in a white sheet, row labels on the left, column labels on top."""
    rows, cols = len(cells), len(cells[0]) if cells else 0
    if rows != len(row_labels) or any(len(r) != cols for r in cells) or cols != len(col_labels):
        raise ValueError("cells must be rows x cols with one label per row and per column")
    w, h = cells[0][0].size
    size = max(14, min(w, h) // 9)
    f = font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(measure.textlength(t, font=f) for t in row_labels)) + 2 * size
    gap = max(2, w // 64)
    width = left + cols * (w + gap)
    lines = wrap(title, f, width - 2 * gap, measure) if title else []  # the title, whole, in as many lines as it takes
    line_height = size + size // 3
    top = 2 * size + (len(lines) * line_height + size // 2 if lines else 0)
    sheet = Image.new("RGB", (width, top + rows * (h + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(lines):
        draw.text((gap, size // 2 + k * line_height), line, fill="black", font=f)
    for c, label in enumerate(col_labels):
        draw.text((left + c * (w + gap) + w // 2, top - size // 2), label, fill="black", font=f, anchor="mb")
    for r, label in enumerate(row_labels):
        draw.text((left - size, top + r * (h + gap) + h // 2), label, fill="black", font=f, anchor="rm")
        for c in range(cols):
            sheet.paste(cells[r][c], (left + c * (w + gap), top + r * (h + gap)))
    return sheet
