"""The bad-input table: one valid call per endpoint, and bad values per parameter with the words the
error must contain. Every endpoint with a parameter gets every row for it, so a new parameter brings
its rows to all of them. test_validation.py runs the whole table against the validators (fast);
test_reliability.py sends one row per parameter per endpoint over HTTP to a launched app."""

from __future__ import annotations

NAN = float("nan")
# a valid pose (one person, 18 keypoints) where the table says "POSE"
POSE_JSON = '{"people": [{"pose_keypoints_2d": [' + ", ".join(["10, 20, 1"] * 18) + ']}]}'

# One valid call per endpoint, by parameter name (the order is the API's).
VALID = {
    "/generate": dict(prompt="a red circle", negative_prompt="", seed=1, steps=3, cfg_scale=7.5, scheduler="Euler",
                      width=64, height=64, num_images=1, shift=0, refiner_start=0, skip_layer_guidance=0, model="",
                      cfg_stop=1.0),
    "/grid": dict(prompt="a red circle", negative_prompt="", seed=1, steps=2, schedulers=["Euler", "DDIM"],
                  columns="1, 5", width=64, height=64, axis="cfg", cfg_scale=7.5, models=[]),
    "/inspect": dict(prompt="a red circle", negative_prompt="", seed=1, steps=3, cfg_scale=7.5, scheduler="Euler",
                     width=64, height=64, attention_of="the prompt", refiner_start=0, model=""),
    "/attention": dict(prompt="a red circle", negative_prompt="", seed=1, steps=3, cfg_scale=7.5, scheduler="Euler",
                       width=64, height=64, attention_of="prompt", word="red", resolution="8x8", model=""),
    "/preprocess": dict(image="SCENE", mode="Canny edges from the photo", controlnet="canny", low=100, high=200,
                        resize="crop", width=64, height=64, detector="auto", hands=False, face=False, pose=""),
    "/pose": dict(image="PERSON", resize="crop", width=64, height=64, detector="mediapipe", hands=False, face=False),
    "/draw_pose": dict(pose="POSE", width=64, height=64),
    "/control": dict(image="SCENE", mode="Canny edges from the photo", controlnet="canny", low=100, high=200,
                     resize="crop", conditioning_scale=1.0, guidance_start=0.0, guidance_end=1.0,
                     prompt="a red circle", negative_prompt="", seed=1, steps=2, cfg_scale=7.5, scheduler="Euler",
                     width=64, height=64, num_images=1, detector="auto", hands=False, face=False, pose="", model=""),
}

# (bad value, words the message must contain); the first row of each is the one sent over HTTP
BAD = {
    "prompt": [(12, ["prompt", "text", "int"]), ("x" * 20_001, ["prompt", "20001", "limit"]),
               (["a"], ["prompt", "text"])],
    "negative_prompt": [(3.5, ["negative prompt", "text"]), ("y" * 20_001, ["negative prompt", "20001"])],
    "seed": [(-2, ["seed", "-2"]), (2**32, ["seed", "4294967296"]), ("abc", ["seed", "'abc'"]),
             ("", ["seed", "''"]), (1.5, ["seed", "1.5"]), (None, ["seed", "None"]), (NAN, ["seed", "nan"])],
    "steps": [(0, ["steps", "1 to 50", "0"]), (51, ["steps", "51"]), ("ten", ["steps", "'ten'"]),
              (2.5, ["steps", "2.5"]), (NAN, ["steps", "nan"]), (None, ["steps", "None"])],
    "cfg_scale": [(-1, ["CFG scale", "0 to 30", "-1"]), (31, ["CFG scale", "31"]), ("high", ["CFG scale", "high"]),
                  (NAN, ["CFG scale", "nan"]), (None, ["CFG scale", "None"])],
    "cfg_stop": [(1.5, ["CFG stop", "0 to 1", "1.5"]), (-0.1, ["CFG stop", "-0.1"]), ("half", ["CFG stop", "'half'"]),
                 (NAN, ["CFG stop", "nan"])],
    "scheduler": [("Nope", ["scheduler", "'Nope'", "DPM++ 2M"]), ("", ["scheduler", "''"]),
                  (None, ["scheduler", "None"]), (3, ["scheduler", "3"]), (["Euler"], ["scheduler", "['Euler']"]),
                  ({"a": 1}, ["scheduler", "{'a': 1}", "DDIM"])],
    "width": [(68, ["width", "multiple of 8", "68"]), (32, ["width", "64 to 128", "32"]),
              (100_000, ["width", "100000"]), ("wide", ["width", "'wide'"]), (NAN, ["width", "nan"])],
    "height": [(100, ["height", "multiple of 8", "100"]), (4096, ["height", "4096"]), (-8, ["height", "-8"])],
    "shift": [(2.0, ["shift 2", "flow-matching models (SD3)", "leave it at 0"]), (-1, ["shift", "0 to 20", "-1"]),
              (21, ["shift", "21"]), ("high", ["shift", "'high'"]), (NAN, ["shift", "nan"])],
    "refiner_start": [(0.8, ["refiner start 0.8", "needs an SDXL refiner", "--refiner"]),
                      (0.99, ["refiner start", "0 to 0.95", "0.99"]), ("x", ["refiner start", "'x'"])],
    "skip_layer_guidance": [(2.8, ["skip-layer guidance 2.8", "MMDiT (SD3)", "leave it at 0"]),
                            (-1, ["skip-layer guidance", "0 to 10", "-1"]), (NAN, ["skip-layer guidance", "nan"])],
    "num_images": [(0, ["number of images", "1 to 4", "0"]), (5, ["number of images", "5"]),
                   (2.5, ["number of images", "2.5"])],
    "schedulers": [(["Euler", "Nope"], ["'Nope'"]), ([], ["at least one scheduler"]),
                   (["Euler", "DDIM", "LMS", "Heun"], ["4 schedulers x 2 CFG scales = 8 cells", "limit is 6"]),
                   ([["Euler"]], ["scheduler", "['Euler']"])],
    "image": [(None, ["no image given"])],  # corrupt files: test_bad_uploads and test_control
    "mode": [("depth", ["control mode", "'depth'", "Canny edges from the photo"]), (None, ["control mode", "None"])],
    "controlnet": [("depth", ["ControlNet", "'depth'", "openpose"]),
                   ("openpose", ["Canny edges need the canny ControlNet"])],
    "low": [(-1, ["Canny low threshold", "-1"]), (300, ["Canny low threshold", "300"]), ("x", ["low", "'x'"])],
    "high": [(256, ["Canny high threshold", "256"]), (50, ["must not be above the high one (50)"])],
    "resize": [("zoom", ["resize mode", "'zoom'", "crop"])],
    "conditioning_scale": [(2.5, ["conditioning scale", "0 to 2", "2.5"]), (NAN, ["conditioning scale", "nan"])],
    "guidance_start": [(-0.1, ["guidance start", "-0.1"]), (1.0, ["guidance start (1) must be below"])],
    "guidance_end": [(1.5, ["guidance end", "1.5"]), (NAN, ["guidance end", "nan"])],
    "attention_of": [("both", ["attention of", "'both'", "'the prompt' ('prompt')"]), (3, ["attention of", "3"])],
    "word": [("zebra", ["word 'zebra'", "not among the prompt's tokens", "'red'"]), (7, ["word", "text", "int"])],
    "resolution": [("3x3", ["layer resolution '3x3'", "all, 4x4, 8x8"]), (8, ["layer resolution 8"])],
    "detector": [("yolo", ["pose detector", "'yolo'", "'mediapipe'"]), (None, ["pose detector", "None"])],
    "hands": [("yes", ["hands", "true or false", "'yes'"]), (2, ["hands", "2"])],
    "face": [(0.5, ["face", "true or false", "0.5"])],
    "pose": [(12, ["pose JSON", "text", "int"])],
    "model": [("sdxl", ["model", "loaded models", "'sdxl'"]), (3, ["model", "text", "3"])],
    "models": [(["sdxl"], ["model", "loaded models", "'sdxl'"]), ("sdxl", ["models", "list", "'sdxl'"])],
    "axis": [("sideways", ["grid axis", "'sideways'", "'Steps' ('steps')"]), (None, ["grid axis", "None"])],
    "columns": [("1, x", ["'x'"]), ("", ["empty"]), ("1, 45", ["CFG scale", "45"]), ("1-5 (+0)", ["above 0"]),
                   ("0-30 [7]", ["2 schedulers x 7 CFG scales = 14 cells"]), (None, ["CFG scales", "empty"]),
                   ({"a": 1}, ["CFG scales", "{'a': 1}"]), ([1, "x"], ["CFG scale", "'x'"])],
}

CASES = [(ep, name, value, words) for ep, params in VALID.items() for name in params for value, words in BAD[name]]
FIRST = [(ep, name, *BAD[name][0]) for ep, params in VALID.items() for name in params]  # one row per parameter


def case_id(endpoint: str, name: str, value) -> str:
    return f"{endpoint[1:]}-{name}={str(value)[:10]}"
