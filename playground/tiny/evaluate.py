"""Score the offline model on held-out prompts with the world's analyser, through the app's engine.

    python -m playground.tiny.evaluate                      # assets/offline-model, 240 prompts
    python -m playground.tiny.evaluate --model DIR --prompts 200 --json scores.json
    python -m playground.tiny.evaluate --model assets/offline-model --model assets/offline-mmdit   # a column each

Every image is made by `Engine.generate` / `Engine.control` (the code the tabs run), DDIM (Flow Euler for a flow
model), 25 steps,
seed = the prompt's index, and read back by the analyser (`analyse.py`). Printed as one table, each
metric beside its target:
- the analyser's own accuracy on ground-truth renders (colour, shape, background, place, size, pose);
- one-shape prompts at CFG 7.5: colour, shape, place (of 9), background, size; colour at CFG 1.0; colour and shape
  at CFG 0 (the unconditional prediction alone, at chance), so what guidance adds shows from both ends;
- two-shape prompts: both objects right (colour, shape, and on the side the caption says);
- the VAE's ceiling: world scenes through the inspector's VAE round trip, read back the same way (a picture the
  decoder cannot draw, the model cannot either);
- person prompts: the figure's colour and pose;
- Canny ControlNet: edge F1 (2 px) between the map and the output's edges, and whether the drawn
  object's centre is within 8 px of the map's;
- OpenPose ControlNet: the share of skeleton pixels within 3 px of the drawn figure, and of the 12
  limbs with figure pixels along them.
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

from playground import schedulers
from playground.settings import BUNDLED_MODEL, Settings
from playground.engine import Engine
from playground.errors import ControlNetUnavailable
from playground.attention.capture import focus
from playground.schema import ControlRequest, GenerateRequest, InspectRequest, RoundTripRequest
from playground.loading import load_model
from playground.preprocessors import canny
from playground.tiny import analyse, world

# the project's goals for the offline models (DDIM 25 steps, CFG 7.5 unless named); metrics without one are
# reported alone
TARGETS = {"analyser": 0.98, "colour": 0.95, "shape": 0.92, "place": 0.90, "background": 0.95, "two_both": 0.70,
           "guidance": 0.15, "canny_f1": 0.6, "canny_follows": 0.90, "pose_recall": 0.75, "pose_limbs": 0.80,
           "focus_colour": 0.90, "focus_shape": 0.95, "two_focus_colour": 0.80, "two_focus_shape": 0.85}
FOLLOW_PX = 8  # Canny "follows": the drawn object's centre within this many pixels of the map's object


def sampler(engine: Engine) -> str:
    """The evaluation's scheduler: the first the registry lists for the model's family, the plain first-order
    sampler of its kind: DDIM for a noise-prediction model (the U-Net one), Flow Euler for a flow model (the MMDiT)."""
    return schedulers.fitting(engine.model.family.schedulers)[0]


CFG_STOP = 0.6  # a guidance interval measured beside CFG 7.5 on every step (docs/training.md: where over-guidance happens)


def engine_for(model: str, device: str = "auto") -> Engine:
    settings = Settings(model=model, device=device, safety_checker=False)
    return Engine(load_model(settings), settings)


def draw(engine: Engine, prompt: str, seed: int, cfg: float = 7.5, steps: int = 25, cfg_stop: float = 1.0):
    """What the model draws for `prompt`, as the Prompt tab makes it (DDIM), read back by the analyser."""
    image = engine.generate(GenerateRequest(prompt=prompt, seed=seed, steps=steps, cfg_scale=cfg, cfg_stop=cfg_stop,
                                            scheduler=sampler(engine))).images[0].image
    return analyse.analyse(image)


def score_prompts(engine: Engine, prompts: list[dict], cfg: float, steps: int = 25) -> dict:
    """One-shape prompts: the largest object's colour, shape, place and size, and the background."""
    keys = ("colour", "shape", "place", "size")
    right = dict.fromkeys((*keys, "both", "background"), 0)
    for i, p in enumerate(prompts):
        found = draw(engine, p["prompt"], i, cfg, steps)
        top = found.objects[0] if found.objects else None
        for k in keys:
            right[k] += bool(top and getattr(top, k) == p[k])
        right["both"] += bool(top and top.colour == p["colour"] and top.shape == p["shape"])
        right["background"] += found.background == p["background"]
    return {k: v / len(prompts) for k, v in right.items()}


def on_side(found: analyse.Found, place: str) -> bool:
    """Whether the object's centre is on the half of the image a two-shape caption puts it in."""
    cx, cy = found.centre
    half = world.SIZE / 2
    return {"on the left": cx < half, "on the right": cx > half, "at the top": cy < half,
            "at the bottom": cy > half}[place]


def score_two_shapes(engine: Engine, prompts: list[dict], cfg: float = 7.5, cfg_stop: float = 1.0) -> float:
    """The share of two-shape prompts with both objects right: colour, shape, and on their side."""
    right = 0
    for i, p in enumerate(prompts):
        found = draw(engine, p["prompt"], i, cfg, cfg_stop=cfg_stop).objects
        right += all(any(f.colour == c and f.shape == s and on_side(f, place) for f in found)
                     for c, s, place in p["objects"])
    return right / len(prompts)


def drawn_again(found: list[analyse.Found], obj: tuple, within: float = 20.0) -> bool:
    """Whether a scene's object (colour, shape, cx, cy, side) is found again: same colour and shape, centred within
    `within` pixels of where the world drew it."""
    colour, shape, cx, cy, _ = obj
    return any(f.colour == colour and f.shape == shape and abs(f.centre[0] - cx) < within
               and abs(f.centre[1] - cy) < within for f in found)


def score_round_trip(engine: Engine, n: int, seed: int = 920_000_000) -> dict:
    """The VAE's ceiling: the share of `n` one-shape and of `n` two-shape world scenes whose objects are all found
    again after the inspector's round trip (encode, decode)."""
    out = {}
    for kind in ("shape", "two"):
        scenes = [world.sample(seed + i, kind) for i in range(n)]
        found = [analyse.analyse(engine.roundtrip(RoundTripRequest(s.image)).reconstruction).objects for s in scenes]
        out[kind] = mean(all(drawn_again(f, obj) for obj in s.objects) for f, s in zip(found, scenes))
    return out


def score_people(engine: Engine, prompts: list[dict]) -> dict:
    """Person prompts: the figure's colour and pose."""
    right = {"colour": 0, "pose": 0}
    for i, p in enumerate(prompts):
        found = draw(engine, p["prompt"], i).objects
        right["colour"] += bool(found and found[0].colour == p["colour"])
        right["pose"] += bool(found and found[0].pose == p["pose"])
    return {k: v / len(prompts) for k, v in right.items()}


def word_maps(engine: Engine, prompt: str, seed: int, cfg: float = 7.5):
    """The analysis of what the model draws for `prompt` (as `draw` makes it), the kept tokens' texts and
    their cross-attention maps summed over every step and layer ((T, h, w), the inspector's summed view)."""
    traj = engine.inspect(InspectRequest(base=GenerateRequest(prompt=prompt, seed=seed, steps=25, cfg_scale=cfg,
                                                              scheduler=sampler(engine))))
    return analyse.analyse(traj.image), [t.text for t in traj.attention.kept], traj.attention.stack(None, "all")


def lands_on(heat: np.ndarray, found: analyse.Found | None, margin: float = 2.0) -> bool:
    """Whether a token map's focus (attention.focus) lies in the object's bounding box (`margin` px around it)."""
    if found is None:
        return False
    fx, fy = focus(heat)
    x, y, w, h = found.bbox
    px, py = fx * world.SIZE, fy * world.SIZE
    return x - margin <= px <= x + w + margin and y - margin <= py <= y + h + margin


def score_focus(engine: Engine, prompts: list[dict]) -> dict:
    """One-shape prompts: whether the colour word's and the shape word's maps focus on the drawn object
    (the largest one found; a prompt with no object found counts as a miss for both)."""
    right = {"colour": 0, "shape": 0}
    for i, p in enumerate(prompts):
        found, names, maps = word_maps(engine, p["prompt"], i)
        top = found.objects[0] if found.objects else None
        right["colour"] += lands_on(maps[names.index(p["colour"])], top)
        right["shape"] += lands_on(maps[names.index(p["shape"])], top)
    return {k: v / len(prompts) for k, v in right.items()}


def score_two_focus(engine: Engine, prompts: list[dict]) -> dict:
    """Two-shape prompts: whether each object's colour word and shape word focus on that object (the drawn
    object nearest the caption's side); four checks a prompt."""
    right = {"colour": 0, "shape": 0}
    for i, p in enumerate(prompts):
        found, names, maps = word_maps(engine, p["prompt"], i)
        start = 0
        for colour, shape, place in p["objects"]:
            k = names.index(colour, start)  # the colour word, then its shape right after it
            start = k + 2
            fx, fy = world.PLACES[place]
            mine = min(found.objects, default=None, key=lambda f: np.hypot(f.centre[0] - fx * world.SIZE,
                                                                          f.centre[1] - fy * world.SIZE))
            mine = mine if mine is not None and on_side(mine, place) else None
            right["colour"] += lands_on(maps[k], mine)
            right["shape"] += lands_on(maps[k + 1], mine)
    return {k: v / (2 * len(prompts)) for k, v in right.items()}


def control_scenes(kind: str, n: int, seed: int) -> list[world.Scene]:
    """Held-out scenes (seeds far from any training seed) to take the control maps from."""
    return [world.sample(seed + i, "person" if kind == "openpose" else "shape") for i in range(n)]


def score_canny(engine: Engine, n: int, seed: int = 900_000_000) -> dict:
    """Edge F1 between the map and the output's edges, and whether the object lands where the map's is."""
    f1, follows = [], 0
    for i, scene in enumerate(control_scenes("canny", n, seed)):
        edges = canny(scene.image)
        out = engine.control(ControlRequest(image=edges, mode="image", controlnet="canny", base=GenerateRequest(
            prompt=scene.caption, seed=i, steps=25, scheduler=sampler(engine)))).images[0].image
        f1.append(analyse.edge_f1(np.asarray(edges.convert("L")), out))
        want, got = analyse.analyse(scene.image).objects, analyse.analyse(out).objects
        follows += bool(want and got and np.hypot(*np.subtract(want[0].centre, got[0].centre)) <= FOLLOW_PX)
    return {"f1": mean(f1), "follows": follows / n}


def score_openpose(engine: Engine, n: int, seed: int = 910_000_000) -> dict:
    """The share of skeleton pixels on the drawn figure, of the skeleton's limbs drawn, and of the
    figure's pixels on the skeleton (a silhouette that only covers the skeleton scores low there)."""
    recall, precision, limbs, rng = [], [], [], random.Random(seed)
    for i, scene in enumerate(control_scenes("openpose", n, seed)):
        pose = world.pose_map(scene.keypoints)
        # the prompt names no pose and no place: the map alone has to carry the figure
        prompt = f"{world.a(rng.choice(list(world.COLOURS)))} person on a {rng.choice(list(world.BACKGROUNDS))} background"
        out = engine.control(ControlRequest(image=pose, mode="image", controlnet="openpose", base=GenerateRequest(
            prompt=prompt, seed=i, steps=25, scheduler=sampler(engine)))).images[0].image
        recall.append(analyse.skeleton_recall(pose, out))
        precision.append(analyse.figure_precision(pose, out))
        limbs += analyse.limbs_drawn(scene.keypoints, out)
    return {"recall": mean(recall), "precision": mean(precision), "limbs": mean(limbs)}


def evaluate(model: str, n_prompts: int = 240, n_control: int = 40, n_two: int = 120, n_people: int = 48,
             n_analyser: int = 600, device: str = "auto", n_focus: int = 120, n_round_trip: int = 200,
             low_cfg: bool = True) -> dict:
    started = time.monotonic()
    engine = engine_for(model, device)
    prompts = world.evaluation_prompts(n_prompts)
    at_7 = score_prompts(engine, prompts, 7.5) if n_prompts else None
    at_1 = score_prompts(engine, prompts, 1.0) if n_prompts and low_cfg else None
    at_0 = score_prompts(engine, prompts, 0.0) if n_prompts and low_cfg else None  # the unconditional prediction alone
    two = world.two_shape_prompts(n_two)
    two_both = score_two_shapes(engine, two) if n_two else None
    two_both_1 = score_two_shapes(engine, two, cfg=1.0) if n_two and low_cfg else None
    own = engine.model.cfg_scale  # the scale the app's forms start at for this model, when its marker names one
    at_own = score_prompts(engine, prompts, own) if n_prompts and own else None
    two_own = score_two_shapes(engine, two, cfg=own) if n_two and own else None
    two_stop = score_two_shapes(engine, two, cfg_stop=CFG_STOP) if n_two and low_cfg else None  # CFG 7.5 early on
    focus = score_focus(engine, prompts[:n_focus]) if n_focus else {}
    two_focus = score_two_focus(engine, two[:n_focus // 2]) if n_focus and two else {}
    ceiling = score_round_trip(engine, n_round_trip) if n_round_trip else {}
    canny_scores = score_canny(engine, n_control) if n_control else {}
    pose_scores = score_openpose(engine, n_control) if n_control else {}
    result = {
        "model": model,
        "prompts": n_prompts,
        "sampler": sampler(engine),
        "analyser": analyse.accuracy_on_ground_truth(n_analyser) if n_analyser else None,
        "cfg7.5": at_7,
        "cfg1.0": at_1,
        "cfg_gap": at_7["colour"] - at_1["colour"] if at_1 else None,
        "cfg0.0": at_0,
        # the second guidance metric: adherence at CFG 0 (the prompt unused) is at chance, and guidance adds
        # the rest; colour and shape right together, where chance is 1 in 48
        "guidance_from_0": at_7["both"] - at_0["both"] if at_0 else None,
        "two_shapes": n_two,
        "two_both": two_both,
        "two_both_cfg1": two_both_1,
        "guidance": two_both - two_both_1 if two_both_1 is not None else None,  # what guidance adds where the prompt is hard
        "own_cfg": own,
        "cfg_own": at_own,
        "two_both_own": two_own,
        "guidance_own": two_own - two_both_1 if two_own is not None and two_both_1 is not None else None,
        "two_both_stop": two_stop,
        "guidance_stop": two_stop - two_both_1 if two_stop is not None and two_both_1 is not None else None,
        "round_trip_scenes": n_round_trip,
        "round_trip_one": ceiling.get("shape"),
        "round_trip_two": ceiling.get("two"),
        "focus_prompts": n_focus,
        "focus_colour": focus.get("colour"),
        "focus_shape": focus.get("shape"),
        "two_focus_colour": two_focus.get("colour"),
        "two_focus_shape": two_focus.get("shape"),
        "people": n_people,
        "person": score_people(engine, world.person_prompts(n_people)) if n_people else None,
        "control_images": n_control,
        "canny_f1": canny_scores.get("f1"),
        "canny_follows": canny_scores.get("follows"),
        "pose_recall": pose_scores.get("recall"),
        "pose_limbs": pose_scores.get("limbs"),
        "pose_precision": pose_scores.get("precision"),
    }
    result["device"] = f"{engine.model.device.type} ({str(engine.model.dtype).removeprefix('torch.')})"
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def rows(r: dict) -> list[tuple[str, float | None, float | None]]:
    """Every metric of one evaluation: (name, figure, its goal or None)."""
    at_7, at_1, person = r["cfg7.5"] or {}, r["cfg1.0"] or {}, r["person"] or {}
    return [
        ("analyser on ground truth (worst of its checks)", min(r["analyser"].values()) if r["analyser"] else None,
         TARGETS["analyser"]),
        ("colour right", at_7.get("colour"), TARGETS["colour"]),
        ("shape right", at_7.get("shape"), TARGETS["shape"]),
        ("colour and shape right", at_7.get("both"), None),
        ("place right (of 9)", at_7.get("place"), TARGETS["place"]),
        ("background right", at_7.get("background"), TARGETS["background"]),
        ("size right (of 3)", at_7.get("size"), None),
        ("two shapes: both right, each on its side", r["two_both"], TARGETS["two_both"]),
        ("VAE round trip of one-shape world scenes: colour and shape found again", r.get("round_trip_one"), None),
        ("VAE round trip of two-shape world scenes: both found again (the decoder's ceiling)", r.get("round_trip_two"),
         None),
        ("person: colour right", person.get("colour"), None),
        ("person: pose right (of 6)", person.get("pose"), None),
        ("colour right at CFG 1.0", at_1.get("colour"), None),
        ("CFG gap (colour at 7.5 minus at 1.0)", r["cfg_gap"], None),
        ("two shapes both right at CFG 1.0", r.get("two_both_cfg1"), None),
        ("what guidance adds: two shapes both right, CFG 7.5 minus CFG 1.0", r.get("guidance"), TARGETS["guidance"]),
        ("colour and shape right at CFG 0 (the unconditional prediction alone; chance 1 in 48)",
         (r.get("cfg0.0") or {}).get("both"), None),
        ("what guidance adds from CFG 0: colour and shape right, CFG 7.5 minus CFG 0", r.get("guidance_from_0"),
         TARGETS["guidance"]),
        *own_rows(r),
        (f"two shapes both right at CFG 7.5 stopping at {CFG_STOP:g} (the app's \"CFG stops at\")", r.get("two_both_stop"),
         None),
        (f"what guidance adds stopping at {CFG_STOP:g}: two shapes both right, minus CFG 1.0", r.get("guidance_stop"), None),
        ("colour word's attention focus on its object (one shape)", r.get("focus_colour"), TARGETS["focus_colour"]),
        ("shape word's attention focus on its object (one shape)", r.get("focus_shape"), TARGETS["focus_shape"]),
        ("colour words' focus each on its own object (two shapes)", r.get("two_focus_colour"),
         TARGETS["two_focus_colour"]),
        ("shape words' focus each on its own object (two shapes)", r.get("two_focus_shape"), TARGETS["two_focus_shape"]),
        ("Canny ControlNet: edge F1 (2 px)", r["canny_f1"], TARGETS["canny_f1"]),
        (f"Canny ControlNet: follows (object within {FOLLOW_PX} px)", r["canny_follows"], TARGETS["canny_follows"]),
        ("OpenPose ControlNet: skeleton recall (3 px)", r["pose_recall"], TARGETS["pose_recall"]),
        ("OpenPose ControlNet: limbs drawn (of 12)", r["pose_limbs"], TARGETS["pose_limbs"]),
        ("OpenPose ControlNet: figure pixels on the skeleton (3 px)", r.get("pose_precision"), None),
    ]


def own_rows(r: dict) -> list[tuple[str, float | None, None]]:
    """The same prompts at the CFG the app starts this model at (its marker's `cfg_scale`), where it names one:
    reported beside CFG 7.5, never in its place (no goals)."""
    own, at_own = r.get("own_cfg"), r.get("cfg_own") or {}
    if not own:
        return []
    return [(f"at the model's own CFG {own:g}: {name}", at_own.get(key), None)
            for name, key in (("colour right", "colour"), ("shape right", "shape"), ("place right", "place"),
                              ("background right", "background"))] + [
        (f"at the model's own CFG {own:g}: two shapes both right", r.get("two_both_own"), None),
        (f"what guidance adds at CFG {own:g}: two shapes both right, minus CFG 1.0", r.get("guidance_own"), None)]


def report(*results: dict) -> str:
    """One table: every metric, one column per model evaluated (each with its verdict), and the target."""
    def cell(value: float | None, target: float | None) -> str:
        figure = "n/a" if value is None else f"{value:.1%}"
        if target is None or value is None:
            return figure
        return f"{figure} {'met' if value >= target else 'NOT MET'}"

    head = [f"{r['model']}: {r['prompts']} one-shape, {r['two_shapes']} two-shape and {r['people']} person held-out "
            f"prompts, {r['control_images']} maps per ControlNet; {r.get('sampler', 'DDIM')} 25 steps, CFG 7.5; on "
            f"{r.get('device', 'cpu')} ({r['seconds']} s)" for r in results]
    table = [rows(r) for r in results]
    lines = [*head, "", "| metric | " + " | ".join(Path(r["model"]).name for r in results) + " | target |",
             "|---|" + "---|" * len(results) + "---|"]
    targets = {name: target for t in table for name, _, target in t}  # every row in order; one a model lacks: n/a
    figures_of = [{name: value for name, value, _ in t} for t in table]
    for name, target in targets.items():
        figures = " | ".join(cell(f.get(name), target) for f in figures_of)
        lines.append(f"| {name} | {figures} | {'-' if target is None else f'>= {target:.0%}'} |")
    return "\n".join(lines)


def sheet(model: str, path: Path, per_row: int = 6) -> None:
    """A labelled contact sheet of what the model draws: held-out prompts at CFG 7.5 and 1.0, two-shape ones at
    the model's own CFG and at 7.5 (where its marker names a scale), then both ControlNets (map, result). For the
    README: `--sheet docs/offline-samples.png`."""
    from PIL import Image, ImageDraw

    engine = engine_for(model)
    cells: list[tuple[Image.Image, str]] = []
    for i, p in enumerate(world.evaluation_prompts(per_row)):
        img = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=25,
                                              scheduler=sampler(engine))).images[0].image
        cells.append((img, p["prompt"]))
    for i, p in enumerate(world.evaluation_prompts(per_row)):
        img = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=25, cfg_scale=1.0,
                                              scheduler=sampler(engine))).images[0].image
        cells.append((img, "same prompt, CFG 1.0"))
    own = engine.model.cfg_scale  # two-shape prompts at the model's own scale, then at 7.5: what too much guidance does
    for cfg in (own, 7.5) if own else ():
        for i, p in enumerate(world.two_shape_prompts(per_row)):
            img = engine.generate(GenerateRequest(prompt=p["prompt"], seed=i, steps=25, cfg_scale=cfg,
                                                  scheduler=sampler(engine))).images[0].image
            cells.append((img, f"CFG {cfg:g}: {p['prompt']}" if cfg == own else f"same prompt, CFG {cfg:g}"))
    for kind, scenes in (("canny", control_scenes("canny", per_row // 2, 900_000_000)),
                         ("openpose", control_scenes("openpose", per_row // 2, 910_000_000))):
        for i, scene in enumerate(scenes):
            cmap = canny(scene.image) if kind == "canny" else world.pose_map(scene.keypoints)
            prompt = scene.caption if kind == "canny" else f"{world.a(list(world.COLOURS)[i * 3 % 8])} person on a white background"
            try:
                out = engine.control(ControlRequest(image=cmap, mode="image", controlnet=kind, base=GenerateRequest(
                    prompt=prompt, seed=i, steps=25, scheduler=sampler(engine)))).images[0].image
            except ControlNetUnavailable:  # a model without this ControlNet (the MMDiT has none yet)
                break
            cells += [(cmap, f"{kind} map"), (out, prompt)]
    lines = max(len(textwrap.fill(text, 21).splitlines()) for _, text in cells)  # the longest label, whole
    w, h = 128 + 8, 128 + 10 + 12 * lines
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
    parser.add_argument("--model", action="append", default=None,
                        help="the model folder (default: the bundled U-Net model); again for one column per model")
    parser.add_argument("--prompts", type=int, default=240, help="held-out prompts (0: skip)")
    parser.add_argument("--control", type=int, default=40, help="control maps per ControlNet (0: skip)")
    parser.add_argument("--two", type=int, default=120,
                        help="held-out two-shape prompts (0: skip; each is 1/N of the figure: 2.5 points at 40)")
    parser.add_argument("--people", type=int, default=48, help="held-out person prompts (0: skip)")
    parser.add_argument("--analyser", type=int, default=600, help="ground-truth renders the analyser is checked on")
    parser.add_argument("--focus", type=int, default=120,
                        help="one-shape prompts whose words' attention is checked (half as many two-shape ones)")
    parser.add_argument("--round-trip", type=int, default=200,
                        help="world scenes of each kind (one shape, two) sent through the VAE round trip (0: skip)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present) | cuda | cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true",
                        help="CFG 7.5 only (no CFG 1.0 / CFG 0 rows, no two-shape guidance interval): a third of "
                        "the prompts' cost, to compare training runs")
    parser.add_argument("--sheet", type=Path, help="only draw a labelled sample sheet (PNG) to this path")
    args = parser.parse_args()
    models = args.model or [str(BUNDLED_MODEL)]
    if args.sheet:
        return sheet(models[0], args.sheet)
    results = [evaluate(model, args.prompts, args.control, args.two, args.people, args.analyser, args.device,
                        args.focus, args.round_trip, not args.quick) for model in models]
    print(report(*results))
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")


if __name__ == "__main__":
    main()
