"""The procedural world the offline model is trained on: coloured shapes and stick-figure people.

Every scene comes from a seed, with an exact caption: one or two shapes (six kinds, eight colours,
three sizes, nine places) on a plain background, or a stick-figure person in one of six poses, drawn
from OpenPose's 18 body keypoints. The same keypoints drawn the way controlnet_aux draws them give
the OpenPose ControlNet its maps; OpenCV's Canny edges of a scene give the Canny ControlNet its maps.

    scene = sample(seed=7)        # Scene(caption=..., image=PIL 128x128, keypoints=... or None)
    pose_map(scene.keypoints)     # the controlnet_aux-style drawing of the figure's skeleton

Evaluation prompts are held out: a fully specified one-shape caption whose hash falls in
`held_out` is never a training caption (`sample` draws again), and `evaluation_prompts` draws from
exactly those.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw

SIZE = 128  # native resolution of the offline model

COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 70, 220),
    "purple": (140, 60, 200),
    "pink": (245, 130, 190),
}
BACKGROUNDS = {"white": (245, 245, 245), "black": (20, 20, 20), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
SIZES = {"small": (26, 34), "medium": (38, 48), "large": (54, 66)}  # bounding-box side in pixels
PLACES = {  # caption phrase -> centre as a fraction of the image
    "at the top left": (0.28, 0.28), "at the top": (0.5, 0.28), "at the top right": (0.72, 0.28),
    "on the left": (0.28, 0.5), "in the center": (0.5, 0.5), "on the right": (0.72, 0.5),
    "at the bottom left": (0.28, 0.72), "at the bottom": (0.5, 0.72), "at the bottom right": (0.72, 0.72),
}
POSES = ("standing", "waving", "with arms raised", "in a t-pose", "walking", "jumping")
PERSON_PLACES = {"on the left": 0.3, "in the center": 0.5, "on the right": 0.7}


def vocabulary() -> list[str]:
    """Every word the world's captions use: what the offline model can know (the UI names the others)."""
    phrases = [*COLOURS, *BACKGROUNDS, *SHAPES, *SIZES, *PLACES, *POSES, *PERSON_PLACES,
               "a", "an", "and", "person", "background"]
    return sorted({word for phrase in phrases for word in phrase.split()})


@dataclass
class Scene:
    caption: str
    image: Image.Image
    keypoints: np.ndarray | None = None  # (18, 2) pixel coordinates of a stick figure, OpenPose order
    canonical: str | None = None  # the scene in the evaluation's phrasing, when the caption says all of it another way
    objects: list = field(default_factory=list)  # shapes drawn, (colour, shape, cx, cy, side), in the caption's order
    background: str = ""  # the background's name, where the scene has one


# ---------------------------------------------------------------- shapes

def shape_polygon(shape: str, cx: float, cy: float, side: float) -> list[tuple[float, float]]:
    """The outline of a polygonal shape that fills a `side`-sized box centred on (cx, cy)."""
    r = side / 2
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "triangle":
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rho = 1.0 if k % 2 == 0 else 0.42
            pts.append((rho * math.cos(a), rho * math.sin(a) + 0.1))
    elif shape == "cross":
        w = 0.36
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    else:
        raise ValueError(f"{shape!r} is not a polygon")
    return [(cx + r * x, cy + r * y) for x, y in pts]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, side: float, fill, background) -> None:
    r = side / 2
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        if shape == "ring":
            h = r * 0.5
            draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=background)
    else:
        draw.polygon(shape_polygon(shape, cx, cy, side), fill=fill)


def shape_mask(shape: str, n: int = 32) -> np.ndarray:
    """The shape filling an n x n box: the analyser's template."""
    img = Image.new("L", (n * 4, n * 4), 0)
    draw_shape(ImageDraw.Draw(img), shape, n * 2, n * 2, n * 4, 255, 0)
    return np.asarray(img.resize((n, n), Image.BILINEAR)) > 127


# ---------------------------------------------------------------- people

# OpenPose/COCO body order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist,
# r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear. The person faces the
# viewer, so their right is the image's left. Units: figure height 1, x from the centre, y down.
_STANDING = np.array([
    (0, 0.08), (0, 0.2), (-0.12, 0.2), (-0.15, 0.37), (-0.16, 0.52), (0.12, 0.2), (0.15, 0.37), (0.16, 0.52),
    (-0.07, 0.53), (-0.08, 0.75), (-0.08, 0.97), (0.07, 0.53), (0.08, 0.75), (0.08, 0.97),
    (-0.03, 0.06), (0.03, 0.06), (-0.06, 0.08), (0.06, 0.08),
])
_POSE_CHANGES = {
    "standing": {},
    "waving": {3: (-0.26, 0.14), 4: (-0.24, -0.03)},
    "with arms raised": {3: (-0.18, 0.05), 4: (-0.22, -0.1), 6: (0.18, 0.05), 7: (0.22, -0.1)},
    "in a t-pose": {3: (-0.28, 0.2), 4: (-0.43, 0.2), 6: (0.28, 0.2), 7: (0.43, 0.2)},
    "walking": {3: (-0.18, 0.35), 4: (-0.12, 0.5), 6: (0.1, 0.36), 7: (0.2, 0.48),
                9: (-0.14, 0.74), 10: (-0.22, 0.95), 12: (0.1, 0.74), 13: (0.15, 0.97)},
    "jumping": {3: (-0.24, 0.08), 4: (-0.3, -0.06), 6: (0.24, 0.08), 7: (0.3, -0.06),
                9: (-0.18, 0.7), 10: (-0.12, 0.9), 12: (0.18, 0.7), 13: (0.12, 0.9)},
}
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13)]


def pose_keypoints(pose: str, cx: float, top: float, height: float, rng: random.Random | None = None) -> np.ndarray:
    """The 18 keypoints (pixels) of a figure in `pose`, `height` tall, its head's top at `top`."""
    unit = _STANDING.copy()
    for i, xy in _POSE_CHANGES[pose].items():
        unit[i] = xy
    if rng is not None:
        unit = unit + np.array([[rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02)] for _ in range(18)])
    return np.stack([cx + unit[:, 0] * height, top + unit[:, 1] * height], axis=1)


def draw_figure(draw: ImageDraw.ImageDraw, keypoints: np.ndarray, fill, scale: float = 1.0) -> None:
    """A stick figure: thick limbs with round joints and a round head."""
    height = keypoints[:, 1].max() - keypoints[0, 1] + 0.08 * 1  # nose to ankles, near enough
    width = max(2.0, height * 0.06) * scale
    pts = keypoints * scale
    for a, b in LIMBS:
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=fill, width=int(round(width)))
    for p in pts[1:14]:
        draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2, p[1] + width / 2], fill=fill)
    head = height * 0.09 * scale
    (x, y) = pts[0]
    draw.ellipse([x - head, y - head, x + head, y + head], fill=fill)


# controlnet_aux's body drawing (Apache-2.0, after lllyasviel/ControlNet's annotator): 17 limbs as
# ellipses 2*stickwidth wide in colours dimmed to 60%, then every keypoint as a radius-4 dot.
_AUX_LIMBS = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
              (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]
_AUX_COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]


def pose_map(keypoints: np.ndarray, size: int = SIZE, canvas: int = 512) -> Image.Image:
    """The OpenPose map of `keypoints` (pixels at `size`), drawn as controlnet_aux draws at 512 px."""
    img = np.zeros((canvas, canvas, 3), np.uint8)
    pts = keypoints * (canvas / size)
    stickwidth = 4
    for (i, j), colour in zip(_AUX_LIMBS, _AUX_COLOURS):
        (x1, y1), (x2, y2) = pts[i - 1], pts[j - 1]
        length = math.hypot(x1 - x2, y1 - y2)
        angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
        poly = cv2.ellipse2Poly((int((x1 + x2) / 2), int((y1 + y2) / 2)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(img, poly, [int(c * 0.6) for c in colour])
    for (x, y), colour in zip(pts, _AUX_COLOURS):
        cv2.circle(img, (int(x), int(y)), 4, colour, thickness=-1)
    return Image.fromarray(img).resize((size, size), Image.BILINEAR)


# ---------------------------------------------------------------- scenes

def _jitter(rgb, rng: random.Random, amount: int = 8):
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in rgb)


def held_out(caption: str) -> bool:
    """True for the captions kept for evaluation (one in eight fully specified one-shape captions)."""
    return hashlib.sha1(caption.encode()).digest()[0] % 8 == 0


def a(phrase: str) -> str:
    """The phrase with its article: "a red circle", "an orange star"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def one_shape_caption(size: str, colour: str, shape: str, place: str, background: str) -> str:
    return f"{a(f'{size} {colour} {shape}')} {place} on a {background} background"


def render_shapes(objects: list[tuple[str, str, float, float, float]], background: str,
                  rng: random.Random | None = None, size: int = SIZE) -> Image.Image:
    """Draw (colour, shape, cx, cy, side) objects, supersampled 2x for smooth edges."""
    rng = rng or random.Random(0)
    bg = _jitter(BACKGROUNDS[background], rng, 4)
    img = Image.new("RGB", (size * 2, size * 2), bg)
    draw = ImageDraw.Draw(img)
    for colour, shape, cx, cy, side in objects:
        draw_shape(draw, shape, cx * 2, cy * 2, side * 2, _jitter(COLOURS[colour], rng), bg)
    return img.resize((size, size), Image.LANCZOS)


# Phrasings of one object: the colour before the shape and after it. A causal text encoder's shape token
# has read a colour written before it, so with one word order alone the UNet can take the colour from the
# shape word and leave the colour word free to mean anything (it lit the background); with both orders
# the colour word is the one that always knows the colour.
OBJECT_PHRASES = ("{a} {size}{colour} {shape}", "{a} {size}{shape}, {colour},", "{a} {size}{shape} in {colour}")


def object_phrase(rng: random.Random, colour: str, shape: str, size: str | None = None) -> str:
    """"a large red square", "a large square, red," or "a large square in red" (half of them the first)."""
    template = OBJECT_PHRASES[0] if rng.random() < 0.5 else rng.choice(OBJECT_PHRASES[1:])
    first = f"{size} " if size else ""
    article = "an" if (first or (colour if template == OBJECT_PHRASES[0] else shape))[0] in "aeiou" else "a"
    return template.format(a=article, size=first, colour=colour, shape=shape)


def shape_caption(rng: random.Random, colour: str, shape: str, background: str, size: str | None = None,
                  place: str | None = None) -> str:
    """A training caption of a one-shape scene: the object's phrase, its place before or after it."""
    thing = object_phrase(rng, colour, shape, size)
    on = f"on a {background} background"
    roll = rng.random()
    if place and roll < 0.15:
        return f"{place}: {thing.rstrip(',')} {on}"
    if roll < 0.3:
        return f"{on}, {thing.rstrip(',')}" + (f" {place}" if place else "")
    return " ".join(w for w in (thing, place, on) if w).replace(", on", " on")


def _shape_scene(rng: random.Random) -> Scene:
    background = rng.choice(list(BACKGROUNDS))
    colour, shape, size_word, place = (rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(SIZES)),
                                       rng.choice(list(PLACES)))
    side = rng.uniform(*SIZES[size_word])
    fx, fy = PLACES[place]
    cx, cy = fx * SIZE + rng.uniform(-5, 5), fy * SIZE + rng.uniform(-5, 5)
    # the caption names what is drawn; a word may be left out (then any value fits it)
    said_size, said_place = size_word if rng.random() < 0.7 else None, place if rng.random() < 0.6 else None
    caption = shape_caption(rng, colour, shape, background, said_size, said_place)
    canonical = one_shape_caption(size_word, colour, shape, place, background) if said_size and said_place else None
    drawn = [(colour, shape, cx, cy, side)]
    return Scene(caption, render_shapes(drawn, background, rng), canonical=canonical, objects=drawn,
                 background=background)


TWO_PLACES = [("on the left", "on the right"), ("at the top", "at the bottom"),
              ("at the top left", "at the bottom right"), ("at the top right", "at the bottom left")]


def two_shape_caption(c1: str, s1: str, first: str, c2: str, s2: str, second: str, background: str) -> str:
    """The evaluation's phrasing of a two-shape scene."""
    return f"{a(f'{c1} {s1}')} {first} and {a(f'{c2} {s2}')} {second} on a {background} background"


def _two_shape_scene(rng: random.Random) -> Scene:
    background = rng.choice(list(BACKGROUNDS))
    (c1, c2), (s1, s2) = rng.sample(list(COLOURS), 2), (rng.choice(SHAPES), rng.choice(SHAPES))
    first, second = rng.choice(TWO_PLACES[:2] if rng.random() < 0.7 else TWO_PLACES[2:])
    objects = []
    for colour, shape, place in ((c1, s1, first), (c2, s2, second)):
        fx, fy = PLACES[place]
        objects.append((colour, shape, fx * SIZE + rng.uniform(-4, 4), fy * SIZE + rng.uniform(-4, 4), rng.uniform(30, 44)))
    said = [(c1, s1, first), (c2, s2, second)]
    named = list(objects)  # the drawn objects in the caption's order
    if rng.random() < 0.5:  # either object may be named first
        said.reverse()
        named.reverse()
    if rng.random() < 0.5:
        caption = two_shape_caption(*said[0], *said[1], background)
    else:
        (ca, sa, pa), (cb, sb, pb) = said
        caption = (f"{object_phrase(rng, ca, sa).rstrip(',')} {pa} and {object_phrase(rng, cb, sb).rstrip(',')} {pb}"
                   f" on a {background} background")
    canonical = two_shape_caption(c1, s1, first, c2, s2, second, background)
    return Scene(caption, render_shapes(objects, background, rng), canonical=canonical, objects=named,
                 background=background)


def _person_scene(rng: random.Random) -> Scene:
    background = rng.choice(list(BACKGROUNDS))
    colour, pose, place = rng.choice(list(COLOURS)), rng.choice(POSES), rng.choice(list(PERSON_PLACES))
    height = rng.uniform(70, 100)
    keypoints = pose_keypoints(pose, PERSON_PLACES[place] * SIZE + rng.uniform(-5, 5),
                               rng.uniform(8, SIZE - height - 8) + 0.05 * height, height, rng)
    bg = _jitter(BACKGROUNDS[background], rng, 4)
    img = Image.new("RGB", (SIZE * 2, SIZE * 2), bg)
    draw_figure(ImageDraw.Draw(img), keypoints, _jitter(COLOURS[colour], rng), scale=2.0)
    where = f" {place}" if rng.random() < 0.6 else ""
    caption = f"{a(colour)} person {pose}{where} on a {background} background"
    return Scene(caption, img.resize((SIZE, SIZE), Image.LANCZOS), keypoints)


MIX = {"shape": 0.45, "two": 0.30, "person": 0.25}  # the share of each kind of scene


def sample(seed: int, kind: str | None = None, mix: dict[str, float] | None = None) -> Scene:
    """The scene of `seed`: by default one shape 45%, two shapes 30%, people 25% (`mix` changes the shares);
    never a held-out scene (a caption that says all an evaluation prompt says, in any phrasing, is held out
    as that prompt is)."""
    mix = mix or MIX
    rng = random.Random(seed)
    while True:
        roll = rng.random() * sum(mix.values())
        pick = kind or ("person" if roll < mix["person"] else "two" if roll < mix["person"] + mix["two"] else "shape")
        scene = {"shape": _shape_scene, "two": _two_shape_scene, "person": _person_scene}[pick](rng)
        if not held_out(scene.canonical or scene.caption) and not held_out(scene.caption):
            return scene


def evaluation_prompts(n: int = 240, seed: int = 2026) -> list[dict]:
    """`n` fully specified one-shape prompts, all held out from training, with what each asks for."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        spec = dict(size=rng.choice(list(SIZES)), colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES),
                    place=rng.choice(list(PLACES)), background=rng.choice(list(BACKGROUNDS)))
        caption = one_shape_caption(**spec)
        if held_out(caption) and caption not in seen:
            seen.add(caption)
            out.append({"prompt": caption, **spec})
    return out


def two_shape_prompts(n: int = 60, seed: int = 2027) -> list[dict]:
    """`n` two-shape prompts, all held out from training, with the (colour, shape, place) of each object."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        background = rng.choice(list(BACKGROUNDS))
        (c1, c2), (s1, s2) = rng.sample(list(COLOURS), 2), (rng.choice(SHAPES), rng.choice(SHAPES))
        first, second = rng.choice(TWO_PLACES[:2])
        caption = two_shape_caption(c1, s1, first, c2, s2, second, background)
        if held_out(caption) and caption not in seen:
            seen.add(caption)
            out.append({"prompt": caption, "objects": [(c1, s1, first), (c2, s2, second)], "background": background})
    return out


def person_prompts(n: int = 48, seed: int = 2028) -> list[dict]:
    """`n` fully specified person prompts (colour, pose, place, background), all held out from training."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(100 * n):
        spec = dict(colour=rng.choice(list(COLOURS)), pose=rng.choice(POSES), place=rng.choice(list(PERSON_PLACES)),
                    background=rng.choice(list(BACKGROUNDS)))
        caption = f"{a(spec['colour'])} person {spec['pose']} {spec['place']} on a {spec['background']} background"
        if held_out(caption) and caption not in seen:
            seen.add(caption)
            out.append({"prompt": caption, **spec})
            if len(out) == n:
                break
    return out


def caption_pose(caption: str) -> str | None:
    """The pose a person caption names ("a red person waving ..." -> "waving")."""
    return next((p for p in POSES if f"person {p}" in caption), None)

