"""OpenPose from a photo: the pose as data (JSON, mirror, presets), drawing, MediaPipe on a real photo,
controlnet_aux's OpenposeDetector with random weights through the app's loader, and the offline chain."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from playground import poses
from playground.engine import Engine
from playground.loading import shown_source
from playground.preprocessors import PoseOptions
from playground.errors import InvalidRequest
from playground.schema import ControlRequest, GenerateRequest, PoseRequest
from playground.settings import ASSETS, Settings
from playground.tiny import world

from conftest import tiny_settings

SHAPES = ASSETS / "examples" / "shapes.png"


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    """scikit-image's photo of Eileen Collins (public domain, NASA), 512 x 512: one person, head and torso."""
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir, tmp_path_factory):
    """The tiny model with no OpenPose weights anywhere: auto falls back to MediaPipe."""
    return Engine(tiny_model, tiny_settings(tiny_dir, max_size=512, annotators=str(tmp_path_factory.mktemp("empty"))))


def body(pose: poses.Pose, name: str, person: int = 0):
    return pose.people[person].body[poses.BODY.index(name)]


# ---------------------------------------------------------------- the pose as data

def test_json_round_trip_in_openpose_format():
    pose = poses.Pose((poses.Person(tuple((0.1 + k / 40, 0.2 + k / 30, 0.9) if k != 4 else None for k in range(18)),
                                    left_hand=tuple((0.5, 0.5 + k / 100, 0.8) for k in range(21))),), 640, 480)
    text = poses.to_json(pose)
    data = json.loads(text)
    assert data["canvas_width"] == 640 and data["canvas_height"] == 480 and len(data["people"]) == 1
    flat = data["people"][0]["pose_keypoints_2d"]
    assert len(flat) == 54 and flat[:3] == [64.0, 96.0, 0.9] and flat[12:15] == [0.0, 0.0, 0.0]  # missing: 0, 0, 0
    assert len(data["people"][0]["hand_left_keypoints_2d"]) == 63 and "face_keypoints_2d" not in data["people"][0]
    back = poses.from_json(text)
    assert back.width == 640 and back.people[0].body[4] is None and back.people[0].right_hand is None
    assert np.allclose([p for p in back.people[0].body if p], [p for p in pose.people[0].body if p], atol=1e-2)
    assert poses.from_json(f"[{text}]") == back  # a one-item list, as some editors write


@pytest.mark.parametrize("text,words", [
    ("{people", "not valid JSON"), ("{}", '"people" list'), ("", "empty"), (12, "must be text, got int"),
    ('{"people": [{"pose_keypoints_2d": [1, 2, 1]}]}', "has 1 keypoints; OpenPose's body has 18"),
    ('{"people": [{"pose_keypoints_2d": [1, 2]}]}', "multiple of 3"),
    ('{"people": [{}]}', "person 0 has no pose_keypoints_2d"),
    ('{"people": [], "canvas_width": -5}', "canvas_width must be a number of pixels from 1 to 16384, got -5"),
    ('{"people": [{"pose_keypoints_2d": [' + ", ".join(['"a"'] * 54) + "]}]}", "list of numbers"),
])
def test_bad_pose_json_is_named(text, words):
    with pytest.raises(InvalidRequest, match=words):
        poses.from_json(text)


def test_mirror_swaps_sides_and_flips_x():
    pose = poses.preset("waving")  # the person's right hand (the image's left) is up
    flipped = poses.mirror(pose)
    rw, lw = body(pose, "right wrist"), body(flipped, "left wrist")
    assert lw[0] == pytest.approx(1 - rw[0]) and lw[1] == pytest.approx(rw[1])  # the raised hand is now the left
    assert body(flipped, "right wrist")[1] > body(flipped, "left wrist")[1]  # and the right one is down
    assert np.allclose(poses.mirror(flipped).people[0].body, pose.people[0].body)
    hand = poses.Person(pose.people[0].body, right_hand=((0.2, 0.3, 1.0),) * 21)
    assert poses.mirror(poses.Pose((hand,), 512, 512)).people[0].left_hand[0][0] == pytest.approx(0.8)
    # the drawing is the mirror image of the drawing
    a = np.asarray(poses.draw(pose, 256, 256), dtype=int)
    b = np.asarray(poses.draw(flipped, 256, 256), dtype=int)
    assert (np.abs(a.sum(-1) > 0) == np.abs(b[:, ::-1].sum(-1) > 0)).mean() > 0.98


def test_presets_are_openpose_json_and_draw_every_limb():
    names = list(poses.presets())
    assert set(names) == {"standing", "waving", "arms-raised", "t-pose", "walking", "jumping", "sitting", "running"}
    for name in names:
        pose = poses.preset(name)
        assert len(pose.people) == 1 and pose.people[0].found == 18 and (pose.width, pose.height) == (512, 512)
        drawn = np.asarray(poses.draw(pose, 512, 512), dtype=int).sum(-1) > 0
        for a, b in poses.LIMBS:  # pixels along every limb's middle
            (xa, ya, _), (xb, yb, _) = pose.people[0].body[a], pose.people[0].body[b]
            assert drawn[int((ya + yb) / 2 * 512), int((xa + xb) / 2 * 512)], (name, poses.BODY[a], poses.BODY[b])
    with pytest.raises(InvalidRequest, match="unknown pose preset 'dab'"):
        poses.preset("dab")


def test_the_drawing_is_what_the_offline_controlnet_was_trained_on():
    """world.pose_map (the offline ControlNet's training maps) and controlnet_aux's drawing agree."""
    keypoints = world.pose_keypoints("walking", 64, 18, 96)  # pixels at 128
    pose = poses.Pose((poses.Person(tuple((x / 128, y / 128, 1.0) for x, y in keypoints)),), 128, 128)
    ours = np.asarray(poses.draw(pose, 512, 512), dtype=int)
    theirs = np.asarray(world.pose_map(keypoints * 4, size=512, canvas=512), dtype=int)
    assert np.abs(ours - theirs).max() <= 1
    small = np.abs(np.asarray(poses.draw(pose, 128, 128), dtype=int) - np.asarray(world.pose_map(keypoints), dtype=int))
    assert small.mean() < 3  # at 128 px: the same map, resized by OpenCV instead of PIL


# ---------------------------------------------------------------- detection

def test_one_opencv_and_it_is_mediapipes_contrib_build():
    """controlnet_aux pulls in the headless build, MediaPipe the contrib one; both write cv2/: exactly one
    cv2 package is importable, and it is the contrib build requirements.txt names."""
    import importlib.metadata
    import sys
    from pathlib import Path

    import cv2

    folders = {str((Path(p) / "cv2").resolve()) for p in sys.path if p and (Path(p) / "cv2" / "__init__.py").is_file()}
    assert len(folders) == 1, folders
    assert importlib.metadata.version("opencv-contrib-python").startswith(cv2.__version__)
    assert hasattr(cv2, "xfeatures2d")  # contrib-only modules are there
    assert poses.mediapipe_available() is None


def test_mediapipe_finds_the_astronaut(engine, astronaut):
    start = time.perf_counter()
    d = engine.detect_pose(ControlRequest(image=str(astronaut), openpose=PoseOptions(detector="mediapipe"),
                                          base=GenerateRequest(width=512, height=512)))
    assert d.detector == "mediapipe" and d.why == "asked for" and time.perf_counter() - start < 30
    pose = d.pose
    assert len(pose.people) == 1 and (pose.width, pose.height) == (512, 512)
    # her face is at about x 0.35-0.55, y 0.1-0.35 of the photo; her shoulders at y 0.4-0.6, her right on
    # the image's left
    for name in ("nose", "right eye", "left eye"):
        x, y, _ = body(pose, name)
        assert 0.33 < x < 0.57 and 0.1 < y < 0.35, (name, x, y)
    rs, ls = body(pose, "right shoulder"), body(pose, "left shoulder")
    assert rs[0] < 0.35 < 0.5 < ls[0] and 0.38 < rs[1] < 0.6 and 0.38 < ls[1] < 0.6
    neck = body(pose, "neck")
    assert neck[0] == pytest.approx((rs[0] + ls[0]) / 2)
    # the map is the pose drawn, not black
    drawn = np.asarray(d.control_map, dtype=int)
    assert d.control_map.size == (512, 512) and (drawn.sum(-1) > 0).mean() > 0.005
    assert np.array_equal(drawn, np.asarray(poses.draw(pose, 512, 512), dtype=int))


def test_auto_says_why_it_used_mediapipe_and_no_person_is_an_error(engine, astronaut):
    d = engine.detect_pose(ControlRequest(image=str(astronaut), openpose=PoseOptions(hands=True),
                                          base=GenerateRequest(width=256, height=256)))
    assert d.detector == "mediapipe" and "chosen by auto: OpenPose's weights" in d.why and "could not be loaded" in d.why
    assert "MediaPipe draws the body only" in d.why and d.control_map.size == (256, 256)
    with pytest.raises(InvalidRequest, match="no person found in the photo by the mediapipe detector"):
        engine.detect_pose(ControlRequest(image=str(SHAPES), openpose=PoseOptions(detector="mediapipe")))
    with pytest.raises(InvalidRequest, match="could not be loaded.*PLAYGROUND_ANNOTATORS"):
        engine.detect_pose(ControlRequest(image=str(astronaut), openpose=PoseOptions(detector="openpose")))


def test_preprocess_and_draw_pose_through_the_engine(engine, astronaut):
    pose_map = engine.preprocess(ControlRequest(image=str(astronaut), mode="openpose", controlnet="openpose",
                                                openpose=PoseOptions(detector="mediapipe"), base=GenerateRequest(width=64,
                                                                                                       height=64)))
    assert pose_map.size == (64, 64) and np.asarray(pose_map).sum() > 0
    text = poses.to_json(poses.preset("t-pose"))
    drawn = engine.preprocess(ControlRequest(mode="pose", controlnet="openpose", pose=text,
                                             base=GenerateRequest(width=64, height=64)))
    assert np.array_equal(np.asarray(drawn), np.asarray(poses.draw(poses.preset("t-pose"), 64, 64)))
    image, back = engine.draw_pose(PoseRequest(text, 128, 64, mirror=True))
    assert image.size == (128, 64)
    assert np.allclose(poses.from_json(back).people[0].body, poses.mirror(poses.preset("t-pose")).people[0].body,
                       atol=1e-3)
    with pytest.raises(InvalidRequest, match="width must be a multiple of 8"):
        engine.draw_pose(PoseRequest(text, 100, 64))


def test_openpose_results_become_people_with_hands_and_face_and_all_are_drawn():
    """detect_openpose's conversion of controlnet_aux's results (pixels -> fractions done by it; missing hand
    and face points at -1), for two people, one with hands and a face; both drawn."""
    from controlnet_aux.open_pose import PoseResult
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    walking = poses.preset("walking").people[0].body
    shifted = [Keypoint(x - 0.2, y) for x, y, _ in walking]
    hand = [Keypoint(0.3 + k / 100, 0.5) if k % 5 else Keypoint(-1.0, -1.0) for k in range(21)]
    face = [Keypoint(0.5 + k / 1000, 0.2) for k in range(70)]

    class Fake:
        def detect_poses(self, image, include_hand=False, include_face=False):
            assert image.shape == (256, 256, 3) and include_hand and not include_face
            return [PoseResult(BodyResult([Keypoint(x + 0.2, y) for x, y, _ in walking[:-1]] + [None], 1.0, 17),
                               hand, None, None),
                    PoseResult(BodyResult(shifted, 1.0, 18), None, None, face)]

    pose = poses.detect_openpose(Fake(), Image.new("RGB", (256, 256)), hands=True)
    assert len(pose.people) == 2 and pose.people[0].found == 17 and pose.people[1].found == 18
    left = pose.people[0].left_hand
    assert len(left) == 21 and left[0] is None and left[1] == pytest.approx((0.31, 0.5, 1.0))
    assert pose.people[1].face[3] == pytest.approx((0.503, 0.2, 1.0)) and pose.people[1].left_hand is None
    again = poses.from_json(poses.to_json(pose))
    assert again.people[0].left_hand[0] is None and len(again.people[1].face) == 70
    drawn = np.asarray(poses.draw(pose, 512, 512), dtype=int).sum(-1) > 0
    for person in pose.people:  # both people: each one's neck-to-hip limb has pixels
        (xa, ya, _), (xb, yb, _) = person.body[1], person.body[8]
        assert drawn[int((ya + yb) / 2 * 512), int((xa + xb) / 2 * 512)]
    hands_off = np.asarray(poses.draw(pose, 512, 512, hands=False, face=False), dtype=int).sum(-1) > 0
    assert drawn.sum() > hands_off.sum()  # the hand and the face add their points and lines


@pytest.mark.slow
def test_openpose_detector_with_random_weights_through_the_apps_loader(tiny_model, tiny_dir, annotators_dir,
                                                                       astronaut):
    """The Annotators layout, written once per run with random weights, loaded lazily once and kept."""
    engine = Engine(tiny_model, tiny_settings(tiny_dir, max_size=512, annotators=str(annotators_dir)))
    req = ControlRequest(image=str(astronaut), openpose=PoseOptions(detector="auto"), base=GenerateRequest(width=512, height=512))
    try:
        d = engine.detect_pose(req)
        ran, why = d.detector, d.why
    except InvalidRequest as exc:  # random weights may find nobody: then the error names the detector
        ran, why = "openpose" if "by the openpose detector" in str(exc) else str(exc), ""
    assert ran == "openpose", why
    detector, source = engine.annotators.pose_detector(download=False)
    assert source == shown_source(str(annotators_dir)) and type(detector).__name__ == "OpenposeDetector"
    assert str(annotators_dir) not in why  # the page is told where, never the server's path
    assert engine.annotators.pose_detector(download=True)[0] is detector  # loaded once
    # hands and face run too (the networks are there); each adds its own pass
    people = poses.detect_openpose(detector, Image.open(astronaut).convert("RGB"), hands=True, face=True)
    assert isinstance(people, poses.Pose) and people.width == 512


@pytest.mark.slow
def test_offline_chain_photo_to_pose_to_the_offline_controlnet(astronaut, tmp_path):
    """photo -> MediaPipe -> pose map -> the offline model's OpenPose ControlNet -> an image."""
    from playground.loading import load_model

    settings = Settings(model="bundled", device="cpu", dtype="float32", output_dir=tmp_path,
                        annotators=str(tmp_path / "none"))
    engine = Engine(load_model(settings), settings)
    result = engine.control(ControlRequest(image=str(astronaut), mode="openpose", controlnet="openpose",
                                           base=GenerateRequest(prompt="a red person on a white background", seed=3,
                                                                steps=10, scheduler="DDIM")))
    assert result.controlnet.endswith("controlnet-openpose") and result.images[0].image.size == (128, 128)
    drawn = np.asarray(result.control_map, dtype=int).sum(-1) > 0
    picture = np.asarray(result.images[0].image, dtype=int)
    # a figure where the skeleton is: red pixels on the drawn skeleton, far more than elsewhere
    red = (picture[..., 0] > 150) & (picture[..., 1] < 110) & (picture[..., 2] < 110)
    assert red[drawn].mean() > 2 * red[~drawn].mean(), (red[drawn].mean(), red[~drawn].mean())


@pytest.mark.slow
def test_pose_endpoints_through_gradio_client(serve, astronaut):
    from gradio_client import handle_file

    _, client = serve()
    pose_map, text, file, info, mode, net = client.predict(handle_file(str(astronaut)), "crop", 64, 64, "mediapipe",
                                                           False, False, api_name="/pose")
    assert Image.open(pose_map).size == (64, 64) and "1 person found" in info and "by **mediapipe**" in info
    pose = poses.from_json(text)
    assert (pose.width, pose.height) == (64, 64) and poses.from_json(open(file).read()) == pose
    assert mode == "A pose as OpenPose JSON (detected, edited or a preset)" and net == "openpose"
    mirrored_map, mirrored, *_ = client.predict(text, 64, 64, api_name="/mirror_pose")
    assert np.allclose(poses.from_json(mirrored).people[0].body[poses.BODY.index("left shoulder")][:2],
                       (1 - body(pose, "right shoulder")[0], body(pose, "right shoulder")[1]), atol=0.02)
    drawn, *_ = client.predict(text, 128, 64, api_name="/draw_pose")
    assert Image.open(drawn).size == (128, 64)
    # preprocess and control take the pose modes too: a pose drawn, and generated from
    preset = poses.to_json(poses.preset("sitting"))
    control_map = client.predict(None, "pose", "openpose", 100, 200, "crop", 64, 64, "auto", False, False, preset,
                                 api_name="/preprocess")
    assert np.array_equal(np.asarray(Image.open(control_map)), np.asarray(poses.draw(poses.preset("sitting"), 64, 64)))
    with pytest.raises(Exception, match="no person found in the photo"):
        client.predict(handle_file(str(SHAPES)), "crop", 64, 64, "mediapipe", False, False, api_name="/pose")
    with pytest.raises(Exception, match="pose JSON is not valid JSON"):
        client.predict("{nope", 64, 64, api_name="/draw_pose")
