"""Grid speed: our batched grid (one pass per scheduler) vs the same cells one by one in diffusers.

Same process, same components, alternating A/B, median after a warm-up, reported as a ratio.

    python benchmarks/grid.py                               # bundled model, 4 x 4 grid, this machine
    python benchmarks/grid.py --model sd15-shaped --size 512 --dtype float16   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playground import schedulers  # noqa: E402
from playground.engine import Engine  # noqa: E402
from playground.schema import GenerateRequest, GridRequest
from playground.loading import LoadedModel, load_model, pick_device  # noqa: E402
from playground.settings import Settings  # noqa: E402

SCHEDULERS = ("Euler a", "DPM++ 2M Karras", "DDIM", "UniPC")
SCALES = (3.0, 5.0, 7.5, 10.0)


def engine_for(name: str, dtype: str, settings: Settings) -> Engine:
    if name != "sd15-shaped":
        settings.model, settings.dtype = name, dtype
        return Engine(load_model(settings), settings)
    from sd15_shaped import build

    device = pick_device("auto")
    torch_dtype = getattr(torch, dtype if dtype != "auto" else ("float16" if device.type == "cuda" else "float32"))
    pipe = build(torch_dtype, device.type)
    return Engine(LoadedModel(pipe, "sd15-shaped-random", "benchmarks/sd15_shaped.py", "benchmark", False, device,
                              torch_dtype), settings)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", help="bundled | sd15-shaped | a model dir or id")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=0, help="0 = native size")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--schedulers", type=int, default=4, help="rows (from %s)" % ", ".join(SCHEDULERS))
    ap.add_argument("--scales", type=int, default=4, help="columns (from %s)" % ", ".join(map(str, SCALES)))
    a = ap.parse_args()

    engine = engine_for(a.model, a.dtype, Settings(max_grid_cells=64, max_size=2048))
    size = a.size or engine.native_size
    seq, mine = measure(engine, SCHEDULERS[: a.schedulers], SCALES[: a.scales], a.steps, size, a.runs)
    device = engine.model.device
    hw = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    cells = a.schedulers * a.scales
    print(f"# Grid {a.schedulers} x {a.scales}, {engine.model.name} {size}x{size}, {a.steps} steps, "
          f"{str(engine.model.dtype).removeprefix('torch.')}, {hw}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| what | seconds (median of %d) | ratio |\n|---|---|---|" % a.runs)
    print(f"| {cells} cells one by one, diffusers StableDiffusionPipeline | {seq:.2f} | 1.00x |")
    print(f"| our grid, one batched pass per scheduler | {mine:.2f} | {mine / seq:.2f}x |")


def measure(engine: Engine, rows: tuple[str, ...], cols: tuple[float, ...], steps: int, size: int,
            runs: int) -> tuple[float, float]:
    """Median seconds: (the cells one by one through diffusers, our batched grid)."""
    req = GridRequest(GenerateRequest(prompt="a red circle on a blue background", negative_prompt="blurry", seed=1,
                                      steps=steps, width=size, height=size), schedulers=rows, columns=cols)
    base = engine.model.pipe
    ref = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                  unet=base.unet, scheduler=base.scheduler, safety_checker=None,
                                  feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    device = engine.model.device

    def ours():
        engine.grid(req)
        sync(device)

    def sequential():
        for name in rows:
            for g in cols:
                ref.scheduler = schedulers.make(name, base.scheduler.config)
                ref(req.base.prompt, negative_prompt=req.base.negative_prompt, num_inference_steps=steps, guidance_scale=g,
                    height=size, width=size, generator=torch.Generator("cpu").manual_seed(1))
        sync(device)

    ours(), sequential()  # warm-up
    times = {"ours": [], "sequential": []}
    for _ in range(runs):
        for name, fn in (("sequential", sequential), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["sequential"]), statistics.median(times["ours"])


if __name__ == "__main__":
    main()
