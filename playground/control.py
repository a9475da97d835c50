"""ControlNet preprocessors (image -> control map) and fitting images to the generation size.

Every preprocessor has one entry in PREPROCESSORS that carries its rules: the label the UI and the
API show, what it reads (an uploaded image, or a pose as OpenPose JSON), its parameters with their
ranges or choices and defaults, and which ControlNet its maps feed. The UI builds its radio, sliders
and checkboxes from these entries and `requests.validate_preprocess` checks requests against them,
so adding a preprocessor is adding an entry. The pure ones are a function fn(image: PIL RGB,
**params) -> PIL RGB map (OpenCV / PIL, no weights); a pose detector needs the Engine's cached
weights, so the Engine runs those (`detector=True`), and a pose is drawn by `playground.poses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = {
    "crop": "scale to cover the size, then cut the middle (keeps the aspect, loses edges)",
    "pad": "scale to fit inside the size, then pad with black (keeps everything, adds borders)",
    "stretch": "scale to exactly the size (distorts the aspect)",
}


def canny(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """Canny edges (Canny 1986) as white lines on black, the map SD 1.5's canny ControlNet was trained on."""
    edges = cv2.Canny(np.asarray(image.convert("RGB")), int(low), int(high))  # (H, W) uint8, 0 or 255
    return Image.fromarray(edges).convert("RGB")


def as_is(image: Image.Image) -> Image.Image:
    """The image is already a control map (edges or a pose drawing): use it unchanged."""
    return image.convert("RGB")


def check_canny(low: int, high: int) -> None:
    if low > high:
        raise ValueError(f"Canny low threshold ({low}) must not be above the high one ({high})")


@dataclass(frozen=True)
class Param:
    """One parameter of a preprocessor: its keyword, label, and a numeric range, a list of choices, or a flag."""

    name: str  # the keyword fn takes
    label: str  # what the UI and error messages call it
    lo: float = 0
    hi: float = 0
    default: float | str | bool = 0
    integer: bool = True
    choices: tuple[str, ...] = ()  # a choice among these (a radio) instead of a number
    flag: bool = False  # on or off (a checkbox) instead of a number
    info: str = ""  # a note for the UI (what it costs)


@dataclass(frozen=True)
class Preprocessor:
    fn: Callable[..., Image.Image] | None  # fn(image, **params) -> map; None when the Engine runs it
    label: str  # the choice as the UI and the API name it
    short: str  # the maps it makes, in a sentence: "Canny edges"
    params: tuple[Param, ...] = ()
    feeds: str | None = None  # the ControlNet its maps are for (None: whichever the user picks)
    check: Callable[..., None] | None = None  # raises ValueError for a bad combination of params
    reads: str = "image"  # "image": an upload; "pose": a pose as OpenPose JSON
    detector: bool = False  # a pose detector with weights the Engine caches


DETECTORS = ("auto", "openpose", "mediapipe")  # which pose detector: see playground.poses

PREPROCESSORS: dict[str, Preprocessor] = {
    "canny": Preprocessor(
        canny, "Canny edges from the photo", "Canny edges", feeds="canny", check=check_canny,
        params=(Param("low", "Canny low threshold", 0, 255, 100), Param("high", "Canny high threshold", 0, 255, 200))),
    "openpose": Preprocessor(
        None, "OpenPose skeleton from the photo", "OpenPose skeletons", feeds="openpose", detector=True,
        params=(Param("detector", "pose detector", default="auto", choices=DETECTORS,
                      info="auto: OpenPose's own network where its weights are, else MediaPipe (offline)"),
                Param("hands", "hands", default=False, flag=True, info="OpenPose only; about 9-16 s on a CPU"),
                Param("face", "face", default=False, flag=True, info="OpenPose only; about 1.4-2.2 s on a CPU"))),
    "pose": Preprocessor(None, "A pose as OpenPose JSON (detected, edited or a preset)", "Pose drawings",
                         feeds="openpose", reads="pose"),
    "image": Preprocessor(as_is, "My image is already the control map", "A ready map"),
}


def fit(image: Image.Image, width: int, height: int, mode: str = "crop") -> Image.Image:
    """`image` at exactly width x height by one of RESIZE_MODES."""
    image = image.convert("RGB")
    if mode == "crop":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    raise ValueError(f"unknown resize mode {mode!r}; choose one of: {', '.join(RESIZE_MODES)}")


def open_upload(image: Image.Image | str | Path | None, longest: int, max_pixels: int) -> Image.Image:
    """An upload as RGB at most `longest` on its longer side; over `max_pixels` (read from the header,
    before decoding), unreadable or missing, an InvalidRequest that names the file."""
    from playground.requests import InvalidRequest  # here: requests imports this module's registry

    if image is None or image == "":
        raise InvalidRequest("no image given; upload one first")
    if not isinstance(image, Image.Image):
        name = Path(str(image)).name
        try:
            with Image.open(image) as im:
                if im.width * im.height > max_pixels:
                    raise InvalidRequest(f"{name} is {im.width}x{im.height} = {im.width * im.height / 1e6:.0f} "
                                         f"megapixels; the limit is {max_pixels / 1e6:.0f} (MAX_UPLOAD_PIXELS)")
                im.draft("RGB", (longest, longest))  # cheap JPEG downscale while decoding
                image = im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            if isinstance(exc, InvalidRequest):
                raise
            raise InvalidRequest(f"{name} is not a readable image ({exc})") from None
    return downscale(image.convert("RGB"), longest)


def downscale(image: Image.Image, longest: int) -> Image.Image:
    """A copy no longer than `longest` on its longer side (huge uploads first, before any other work)."""
    if max(image.size) <= longest:
        return image
    image = image.copy()
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return image
