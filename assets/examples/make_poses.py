"""Draw the ControlNet tab's offline examples: OpenPose maps of the world's six poses, and a shapes scene.

    python assets/examples/make_poses.py

Each pose-<name>.png is a 512 px map drawn the way controlnet_aux draws a detected body (so it also
steers SD 1.5's OpenPose ControlNet); shapes.png is a scene for the Canny preprocessor.
"""

from pathlib import Path

from playground.tiny import world

HERE = Path(__file__).resolve().parent


def main() -> None:
    for pose in world.POSES:
        keypoints = world.pose_keypoints(pose, 64, 18, 96) * 4  # a centred figure at 512 px
        name = pose.removeprefix("with ").removeprefix("in a ").replace(" ", "-")
        world.pose_map(keypoints, size=512, canvas=512).save(HERE / f"pose-{name}.png")
    objects = [("yellow", "star", 150, 250, 190), ("purple", "ring", 370, 250, 170)]
    world.render_shapes(objects, "black", size=512).save(HERE / "shapes.png")


if __name__ == "__main__":
    main()
