"""Every file the playground writes: PNGs that carry their parameters, the labelled grid, trajectories.

Each function takes a result and the output folder, writes under a fresh sortable stem
(20261126-131427-2cfb48-...), and returns the paths with a caption for the gallery.
"""

from __future__ import annotations

import re
import stat
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw

from playground.axes import AXES, font, layout, wrap
from playground.metadata import format_parameters, save_png, write_atomically
from playground.settings import Settings
from playground.schema import ControlResult, Generated, GridResult, Trajectory, WalkResult


STALE_PART_SECONDS = 600  # no write takes this long: an older temporary file is a crash's leftover


@dataclass(frozen=True)
class Folder:
    """Where the playground writes, and how much it keeps there: past `max_mb` the oldest files go first."""

    path: Path
    max_mb: float = 0  # 0: no limit

    @classmethod
    def of(cls, settings: Settings) -> "Folder":
        return cls(Path(settings.output_dir), settings.max_output_mb)

    def prune(self) -> int:
        """Delete the oldest files until the folder holds at most `max_mb` (before a request's new files are
        written: it may exceed the cap by one request's files); how many were deleted. Other requests write and
        prune at the same time, so a file may vanish between listing it and looking at it: it is skipped."""
        if not self.path.is_dir():
            return 0
        stale = time.time() - STALE_PART_SECONDS  # a write killed mid-way (a crash) left its .part file
        for part, (mtime, _) in _listed(self.path.glob(".*.part")):
            if mtime < stale:
                part.unlink(missing_ok=True)
        if self.max_mb <= 0:
            return 0
        files = sorted(_listed(f for f in self.path.iterdir() if not f.name.startswith(".")), key=lambda e: e[1][0])
        total, cap, gone = sum(size for _, (_, size) in files), self.max_mb * 1e6, 0
        for f, (_, size) in files:
            if total <= cap:
                break
            f.unlink(missing_ok=True)  # another request may have pruned it already
            total, gone = total - size, gone + 1
        return gone


def _listed(paths) -> list[tuple[Path, tuple[float, int]]]:
    """(path, (mtime, size)) of each regular file still there when looked at."""
    out = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:  # renamed or pruned by another request meanwhile
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((path, (st.st_mtime, st.st_size)))
    return out


def output_stem(out: Folder | str | Path) -> Path:
    """A fresh, sortable file stem in the output folder (made if missing, pruned to its cap): 20261126-131427-2cfb48"""
    folder = out if isinstance(out, Folder) else Folder(Path(out))
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.prune()
    return folder.path / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def save_images(images: list[Generated], out_dir: Folder | str | Path) -> list[tuple[str, str]]:
    """Each image as a PNG carrying its parameters; (path, caption) pairs for a gallery."""
    stem = output_stem(out_dir)
    items = []
    for k, g in enumerate(images):
        path = save_png(g.image, g.params, f"{stem}-{k}-seed{g.params.seed}.png")
        items.append((str(path), f"seed {g.params.seed}"))
    return items


def save_control(result: ControlResult, out_dir: Folder | str | Path) -> list[tuple[str, str]]:
    """The control map, then the images; (path, caption) pairs."""
    stem = output_stem(out_dir)
    path = write_atomically(f"{stem}-control-map.png", lambda tmp: result.control_map.save(tmp, format="PNG"))
    return [(str(path), "control map"), *save_images(result.images, out_dir)]


def save_grid(result: GridResult, out_dir: Folder | str | Path) -> tuple[str, list[tuple[str, str]]]:
    """The labelled grid and every cell as PNGs with their parameters; (grid path, gallery items)."""
    stem = f"{output_stem(out_dir)}-grid"
    r, axis = result.request, AXES[result.request.axis]
    items = []
    for row in result.cells:
        for c in row:
            label = axis.cell(c.value)
            path = save_png(c.generated.image, c.generated.params,
                            f"{stem}-{re.sub(r'[^A-Za-z0-9.-]+', '_', c.row.replace('+', 'p'))}-{label.replace(' ', '')}.png")
            items.append((str(path), f"{c.row} · {label}"))
    prompt = r.base.prompt
    shown = (f"“{prompt[:80]}{'…' if len(prompt) > 80 else ''}”" if prompt.strip()
             else "(empty prompt: unconditional)")
    title = f"{shown}  seed {r.base.seed}"
    title += f", {axis.fixed(r.base)}"
    sheet = layout([[c.generated.image for c in row] for row in result.cells], [row[0].row for row in result.cells],
                   [axis.cell(v) for v in r.columns], title=title)
    first = result.cells[0][0].generated.params
    params = replace(first, extra=(("Grid", f"{'models and ' if r.models else ''}schedulers x {axis.plural}"),
                                   ("Schedulers", ", ".join(row[0].row for row in result.cells)),
                                   (axis.plural.capitalize(), ", ".join(f"{v:g}" for v in r.columns))))
    return str(save_png(sheet, params, f"{stem}.png")), items


def save_walk(result: WalkResult, out_dir: Folder | str | Path, frame_ms: int = 150) -> tuple[str, str, list]:
    """A walk as a looping GIF (there and back), a labelled strip PNG with the settings, and each frame as a PNG;
    (GIF path, strip path, gallery items)."""
    stem = f"{output_stem(out_dir)}-walk"
    items = []
    for k, (g, t) in enumerate(zip(result.frames, result.mix)):
        path = save_png(g.image, g.params, f"{stem}-{k:02d}.png")
        items.append((str(path), f"{t:.2f}"))
    r = result.request
    ends = f"“{r.base.prompt}” to “{r.to_prompt}”" if r.between == "prompts" else \
        f"seed {r.base.seed} to seed {r.to_seed}"
    strip = titled(layout([[g.image for g in result.frames]], [""], [f"{t:.2f}" for t in result.mix]), f"walk: {ends}")
    strip_path = save_png(strip, replace(result.frames[0].params, extra=(("Walk", ends),)), f"{stem}.png")
    images = [g.image for g in result.frames]
    loop = images + images[-2:0:-1]  # there and back, each end shown once
    gif = write_atomically(f"{stem}.gif", lambda tmp: loop[0].save(tmp, format="GIF", save_all=True,
                                                                   append_images=loop[1:], duration=frame_ms, loop=0))
    return str(gif), str(strip_path), items


TITLE_CHARS = 72  # letters a line: where a phone shows the strip 320 px wide, they are still 10 px


def titled(sheet: Image.Image, title: str) -> Image.Image:
    """`sheet` under `title`, whole (wrapped between words), in letters sized to the sheet's width."""
    size = max(14, round(sheet.width / (TITLE_CHARS * 0.44)))  # a letter of this font is about 0.44 of its size wide
    f, measure = font(size), ImageDraw.Draw(sheet)
    margin = size // 2
    lines = wrap(title, f, sheet.width - 2 * margin, measure)
    line_height = size + size // 3
    out = Image.new("RGB", (sheet.width, 2 * margin + len(lines) * line_height + sheet.height), "white")
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((margin, margin + k * line_height), line, fill="black", font=f)
    out.paste(sheet, (0, 2 * margin + len(lines) * line_height))
    return out


def save_trajectory(traj: Trajectory, out_dir: Folder | str | Path) -> tuple[Path, Path]:
    """The final image as a PNG, and every recorded tensor as one .safetensors file with the
    generation's parameters in its metadata; (png, safetensors)."""
    from safetensors.torch import save_file

    stem = f"{output_stem(out_dir)}-seed{traj.request.seed}"
    image = save_png(traj.image, traj.params, f"{stem}.png")
    meta = {"parameters": format_parameters(traj.params), "sigma_space": str(traj.sigma_space),
            "model": traj.params.model, "prediction_type": traj.prediction_type,
            "layout": "x_t, x0, out_*: (steps, 4, H/8, W/8) float16, sample 0"}
    tensors = {k: v.contiguous() for k, v in traj.tensors.items()}
    path = write_atomically(f"{stem}-trajectory.safetensors", lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return image, path


def save_pose(text: str, out_dir: Folder | str | Path) -> Path:
    """A pose's OpenPose JSON as a .json file (the format pose editors open)."""
    return write_atomically(f"{output_stem(out_dir)}-pose.json", lambda tmp: tmp.write_text(text + "\n"))
