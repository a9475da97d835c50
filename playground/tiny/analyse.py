"""Read a picture of the procedural world back: its background, its objects' colours and shapes.

The analyser scores what the offline model draws (`evaluate.py`); it is itself checked on the
world's own renders, whose answers are known (`accuracy_on_ground_truth`).

- background: the median colour of the image's border, named by the nearest world background;
- objects: pixels far from the background, cleaned with a morphological opening, split into
  connected components (largest first);
- colour: the median colour of a component's inner pixels, named by the nearest world colour;
- shape: the component cropped to its bounding box, resized to 32x32 and compared with each shape's
  template: the one with the highest intersection over union.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from playground.tiny import world

FOREGROUND = 60.0  # RGB distance from the background above which a pixel belongs to an object
MIN_AREA = 40  # pixels; smaller components are noise


@dataclass
class Found:
    colour: str
    shape: str
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    iou: float  # with the chosen shape's template


@dataclass
class Analysis:
    background: str
    objects: list[Found]  # largest first
    foreground: np.ndarray  # bool (H, W): pixels that are not background


def _nearest(rgb: np.ndarray, names: dict[str, tuple[int, int, int]]) -> str:
    return min(names, key=lambda n: float(np.sum((rgb - np.array(names[n], np.float32)) ** 2)))


@lru_cache(maxsize=1)
def templates(n: int = 32) -> dict[str, np.ndarray]:
    """Each shape's mask, cropped to its own bounding box and resized to n x n, as a found object is."""
    out = {}
    for shape in world.SHAPES:
        mask = world.shape_mask(shape, 128)
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8)
        out[shape] = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA) > 0
    return out


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """The shape whose template best overlaps `mask` (a component cropped to its bounding box)."""
    small = cv2.resize(mask.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) > 0.5
    scores = {s: float((small & t).sum() / max((small | t).sum(), 1)) for s, t in templates().items()}
    best = max(scores, key=scores.get)
    return best, scores[best]


def foreground_mask(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of non-background pixels, background RGB) for an (H, W, 3) uint8 image."""
    border = np.concatenate([arr[:3].reshape(-1, 3), arr[-3:].reshape(-1, 3), arr[:, :3].reshape(-1, 3),
                             arr[:, -3:].reshape(-1, 3)]).astype(np.float32)
    bg = np.median(border, axis=0)
    dist = np.sqrt(((arr.astype(np.float32) - bg) ** 2).sum(-1))
    mask = cv2.morphologyEx((dist > FOREGROUND).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return mask.astype(bool), bg


def analyse(image: Image.Image) -> Analysis:
    arr = np.asarray(image.convert("RGB"))
    mask, bg = foreground_mask(arr)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    objects = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < MIN_AREA:
            continue
        comp = labels == k
        inner = cv2.erode(comp.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        pixels = arr[inner if inner.sum() >= 10 else comp].astype(np.float32)
        colour = _nearest(np.median(pixels, axis=0), world.COLOURS)
        shape, iou = classify_shape(comp[y:y + h, x:x + w])
        objects.append(Found(colour, shape, area, (x, y, w, h), iou))
    objects.sort(key=lambda o: -o.area)
    return Analysis(_nearest(bg, world.BACKGROUNDS), objects, mask)


def accuracy_on_ground_truth(n: int = 600, seed: int = 1) -> dict[str, float]:
    """Colour, shape and background accuracy of the analyser on `n` one-shape renders of the world."""
    rng = random.Random(seed)
    right = {"colour": 0, "shape": 0, "background": 0}
    for _ in range(n):
        colour, shape, background = rng.choice(list(world.COLOURS)), rng.choice(world.SHAPES), rng.choice(list(world.BACKGROUNDS))
        side = rng.uniform(*world.SIZES[rng.choice(list(world.SIZES))])
        fx, fy = world.PLACES[rng.choice(list(world.PLACES))]
        image = world.render_shapes([(colour, shape, fx * world.SIZE, fy * world.SIZE, side)], background, rng)
        found = analyse(image)
        top = found.objects[0] if found.objects else None
        right["colour"] += bool(top and top.colour == colour)
        right["shape"] += bool(top and top.shape == shape)
        right["background"] += found.background == background
    return {k: v / n for k, v in right.items()}


# ---------------------------------------------------------------- ControlNet scores

def _near(mask: np.ndarray, radius: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def edge_f1(wanted: np.ndarray, image: Image.Image, radius: int = 2, low: int = 100, high: int = 200) -> float:
    """F1 between the edge map asked for and the Canny edges of `image`, a match within `radius` px."""
    got = cv2.Canny(np.asarray(image.convert("RGB")), low, high) > 0
    wanted = wanted > 0
    if not got.any() or not wanted.any():
        return 0.0
    precision = float((got & _near(wanted, radius)).sum() / got.sum())
    recall = float((wanted & _near(got, radius)).sum() / wanted.sum())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def skeleton_recall(pose: Image.Image, image: Image.Image, radius: int = 3) -> float:
    """The share of the pose map's skeleton pixels within `radius` px of a figure (non-background) pixel."""
    skeleton = np.asarray(pose.convert("L")) > 20
    figure, _ = foreground_mask(np.asarray(image.convert("RGB")))
    return float((skeleton & _near(figure, radius)).sum() / max(skeleton.sum(), 1))
