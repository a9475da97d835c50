"""Score the offline model on held-out prompts with the world's analyser, through the app's engine.

    python -m playground.tiny.evaluate                      # assets/offline-model, 240 prompts
    python -m playground.tiny.evaluate --model DIR --prompts 200 --json scores.json

Every image is made by `Engine.generate` / `Engine.control` (the code the tabs run), DDIM, 25 steps,
seed = the prompt's index. Printed, with the targets of the issue:
- the analyser's own accuracy on ground-truth renders (>= 98%);
- colour and shape right at CFG 7.5 (>= 85%, >= 70%), and the colour score at CFG 1.0 (>= 20 points lower);
- Canny ControlNet: edge F1 (2 px tolerance) between the input map and the output's Canny edges (>= 0.5);
- OpenPose ControlNet: the share of skeleton pixels within 3 px of the drawn figure (>= 0.6).
"""

from __future__ import annotations

import argparse
import json
import random
import textwrap
import time
from pathlib import Path
from statistics import mean

import numpy as np

from playground import settings as settings_mod
from playground.engine import Engine
from playground.requests import ControlRequest, GenerateRequest
from playground.loading import load_model
from playground.control import canny
from playground.tiny import analyse, world

TARGETS = {"analyser": 0.98, "colour": 0.85, "shape": 0.70, "cfg_gap": 0.20, "canny_f1": 0.5, "pose_recall": 0.6}


def engine_for(model: str) -> Engine:
    settings = settings_mod.Settings(model=model, device="cpu", safety_checker=False)
    return Engine(load_model(settings), settings)


def score_prompts(engine: Engine, prompts: list[dict], cfg: float, steps: int = 25) -> dict:
    right = {"colour": 0, "shape": 0, "both": 0}
    for i, p in enumerate(prompts):
        image = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=steps, cfg_scale=cfg,
                                                scheduler="DDIM")).images[0].image
        found = analyse.analyse(image).objects
        top = found[0] if found else None
        colour, shape = bool(top and top.colour == p["colour"]), bool(top and top.shape == p["shape"])
        right["colour"] += colour
        right["shape"] += shape
        right["both"] += colour and shape
    return {k: v / len(prompts) for k, v in right.items()}


def control_scenes(kind: str, n: int, seed: int) -> list[world.Scene]:
    """Held-out scenes (seeds far from any training seed) to take the control maps from."""
    return [world.sample(seed + i, "person" if kind == "openpose" else "shape") for i in range(n)]


def score_canny(engine: Engine, n: int, seed: int = 900_000_000) -> float:
    scores = []
    for i, scene in enumerate(control_scenes("canny", n, seed)):
        edges = canny(scene.image)
        out = engine.control(ControlRequest(image=edges, mode="image", controlnet="canny", base=GenerateRequest(
            prompt=scene.caption, seed=i, steps=25, scheduler="DDIM"))).images[0].image
        scores.append(analyse.edge_f1(np.asarray(edges.convert("L")), out))
    return mean(scores)


def score_openpose(engine: Engine, n: int, seed: int = 910_000_000) -> float:
    scores, rng = [], random.Random(seed)
    for i, scene in enumerate(control_scenes("openpose", n, seed)):
        pose = world.pose_map(scene.keypoints)
        # the prompt names no pose and no place: the map alone has to carry the figure
        prompt = f"{world.a(rng.choice(list(world.COLOURS)))} person on a {rng.choice(list(world.BACKGROUNDS))} background"
        out = engine.control(ControlRequest(image=pose, mode="image", controlnet="openpose", base=GenerateRequest(
            prompt=prompt, seed=i, steps=25, scheduler="DDIM"))).images[0].image
        scores.append(analyse.skeleton_recall(pose, out))
    return mean(scores)


def evaluate(model: str, n_prompts: int = 240, n_control: int = 40) -> dict:
    started = time.monotonic()
    engine = engine_for(model)
    prompts = world.evaluation_prompts(n_prompts)
    none = {"colour": None, "shape": None, "both": None}
    at_7 = score_prompts(engine, prompts, 7.5) if n_prompts else none
    at_1 = score_prompts(engine, prompts, 1.0) if n_prompts else none
    result = {
        "model": model,
        "prompts": n_prompts,
        "analyser": analyse.accuracy_on_ground_truth(),
        "cfg7.5": at_7,
        "cfg1.0": at_1,
        "cfg_gap": at_7["colour"] - at_1["colour"] if n_prompts else None,
        "canny_f1": score_canny(engine, n_control) if n_control else None,
        "pose_recall": score_openpose(engine, n_control) if n_control else None,
        "control_images": n_control,
    }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def report(r: dict) -> str:
    def line(name, value, target):
        if value is None:
            return f"{name:<42}     n/a   target >= {target:.0%}   not measured"
        return f"{name:<42} {value:7.1%}   target >= {target:.0%}   {'met' if value >= target else 'NOT MET'}"

    analyser = min(r["analyser"].values())
    return "\n".join([
        f"offline model evaluation: {r['model']}, {r['prompts']} held-out prompts, DDIM 25 steps ({r['seconds']} s)",
        line("analyser on ground truth (worst of colour/shape)", analyser, TARGETS["analyser"]),
        line("colour right, CFG 7.5", r["cfg7.5"]["colour"], TARGETS["colour"]),
        line("shape right, CFG 7.5", r["cfg7.5"]["shape"], TARGETS["shape"]),
        f"{'colour right, CFG 1.0':<42} {r['cfg1.0']['colour'] or 0:7.1%}   (shape {r['cfg1.0']['shape'] or 0:.1%})",
        line("CFG gap (colour 7.5 - colour 1.0)", r["cfg_gap"], TARGETS["cfg_gap"]),
        line(f"Canny ControlNet edge F1 ({r['control_images']} maps)", r["canny_f1"], TARGETS["canny_f1"]),
        line(f"OpenPose ControlNet skeleton recall ({r['control_images']} maps)", r["pose_recall"], TARGETS["pose_recall"]),
    ])


def sheet(model: str, path: Path, per_row: int = 6) -> None:
    """A labelled contact sheet of what the model draws: held-out prompts at CFG 7.5 and 1.0, then
    both ControlNets (map, result). For the README: `--sheet docs/offline-samples.png`."""
    from PIL import Image, ImageDraw

    engine = engine_for(model)
    cells: list[tuple[Image.Image, str]] = []
    for i, p in enumerate(world.evaluation_prompts(per_row)):
        img = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=25, scheduler="DDIM")).images[0].image
        cells.append((img, p["prompt"]))
    for i, p in enumerate(world.evaluation_prompts(per_row)):
        img = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=25, cfg_scale=1.0,
                                              scheduler="DDIM")).images[0].image
        cells.append((img, "same prompt, CFG 1.0"))
    for kind, scenes in (("canny", control_scenes("canny", per_row // 2, 900_000_000)),
                         ("openpose", control_scenes("openpose", per_row // 2, 910_000_000))):
        for i, scene in enumerate(scenes):
            cmap = canny(scene.image) if kind == "canny" else world.pose_map(scene.keypoints)
            prompt = scene.caption if kind == "canny" else f"{world.a(list(world.COLOURS)[i * 3 % 8])} person on a white background"
            out = engine.control(ControlRequest(image=cmap, mode="image", controlnet=kind, base=GenerateRequest(
                prompt=prompt, seed=i, steps=25, scheduler="DDIM"))).images[0].image
            cells += [(cmap, f"{kind} map"), (out, prompt)]
    w, h = 128 + 8, 128 + 50
    rows = (len(cells) + per_row - 1) // per_row
    canvas = Image.new("RGB", (per_row * w + 8, rows * h + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, text) in enumerate(cells):
        x, y = 8 + (k % per_row) * w, 8 + (k // per_row) * h
        canvas.paste(img.convert("RGB").resize((128, 128)), (x, y))
        draw.multiline_text((x, y + 130), textwrap.fill(text, 21), fill=(30, 30, 30), spacing=1)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(settings_mod.BUNDLED_MODEL))
    parser.add_argument("--prompts", type=int, default=240, help="held-out prompts (0: skip)")
    parser.add_argument("--control", type=int, default=40, help="control maps per ControlNet (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--sheet", type=Path, help="only draw a labelled sample sheet (PNG) to this path")
    args = parser.parse_args()
    if args.sheet:
        return sheet(args.model, args.sheet)
    result = evaluate(args.model, args.prompts, args.control)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
