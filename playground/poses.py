"""OpenPose keypoints as data: detection (controlnet_aux's OpenposeDetector or MediaPipe), the OpenPose
JSON that pose editors read and write, mirroring, presets, and drawing with controlnet_aux's own functions.

A pose is a list of people; each person has 18 body keypoints in OpenPose's COCO order (below), and
optionally 21 per hand and 70 for the face, every keypoint (x, y, confidence) with x and y in fractions
of the canvas (0..1), or None where it was not found. The JSON form is OpenPose's own:

    {"people": [{"pose_keypoints_2d": [x, y, c, ...], "hand_left_keypoints_2d": [...], ...}],
     "canvas_width": W, "canvas_height": H}

with x and y in pixels of the canvas and (0, 0, 0) for a missing point, the format A1111's and
ComfyUI's pose editors use. Left and right are the person's own.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from playground.errors import InvalidRequest

# OpenPose's 18 body keypoints (the COCO order its ControlNets were trained on)
BODY = ("nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
        "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
        "right eye", "left eye", "right ear", "left ear")
# each keypoint's mirror image: a person's right becomes their left
MIRROR = [BODY.index(name.replace("right", "LEFT").replace("left", "right").replace("LEFT", "left"))
          for name in BODY]
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))  # as controlnet_aux draws them (0-based)
DRAW_SIZE = 512  # maps are drawn with the longer side this long, then resized, as controlnet_aux does

Point = tuple[float, float, float] | None  # (x, y, confidence), x and y in 0..1

PRESETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "poses"


@dataclass(frozen=True)
class Person:
    body: tuple[Point, ...]  # 18, in BODY order
    left_hand: tuple[Point, ...] | None = None  # 21 when detected
    right_hand: tuple[Point, ...] | None = None
    face: tuple[Point, ...] | None = None  # 70 when detected

    @property
    def found(self) -> int:
        return sum(p is not None for p in self.body)


@dataclass(frozen=True)
class Pose:
    people: tuple[Person, ...]
    width: int  # the canvas the keypoints were found on (pixels): JSON's canvas_width / canvas_height
    height: int


@dataclass(frozen=True)
class Detection:
    """A pose found in a photo, its control map, and which detector found it and why that one."""

    pose: Pose
    control_map: Image.Image
    detector: str  # "openpose" or "mediapipe"
    why: str  # why this detector ran (auto's choice, or asked for)
    seconds: float  # detection alone


# ---------------------------------------------------------------- JSON

def _flat(points: tuple[Point, ...] | None, w: int, h: int) -> list[float]:
    out: list[float] = []
    for p in points or ():
        out += [0.0, 0.0, 0.0] if p is None else [round(p[0] * w, 2), round(p[1] * h, 2), round(p[2], 3)]
    return out


def to_json(pose: Pose) -> str:
    """OpenPose JSON, x and y in pixels of the pose's canvas."""
    w, h = pose.width, pose.height
    people = []
    for person in pose.people:
        entry = {"pose_keypoints_2d": _flat(person.body, w, h)}
        for key, points in (("hand_left_keypoints_2d", person.left_hand), ("hand_right_keypoints_2d", person.right_hand),
                            ("face_keypoints_2d", person.face)):
            if points is not None:
                entry[key] = _flat(points, w, h)
        people.append(entry)
    # one keypoint (x, y, confidence) per line: short lines to read and edit in a code box
    def points(values: list[float]) -> str:
        rows = (", ".join(json.dumps(v) for v in values[k: k + 3]) for k in range(0, len(values), 3))
        return "[\n      " + ",\n      ".join(rows) + "]"

    lines = ",\n".join("  {" + ",\n   ".join(f"{json.dumps(k)}: {points(v)}" for k, v in entry.items()) + "}"
                       for entry in people)
    return f'{{"canvas_width": {w}, "canvas_height": {h}, "people": [\n{lines}\n]}}'



def _points(values, count: int | None, what: str, w: float, h: float) -> tuple[Point, ...]:
    if not isinstance(values, list) or len(values) % 3 or any(
            not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) for v in values):
        raise InvalidRequest(f"pose JSON: {what} must be a list of numbers x, y, confidence (a multiple of 3 long)")
    if count is not None and len(values) != 3 * count:
        raise InvalidRequest(f"pose JSON: {what} has {len(values) // 3} keypoints; OpenPose's body has {count}")
    out = []
    for k in range(0, len(values), 3):
        x, y, c = values[k: k + 3]
        out.append(None if c <= 0 else (x / w, y / h, float(c)))
    return tuple(out)


def from_json(text) -> Pose:
    """A pose from OpenPose JSON (one object, or a list of them as some editors write); InvalidRequest
    saying what is wrong."""
    if text is not None and not isinstance(text, str):
        raise InvalidRequest(f"pose JSON must be text, got {type(text).__name__}")
    if not text or not text.strip():
        raise InvalidRequest("pose JSON is empty; detect a pose, pick a preset or paste OpenPose JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"pose JSON is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise InvalidRequest('pose JSON needs an object with a "people" list (OpenPose format)')
    w, h = data.get("canvas_width", 512), data.get("canvas_height", 512)
    for name, v in (("canvas_width", w), ("canvas_height", h)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (1 <= v <= 16384):
            raise InvalidRequest(f"pose JSON: {name} must be a number of pixels from 1 to 16384, got {v!r}")
    people = []
    for k, entry in enumerate(data["people"]):
        if not isinstance(entry, dict) or "pose_keypoints_2d" not in entry:
            raise InvalidRequest(f"pose JSON: person {k} has no pose_keypoints_2d")
        hands = {key: _points(entry[key], 21, f"person {k}'s {key}", w, h) if entry.get(key) else None
                 for key in ("hand_left_keypoints_2d", "hand_right_keypoints_2d")}
        people.append(Person(body=_points(entry["pose_keypoints_2d"], 18, f"person {k}'s pose_keypoints_2d", w, h),
                             left_hand=hands["hand_left_keypoints_2d"], right_hand=hands["hand_right_keypoints_2d"],
                             face=_points(entry["face_keypoints_2d"], 70, f"person {k}'s face_keypoints_2d", w, h)
                             if entry.get("face_keypoints_2d") else None))
    return Pose(tuple(people), int(w), int(h))


# ---------------------------------------------------------------- edits

def _flip(points: tuple[Point, ...] | None) -> tuple[Point, ...] | None:
    return None if points is None else tuple(None if p is None else (1.0 - p[0], p[1], p[2]) for p in points)


def mirror(pose: Pose) -> Pose:
    """Left-right mirrored: x -> width - x, and each keypoint's side swapped (the right hand, seen in a
    mirror, is a left hand)."""
    people = []
    for person in pose.people:
        flipped = _flip(person.body)
        people.append(Person(body=tuple(flipped[MIRROR[k]] for k in range(len(BODY))),
                             left_hand=_flip(person.right_hand), right_hand=_flip(person.left_hand),
                             face=_flip(person.face)))  # the face's 70 points keep their order: drawn as dots
    return replace(pose, people=tuple(people))


def presets() -> dict[str, Path]:
    """Preset name -> its OpenPose JSON file in assets/poses/."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.json"))}


def preset(name: str) -> Pose:
    files = presets()
    if name not in files:
        raise InvalidRequest(f"unknown pose preset {name!r}; choose one of: {', '.join(files)}")
    return from_json(files[name].read_text())


# ---------------------------------------------------------------- drawing

def _keypoints(points: tuple[Point, ...] | None, missing=None):
    """controlnet_aux Keypoints; a missing point as `missing` (None for the body; the hand and face drawings
    skip points at x, y <= 0 instead, so there it is (-1, -1))."""
    from controlnet_aux.open_pose.body import Keypoint

    if points is None:
        return None
    return [missing if p is None else Keypoint(p[0], p[1]) for p in points]


def draw(pose: Pose, width: int, height: int, hands: bool = True, face: bool = True) -> Image.Image:
    """The control map of `pose` at width x height, drawn by controlnet_aux's own functions as its
    detector draws: on a canvas with the longer side DRAW_SIZE, then resized (bilinear)."""
    import cv2
    from controlnet_aux.open_pose import util
    from controlnet_aux.open_pose.body import Keypoint

    scale = DRAW_SIZE / max(width, height)
    cw, ch = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((ch, cw, 3), dtype=np.uint8)
    for person in pose.people:
        canvas = util.draw_bodypose(canvas, _keypoints(person.body))
        off = Keypoint(-1.0, -1.0)
        if hands:
            canvas = util.draw_handpose(canvas, _keypoints(person.left_hand, off))
            canvas = util.draw_handpose(canvas, _keypoints(person.right_hand, off))
        if face:
            canvas = util.draw_facepose(canvas, _keypoints(person.face, off))
    return Image.fromarray(cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR))


def preload() -> None:
    """Import controlnet_aux's pose code and MediaPipe (seconds of imports), so the first pose request does
    not wait for them; the app calls this in a background thread at start."""
    try:
        from controlnet_aux.open_pose import util  # noqa: F401
    except Exception:  # reported when a pose is first drawn
        pass
    mediapipe_available()


# ---------------------------------------------------------------- detectors

# MediaPipe Pose's 33 landmarks -> OpenPose's 18 (the neck: the shoulders' midpoint)
MEDIAPIPE_TO_BODY = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25,
                     13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
VISIBLE = 0.5  # MediaPipe's visibility below which a landmark counts as not found


def mediapipe_available() -> str | None:
    """None when MediaPipe's legacy pose solution (models inside the wheel) imports, else why not."""
    try:
        import mediapipe as mp

        mp.solutions.pose  # noqa: B018: 0.10.30 and later removed it
    except Exception as exc:  # not installed, or a build without the legacy solutions
        return f"MediaPipe's pose solution is not available ({type(exc).__name__}: {exc})"
    return None


_MEDIAPIPE: list = []  # the one MediaPipe Pose graph of the process, made on first use
_MEDIAPIPE_LOCK = threading.Lock()  # a graph runs one image at a time


def detect_mediapipe(image: Image.Image) -> Pose:
    """The most prominent person in `image` by MediaPipe Pose (offline: its models ship in the wheel;
    model_complexity=1 is the one that needs no download). One person at most.

    One graph serves every request (static_image_mode: each image is detected on its own, nothing carries
    over): a graph made and closed per request kept about 3.7 MB of the process's memory each time
    (measured over 25 requests), so a public Space's memory grew with every pose it detected."""
    import mediapipe as mp

    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    with _MEDIAPIPE_LOCK:
        if not _MEDIAPIPE:
            _MEDIAPIPE.append(mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                     enable_segmentation=False))
        found = _MEDIAPIPE[0].process(rgb).pose_landmarks
    w, h = image.size
    if found is None:
        return Pose((), w, h)
    marks = found.landmark

    def point(i: int) -> Point:
        m = marks[i]
        ok = m.visibility >= VISIBLE and 0 <= m.x <= 1 and 0 <= m.y <= 1
        return (float(m.x), float(m.y), float(m.visibility)) if ok else None

    body: list[Point] = [None] * len(BODY)
    for k, i in MEDIAPIPE_TO_BODY.items():
        body[k] = point(i)
    left, right = point(11), point(12)
    if left is not None and right is not None:
        body[1] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2, min(left[2], right[2]))
    person = Person(tuple(body))
    return Pose((person,) if person.found else (), w, h)


def detect_openpose(detector, image: Image.Image, hands: bool = False, face: bool = False) -> Pose:
    """Every person controlnet_aux's OpenposeDetector finds in `image` (body; hands and face on request)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    found = detector.detect_poses(rgb, include_hand=hands, include_face=face)

    def points(kps, drop_outside: bool = False) -> tuple[Point, ...] | None:
        if kps is None:
            return None
        out = []
        for k in kps:
            missing = k is None or (drop_outside and (k.x < 0 or k.y < 0))
            out.append(None if missing else (float(k.x), float(k.y), float(getattr(k, "score", 1.0))))
        return tuple(out)

    w, h = image.size
    return Pose(tuple(Person(points(p.body.keypoints), points(p.left_hand, True), points(p.right_hand, True),
                             points(p.face, True)) for p in found), w, h)
