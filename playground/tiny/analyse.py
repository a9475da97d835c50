"""Read a picture of the procedural world back: its background, its objects' colours and shapes.

The analyser scores what the offline model draws (`evaluate.py`); it is itself checked on the
world's own renders, whose answers are known (`accuracy_on_ground_truth`).

- background: the median colour of the image's border, named by the nearest world background;
- objects: pixels far from the background, cleaned with a morphological opening, split into
  connected components (largest first);
- colour: the median colour of a component's inner pixels, named by the nearest world colour;
- shape: the component cropped to its bounding box, resized to 32x32 and compared with each shape's
  template: the one with the highest intersection over union;
- place: the world place whose centre is nearest the component's centre; size: the world size whose
  range of bounding-box sides is nearest the component's longer side;
- pose: a figure compared, the same way as a shape, with each pose's figure drawn by the world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw

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
    mask: np.ndarray | None = None  # bool (h, w): the component inside its bounding box

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2

    @property
    def place(self) -> str:
        """The world place (of the 9) whose centre is nearest this object's centre."""
        cx, cy = self.centre
        return min(world.PLACES, key=lambda p: (world.PLACES[p][0] * world.SIZE - cx) ** 2
                   + (world.PLACES[p][1] * world.SIZE - cy) ** 2)

    @property
    def size(self) -> str:
        """The world size whose range of sides is nearest this object's side (its longer bounding-box
        side over the share of the side that its shape fills: a star's points reach less far)."""
        side = max(self.bbox[2], self.bbox[3]) / extents()[self.shape]
        return min(world.SIZES, key=lambda s: max(world.SIZES[s][0] - side, side - world.SIZES[s][1], 0))

    @property
    def pose(self) -> str:
        """The world pose whose figure best overlaps this object (for a person)."""
        return classify(self.mask, pose_templates())[0]


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


@lru_cache(maxsize=1)
def extents(side: float = 44.0) -> dict[str, float]:
    """Each shape's longer bounding-box side, as the analyser finds it in a render, over the side it
    was drawn with (a star's thin points fade below the foreground threshold)."""
    out = {}
    for shape in world.SHAPES:
        _, _, w, h = analyse(world.render_shapes([("red", shape, 64, 64, side)], "white")).objects[0].bbox
        out[shape] = max(w, h) / side
    return out


@lru_cache(maxsize=1)
def pose_templates(n: int = 32, per_pose: int = 12) -> dict[str, list[np.ndarray]]:
    """Each pose's figures, drawn by the world as it draws people (jittered joints, several heights),
    each cropped to its bounding box and resized to n x n."""
    rng = random.Random(0)
    out: dict[str, list[np.ndarray]] = {}
    for pose in world.POSES:
        out[pose] = []
        for _ in range(per_pose):
            height = rng.uniform(70, 100)
            keypoints = world.pose_keypoints(pose, world.SIZE / 2, 10, height, rng)
            img = Image.new("L", (world.SIZE * 2, world.SIZE * 2), 0)
            world.draw_figure(ImageDraw.Draw(img), keypoints, 255, scale=2.0)
            mask = np.asarray(img.resize((world.SIZE, world.SIZE), Image.LANCZOS)) > 127
            ys, xs = np.nonzero(mask)
            crop = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].astype(np.uint8)
            out[pose].append(cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA) > 0)
    return out


def classify(mask: np.ndarray, candidates: dict[str, np.ndarray | list[np.ndarray]]) -> tuple[str, float]:
    """The candidate with a n x n template that best overlaps `mask` (cropped to its bounding box), and the IoU."""
    candidates = {k: t if isinstance(t, list) else [t] for k, t in candidates.items()}
    n = next(iter(candidates.values()))[0].shape[0]
    small = cv2.resize(mask.astype(np.float32), (n, n), interpolation=cv2.INTER_AREA) > 0.5
    scores = {k: max(float((small & t).sum() / max((small | t).sum(), 1)) for t in ts) for k, ts in candidates.items()}
    best = max(scores, key=scores.get)
    return best, scores[best]


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """The shape whose template best overlaps `mask` (a component cropped to its bounding box)."""
    return classify(mask, templates())


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
        objects.append(Found(colour, shape, area, (x, y, w, h), iou, comp[y:y + h, x:x + w]))
    objects.sort(key=lambda o: -o.area)
    return Analysis(_nearest(bg, world.BACKGROUNDS), objects, mask)


def accuracy_on_ground_truth(n: int = 600, seed: int = 1) -> dict[str, float]:
    """The analyser's accuracy on `n` one-shape renders of the world (colour, shape, background, place,
    size) and on n / 4 person renders (pose), whose answers are known."""
    rng = random.Random(seed)
    right = dict.fromkeys(("colour", "shape", "background", "place", "size"), 0)
    for _ in range(n):
        colour, shape, background = rng.choice(list(world.COLOURS)), rng.choice(world.SHAPES), rng.choice(list(world.BACKGROUNDS))
        size, place = rng.choice(list(world.SIZES)), rng.choice(list(world.PLACES))
        fx, fy = world.PLACES[place]
        image = world.render_shapes([(colour, shape, fx * world.SIZE, fy * world.SIZE, rng.uniform(*world.SIZES[size]))],
                                    background, rng)
        found = analyse(image)
        top = found.objects[0] if found.objects else None
        for key, want in (("colour", colour), ("shape", shape), ("place", place), ("size", size)):
            right[key] += bool(top and getattr(top, key) == want)
        right["background"] += found.background == background
    people = [world.sample(seed * 1000 + k, "person") for k in range(n // 4)]
    poses = sum(bool(f.objects) and f.objects[0].pose == world.caption_pose(s.caption)
                for s, f in ((s, analyse(s.image)) for s in people))
    return {**{k: v / n for k, v in right.items()}, "pose": poses / len(people)}


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


def limbs_drawn(keypoints: np.ndarray, image: Image.Image, radius: int = 3, share: float = 0.6) -> list[bool]:
    """For each of the world's 12 limbs (keypoint pairs), whether `share` of the points along it lie
    within `radius` px of a figure (non-background) pixel of `image`."""
    figure = _near(foreground_mask(np.asarray(image.convert("RGB")))[0], radius)
    out = []
    for i, j in world.LIMBS:
        t = np.linspace(0, 1, 12)[:, None]
        points = np.rint(keypoints[i] * (1 - t) + keypoints[j] * t).astype(int)
        points = np.clip(points, 0, np.array(figure.shape[::-1]) - 1)
        out.append(float(figure[points[:, 1], points[:, 0]].mean()) >= share)
    return out


def figure_precision(pose: Image.Image, image: Image.Image, radius: int = 3) -> float:
    """The share of the drawn figure's pixels within `radius` px of the pose map's skeleton: low for a
    thick silhouette that covers the skeleton without following its limbs."""
    skeleton = np.asarray(pose.convert("L")) > 20
    figure, _ = foreground_mask(np.asarray(image.convert("RGB")))
    return float((figure & _near(skeleton, radius)).sum() / max(figure.sum(), 1))


def skeleton_recall(pose: Image.Image, image: Image.Image, radius: int = 3) -> float:
    """The share of the pose map's skeleton pixels within `radius` px of a figure (non-background) pixel."""
    skeleton = np.asarray(pose.convert("L")) > 20
    figure, _ = foreground_mask(np.asarray(image.convert("RGB")))
    return float((skeleton & _near(figure, radius)).sum() / max(skeleton.sum(), 1))
