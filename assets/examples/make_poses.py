"""Draw the ControlNet tab's offline examples: OpenPose maps of the world's six poses, and a shapes scene.

    python assets/examples/make_poses.py

Each pose-<name>.png is the 512 px map of the preset assets/poses/<name>.json, drawn by controlnet_aux's
own functions (so it also steers SD 1.5's OpenPose ControlNet); shapes.png is a scene for the Canny
preprocessor.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: playground

from playground import poses
from playground.tiny import world

HERE = Path(__file__).resolve().parent


def main() -> None:
    for pose in world.POSES:
        name = pose.removeprefix("with ").removeprefix("in a ").replace(" ", "-")
        poses.draw(poses.preset(name), 512, 512).save(HERE / f"pose-{name}.png")
    objects = [("yellow", "star", 150, 250, 190), ("purple", "ring", 370, 250, 170)]
    world.render_shapes(objects, "black", size=512).save(HERE / "shapes.png")


if __name__ == "__main__":
    main()
