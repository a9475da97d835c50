"""Write the pose presets as OpenPose JSON (512 x 512 canvas): the offline world's six poses, plus
sitting and running.

    python assets/poses/make_presets.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: playground

import numpy as np

from playground import poses
from playground.tiny import world

HERE = Path(__file__).resolve().parent
CANVAS = 512

# Two poses the offline world does not draw, in its units (figure height 1, x from the centre, y down;
# the person's right on the image's left), body keypoints in OpenPose's order (poses.BODY).
EXTRA = {
    "sitting": [(0, 0.18), (0, 0.3), (-0.12, 0.3), (-0.15, 0.46), (-0.12, 0.6), (0.12, 0.3), (0.15, 0.46),
                (0.12, 0.6), (-0.07, 0.62), (-0.12, 0.68), (-0.12, 0.95), (0.07, 0.62), (0.12, 0.68), (0.12, 0.95),
                (-0.03, 0.16), (0.03, 0.16), (-0.06, 0.18), (0.06, 0.18)],
    "running": [(0.02, 0.08), (0, 0.2), (-0.12, 0.2), (-0.2, 0.32), (-0.1, 0.24), (0.12, 0.2), (0.17, 0.38),
                (0.27, 0.32), (-0.07, 0.53), (-0.2, 0.68), (-0.32, 0.8), (0.07, 0.53), (0.15, 0.68), (0.17, 0.95),
                (-0.01, 0.06), (0.05, 0.06), (-0.04, 0.08), (0.08, 0.08)],
}


def person(pixels: np.ndarray) -> poses.Person:
    return poses.Person(tuple((float(x) / CANVAS, float(y) / CANVAS, 1.0) for x, y in pixels))


def main() -> None:
    figures = {}
    for pose in world.POSES:  # a centred figure, as assets/examples/make_poses.py draws them
        name = pose.removeprefix("with ").removeprefix("in a ").replace(" ", "-")
        figures[name] = world.pose_keypoints(pose, 64, 18, 96) * (CANVAS / 128)
    for name, unit in EXTRA.items():
        unit = np.array(unit)
        figures[name] = np.stack([256 + unit[:, 0] * 384, 72 + unit[:, 1] * 384], axis=1)
    for name, pixels in figures.items():
        text = poses.to_json(poses.Pose((person(pixels),), CANVAS, CANVAS))
        (HERE / f"{name}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
