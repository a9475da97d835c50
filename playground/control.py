"""ControlNet preprocessors (image -> control map) and fitting images to the generation size.

Every preprocessor has one signature, fn(image: PIL RGB, **params) -> PIL RGB map, and lives in
PREPROCESSORS. Pure OpenCV / PIL: no weights needed.
"""

from __future__ import annotations

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


PREPROCESSORS: dict[str, Callable[..., Image.Image]] = {"canny": canny, "image": as_is}


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


def downscale(image: Image.Image, longest: int) -> Image.Image:
    """A copy no longer than `longest` on its longer side (huge uploads first, before any other work)."""
    if max(image.size) <= longest:
        return image
    image = image.copy()
    image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return image
