"""ControlNet preprocessors (image -> control map) and fitting images to the generation size.

Every preprocessor has one entry in PREPROCESSORS that carries its rules: the label the UI and
the API show, whether it needs an uploaded image (`needs_image`) or a pose as OpenPose JSON
(`needs_pose`), the options it reads (`params`, with their ranges or choices and defaults), which
ControlNet its maps feed, and how it makes its map (`make_map(MapInputs) -> PIL RGB`). The UI builds its
radio, sliders and checkboxes from these entries, `validation.validate_preprocess` checks requests against
them, and the Engine only asks the chosen entry for its map. A new preprocessor over the existing options
is one entry; one with options of its own also adds them to `ControlRequest` and `MapInputs`. The pure
ones are OpenCV / PIL functions; the pose detector's weights are kept by `playground.annotators`, which
`MapInputs.detect` reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps

from playground import poses
from playground.errors import InvalidRequest

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
    """The thresholds together: Canny's hysteresis needs low <= high."""
    if low > high:
        raise InvalidRequest(f"Canny low threshold ({low}) must not be above the high one ({high})")


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
class CannyOptions:
    """The Canny preprocessor's thresholds (see CANNY_PARAMS for their ranges)."""

    low: int = 100
    high: int = 200


@dataclass(frozen=True)
class PoseOptions:
    """Which pose detector runs on a photo, and what it looks for (see POSE_PARAMS)."""

    detector: str = "auto"  # one of DETECTORS
    hands: bool = False
    face: bool = False


@dataclass(frozen=True)
class MapInputs:
    """What a preprocessor may read to make its map; each entry reads only what it needs."""

    image: Callable[[], Image.Image]  # the upload, opened and fitted to the size when first asked for
    pose: str  # a pose as OpenPose JSON
    size: tuple[int, int]  # (width, height) of the generation
    canny: CannyOptions
    openpose: PoseOptions
    detect: Callable[[Image.Image, PoseOptions], "poses.Detection"]  # the cached pose detectors (annotators)


@dataclass(frozen=True)
class Preprocessor:
    make_map: Callable[[MapInputs], Image.Image]  # the control map at the generation size
    label: str  # the choice as the UI and the API name it
    short: str  # the maps it makes, in a sentence: "Canny edges"
    params: tuple[Param, ...] = ()  # the options it reads, for the UI (each options group is checked by requests)
    feeds: str | None = None  # the ControlNet its maps are for (None: whichever the user picks)
    needs_image: bool = True  # an upload is required (False: the map comes from the pose JSON)
    needs_pose: bool = False  # the pose JSON is required, and checked before any work
    check: Callable[[CannyOptions, PoseOptions], None] | None = None  # raises InvalidRequest for a bad combination


DETECTORS = ("auto", "openpose", "mediapipe")  # which pose detector: see playground.annotators

CANNY_PARAMS = (Param("low", "Canny low threshold", 0, 255, CannyOptions.low),
                Param("high", "Canny high threshold", 0, 255, CannyOptions.high))
POSE_PARAMS = (Param("detector", "pose detector", default=PoseOptions.detector, choices=DETECTORS,
                     info="auto: OpenPose's own network where its weights are, else MediaPipe (offline)"),
               Param("hands", "hands", default=PoseOptions.hands, flag=True, info="OpenPose only; about 9-16 s on a CPU"),
               Param("face", "face", default=PoseOptions.face, flag=True, info="OpenPose only; about 1.4-2.2 s on a CPU"))


def _canny_map(i: MapInputs) -> Image.Image:
    return canny(i.image(), i.canny.low, i.canny.high)


def _detected_map(i: MapInputs) -> Image.Image:
    return i.detect(i.image(), i.openpose).control_map


def _drawn_map(i: MapInputs) -> Image.Image:
    return poses.draw(poses.from_json(i.pose), *i.size)


PREPROCESSORS: dict[str, Preprocessor] = {
    "canny": Preprocessor(_canny_map, "Canny edges from the photo", "Canny edges", CANNY_PARAMS, feeds="canny",
                          check=lambda canny, pose: check_canny(canny.low, canny.high)),
    "openpose": Preprocessor(_detected_map, "OpenPose skeleton from the photo", "OpenPose skeletons", POSE_PARAMS,
                             feeds="openpose"),
    "pose": Preprocessor(_drawn_map, "A pose as OpenPose JSON (detected, edited or a preset)", "Pose drawings",
                         feeds="openpose", needs_image=False, needs_pose=True),
    "image": Preprocessor(lambda i: as_is(i.image()), "My image is already the control map", "A ready map"),
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
            why = str(exc).replace(repr(str(image)), "").replace(str(image), name)  # never the server's path
            raise InvalidRequest(f"{name} is not a readable image ({why.strip()})") from None
    return downscale(image.convert("RGB"), longest)


def downscale(image: Image.Image, longest: int) -> Image.Image:
    """A copy no longer than `longest` on its longer side (huge uploads first, before any other work)."""
    if max(image.size) <= longest:
        return image
    image = image.copy()
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return image
