"""Where CFG stops (an option beside the exact path that changes the picture): seconds for one picture with classifier-free guidance on
the first part of the steps only, against the same run guided to the end and against diffusers' own pipeline, and
what it costs in quality (PSNR to the picture guided to the end), on this machine's CPU, in one run.

The steps after the stop evaluate the prompt alone (half the batch), so a stop at 0.5 should save about a quarter of
the U-Net's time. The bundled offline model, 128 px, DPM++ 2M Karras, 25 steps, CFG 7.5, 2 threads; the times are
medians of --runs after a warm-up, the settings taking turns run by run.

    python benchmarks/cfg_stop.py
    python benchmarks/cfg_stop.py --write        # the table in BENCHMARKS.md ("Where CFG stops")
"""

from __future__ import annotations

import argparse
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
from playground.settings import Settings  # noqa: E402
from cpu_profile import reference_pipeline  # noqa: E402
from offline_models import PROMPTS, psnr  # noqa: E402
from sections import write_section  # noqa: E402

STOPS = (1.0, 0.8, 0.6, 0.4)


def measure(runs: int, seeds: int) -> tuple[dict[float, float], float, dict[float, list[float]]]:
    """(seconds per stop, diffusers' seconds, PSNRs per stop to the run guided to the end)."""
    settings = Settings(model="bundled", device="cpu")
    model = load_model(settings)
    engine = Engine(model, settings)
    base = GenerateRequest(prompt=PROMPTS[0], seed=1, steps=25, cfg_scale=7.5, scheduler="DPM++ 2M Karras")
    reference = reference_pipeline(model.pipe, base.scheduler)
    size = model.native_size

    def theirs():
        reference(base.prompt, num_inference_steps=base.steps, guidance_scale=base.cfg_scale, height=size,
                  width=size, generator=torch.Generator().manual_seed(1), output_type="pil")

    runners = {stop: (lambda stop=stop: engine.generate(GenerateRequest(**{**base.__dict__, "cfg_stop": stop})))
               for stop in STOPS}
    runners["diffusers"] = theirs
    took = {key: [] for key in runners}
    for fn in runners.values():
        fn()  # warm-up
    for _ in range(runs):
        for key, fn in runners.items():
            start = time.perf_counter()
            fn()
            took[key].append(time.perf_counter() - start)
    seconds = {key: statistics.median(v) for key, v in took.items()}

    def picture(prompt, seed, stop):
        req = GenerateRequest(**{**base.__dict__, "prompt": prompt, "seed": seed, "cfg_stop": stop})
        return np.asarray(engine.generate(req).images[0].image, dtype=np.float64)

    quality = {stop: [] for stop in STOPS[1:]}
    for prompt in PROMPTS:
        for seed in range(seeds):
            full = picture(prompt, seed, 1.0)
            for stop in quality:
                quality[stop].append(psnr(picture(prompt, seed, stop), full))
    return {s: seconds[s] for s in STOPS}, seconds["diffusers"], quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    seconds, theirs, quality = measure(a.runs, a.seeds)
    full = seconds[1.0]
    table = "\n".join([
        f"The bundled offline model, 128 px, DPM++ 2M Karras, 25 steps, CFG 7.5, {a.threads} CPU threads, median of "
        f"{a.runs} runs taking turns; quality: mean PSNR to the same prompt and seed guided to the end, "
        f"{len(PROMPTS)} prompts x {a.seeds} seeds (`python benchmarks/cfg_stop.py`):",
        "",
        "| CFG stops at | guided evaluations | one picture | ratio to guided to the end | ratio to diffusers | "
        "mean PSNR to guided to the end | lowest |",
        "|---|---|---|---|---|---|---|",
        *(f"| {stop:g} | {int(stop * 25)} of 25 | {s:.3f} s | {s / full:.2f}x | {s / theirs:.2f}x | "
          + (f"{statistics.mean(quality[stop]):.1f} dB | {min(quality[stop]):.1f} dB |" if stop in quality else
             "exact | |") for stop, s in seconds.items()),
        f"| diffusers' StableDiffusionPipeline (guided to the end) | 25 of 25 | {theirs:.3f} s | | 1.00x | | |",
    ])
    print(table)
    if a.write:
        write_section(ROOT / "BENCHMARKS.md", "cfg-stop", "## Where CFG stops: speed against quality", table)


if __name__ == "__main__":
    main()
