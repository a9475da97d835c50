"""The two offline models side by side: seconds per image at their default settings, and how close a few
steps come to each model's own 200-step picture (PSNR), on this machine's CPU, in one run.

The U-Net model (ε/v-prediction on a noise schedule) samples with DPM++ 2M Karras and DDIM; the MMDiT
(rectified flow) with Flow Euler, at each of --shifts (the flow's shift is chosen by this measurement).
A straighter path should need fewer steps: the PSNR at 5, 10 and 20 steps against the same model, prompt and
seed at 200 steps says how much.

    python benchmarks/offline_models.py
    python benchmarks/offline_models.py --mmdit assets/offline-mmdit --write    # the table in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from playground.engine import Engine  # noqa: E402
from playground.loading import load_model  # noqa: E402
from playground.schema import GenerateRequest
from playground.settings import BUNDLED_MODEL, Settings  # noqa: E402
from sections import write_section  # noqa: E402

PROMPTS = ["a large red square at the top left on a black background",
           "a small blue circle at the bottom right on a white background",
           "a large yellow triangle on the right on a gray background",
           "a green person with arms raised on a white background"]
STEPS = (5, 10, 20)


def engine_for(path: str) -> Engine:
    settings = Settings(model=path, device="cpu", max_steps=200)  # the 200-step references
    return Engine(load_model(settings), settings)


def image(engine: Engine, req: GenerateRequest) -> np.ndarray:
    return np.asarray(engine.generate(req).images[0].image, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def closeness(engine: Engine, scheduler: str, cfg: float, shift: float = 0.0, seeds: int = 2) -> dict[int, float]:
    """Mean PSNR (dB) at each of STEPS to the same prompt and seed at 200 steps."""
    out = {n: [] for n in STEPS}
    for prompt in PROMPTS:
        for seed in range(seeds):
            base = GenerateRequest(prompt=prompt, seed=seed, cfg_scale=cfg, scheduler=scheduler, shift=shift)
            reference = image(engine, dataclasses.replace(base, steps=200))
            for n in STEPS:
                out[n].append(psnr(image(engine, dataclasses.replace(base, steps=n)), reference))
    return {n: statistics.mean(v) for n, v in out.items()}


def seconds(engine: Engine, req: GenerateRequest, runs: int) -> float:
    engine.generate(req)  # warm-up
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.generate(req)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unet", default=str(BUNDLED_MODEL))
    ap.add_argument("--mmdit", default=str(ROOT / "assets" / "offline-mmdit"))
    ap.add_argument("--shifts", default="1,2,3")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt for the PSNR to 200 steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    unet, mmdit = engine_for(a.unet), engine_for(a.mmdit)
    rows = []
    for name, engine, scheduler, cfg, shift in (
            ("U-Net (v-prediction)", unet, "DPM++ 2M Karras", 7.5, 0.0), ("U-Net (v-prediction)", unet, "DDIM", 7.5, 0.0),
            *(("MMDiT (rectified flow)", mmdit, "Flow Euler", 5.0, float(s)) for s in a.shifts.split(","))):
        near = closeness(engine, scheduler, cfg, shift, a.seeds)
        took = seconds(engine, GenerateRequest(prompt=PROMPTS[0], seed=1, steps=25, cfg_scale=cfg, scheduler=scheduler,
                                               shift=shift), a.runs)
        label = f"{scheduler}" + (f", shift {shift:g}" if shift else "")
        rows.append(f"| {name} | {label}, CFG {cfg:g} | {took:.3f} s | "
                    + " | ".join(f"{near[n]:.1f} dB" for n in STEPS) + " |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"Both offline models on this machine's CPU ({a.threads} threads), 128 px, one run "
        "(`python benchmarks/offline_models.py`): seconds for one image at 25 steps (median of "
        f"{a.runs}), and the mean PSNR of {', '.join(map(str, STEPS))} steps to the same model, prompt and seed at "
        f"200 steps ({len(PROMPTS)} prompts x {a.seeds} seed(s)):",
        "",
        "| model | sampler | one image, 25 steps | " + " | ".join(f"{n} steps vs 200" for n in STEPS) + " |",
        "|---|---|---|" + "---|" * len(STEPS),
        *rows,
    ])
    print(table)
    if a.write:
        write_section(ROOT / "BENCHMARKS.md", "offline-models", "## The two offline models side by side", table)


if __name__ == "__main__":
    main()
