"""Every benchmark in one process, written to BENCHMARKS.md as one table of ratios.

Against plain diffusers (same components and scheduler), alternating A/B, median after a warm-up:
one image, the 4x4 grid, the inspector's recording, peak GPU memory of each, and the app's cold
start and second-request latency. On a GPU use the SD 1.5-shaped model (published configs, random
weights, no download); on CPU the bundled model at a reduced size is the smoke test CI runs.

    python benchmarks/run_all.py --model sd15-shaped --size 512 --steps 25 --runs 5 --compile   # GPU
    python benchmarks/run_all.py --size 64 --steps 2 --runs 1                                    # CPU smoke
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import diffusers
import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import grid as grid_bench  # noqa: E402
import prompt as prompt_bench  # noqa: E402
import recording as recording_bench  # noqa: E402

from playground.schema import GenerateRequest, GridRequest, InspectRequest
from playground.loading import compile_model  # noqa: E402
from playground.settings import Settings  # noqa: E402


SOAK_HEADING = "## Soak"


def peak_memory(device: torch.device, fn) -> str:
    """Peak GPU memory allocated while fn runs, or n/a on CPU."""
    if device.type != "cuda":
        return "n/a (CPU)"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled", help="bundled | sd15-shaped | a model dir or id")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=0, help="0 = native size")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also measure the torch.compile'd path")
    ap.add_argument("--compile-backend", default="inductor", help="the torch.compile backend")
    ap.add_argument("--no-server", action="store_true", help="skip cold start (sd15-shaped always skips it)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "BENCHMARKS.md")
    a = ap.parse_args(argv)

    engine = grid_bench.engine_for(a.model, a.dtype, Settings(max_grid_cells=64, max_size=2048, max_steps=500))
    size = a.size or engine.native_size
    device = engine.model.device
    req = GenerateRequest(prompt="a red circle on a blue background", negative_prompt="blurry", seed=1,
                          steps=a.steps, cfg_scale=7.5, scheduler="DPM++ 2M Karras", width=size, height=size)
    rows: list[tuple[str, float, str, str]] = []  # (what, seconds, ratio, peak memory)

    # 1. One image: ours vs diffusers
    one = prompt_bench.loop_vs_diffusers(engine, req, a.runs)
    base = one["diffusers StableDiffusionPipeline"]
    memory = {"diffusers StableDiffusionPipeline": prompt_bench.diffusers_call(engine, req),
              "ours (Engine.generate)": lambda: engine.generate(req),
              "ours + live preview every step": lambda: engine.generate(req, on_progress=lambda p: None)}
    for what, sec in one.items():
        rows.append((f"one image: {what}", sec, f"{sec / base:.2f}x", peak_memory(device, memory[what])))

    # 2. The 4 x 4 grid vs its 16 cells one by one
    seq, mine = grid_bench.measure(engine, grid_bench.SCHEDULERS, grid_bench.SCALES, a.steps, size, a.runs)
    rows.append(("4x4 grid: 16 cells one by one through diffusers", seq, "1.00x", "-"))
    greq = GridRequest(GenerateRequest(prompt=req.prompt, seed=1, steps=a.steps, width=size, height=size),
                       schedulers=grid_bench.SCHEDULERS, columns=grid_bench.SCALES)
    rows.append(("4x4 grid: ours, batched per scheduler", mine, f"{mine / seq:.2f}x",
                 peak_memory(device, lambda: engine.grid(greq))))

    # 3. Recording overhead and state size
    rec, nbytes, attention_bytes = recording_bench.measure(engine, req, a.runs)
    plain, recorded, attended = rec.values()
    rows.append(("inspector: generate without recording", plain, "1.00x", "-"))
    rows.append((f"inspector: recording every step ({(nbytes - attention_bytes) / 1e6:.2f} MB state)", recorded,
                 f"{recorded / plain:.3f}x", peak_memory(device, lambda: engine.inspect(InspectRequest(req, "off")))))
    rows.append((f"inspector: + cross-attention maps ({attention_bytes / 1e6:.2f} MB more), ratio to recording",
                 attended, f"{attended / recorded:.3f}x", peak_memory(device, lambda: engine.inspect(req))))

    # 4. Optional: torch.compile (inductor), compile time included once
    if a.compile:
        start = time.perf_counter()
        compile_model(engine.model, a.compile_backend)  # in place: the engine reads its modules from the pipeline
        engine.warm_up()
        engine.generate(req)  # compile at the measured size too
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(a.runs):
            grid_bench.sync(device)
            t0 = time.perf_counter()
            engine.generate(req)
            grid_bench.sync(device)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        rows.append((f"one image: ours with --compile (compile + warm-up {compile_s:.0f} s)", sec, f"{sec / base:.2f}x",
                     peak_memory(device, lambda: engine.generate(req))))

    # 5. The app: cold start and second request (real app.py process; the bundled or a real model)
    server = {}
    if not a.no_server and a.model != "sd15-shaped":
        server = prompt_bench.server(req, max(a.runs, 1), a.model)

    hw = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run_all.py {' '.join(argv if argv is not None else sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"- hardware: {hw}",
        f"- versions: torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}",
        f"- model: {engine.model.name} at {size}x{size}, {str(engine.model.dtype).removeprefix('torch.')}, "
        f"{a.steps} steps DPM++ 2M Karras, CFG 7.5; median of {a.runs} after a warm-up, alternating A/B",
        "",
        "| what | seconds | ratio to its baseline | peak GPU memory |",
        "|---|---|---|---|",
        *[f"| {w} | {s:.3f} | {r} | {m} |" for w, s, r, m in rows],
    ]
    if server:
        lines += ["", "| the app (app.py, through gradio_client) | seconds |", "|---|---|",
                  *[f"| {k} | {v:.2f} |" for k, v in server.items()]]
    kept = ""  # the soak's section (benchmarks/soak.py writes it) stays as it was
    if a.out.exists() and SOAK_HEADING in a.out.read_text():
        kept = "\n" + a.out.read_text()[a.out.read_text().index(SOAK_HEADING):]
    a.out.write_text("\n".join(lines) + "\n" + kept)
    print("\n".join(lines))
    return a.out


if __name__ == "__main__":
    main()
