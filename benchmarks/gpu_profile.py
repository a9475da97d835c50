"""Where one generation's time goes: the top kernels by device time (torch.profiler), as a table.

    python benchmarks/gpu_profile.py profile.txt            # SD 1.5-shaped, 512 px, 25 steps, CFG 7.5 (GPU)
    python benchmarks/gpu_profile.py profile.txt --smoke    # the bundled model at 64 px, 2 steps (CPU)

Written by the prepared GPU call (gpu_run.py) so that a missed target can be aimed: attention,
convolutions, GroupNorm, copies, launch overhead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import grid as grid_bench  # noqa: E402

from playground.schema import GenerateRequest
from playground.settings import Settings  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    model, size, steps = ("bundled", 64, 2) if a.smoke else ("sd15-shaped", 512, 25)
    engine = grid_bench.engine_for(model, "auto", Settings(max_size=2048, max_steps=500))
    req = GenerateRequest(prompt="a red circle on a blue background", seed=1, steps=steps, cfg_scale=7.5,
                          width=size, height=size)
    engine.generate(req)  # warm-up: first-call allocations and kernel selection
    cuda = engine.model.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        engine.generate(req)
        if cuda:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"  # kernels by their own time
    table = prof.key_averages().table(sort_by=key, row_limit=a.top)
    a.out.write_text(f"# one generation: {engine.model.name}, {size}x{size}, {steps} steps, CFG 7.5, "
                     f"{engine.model.dtype}, sorted by {key}\n\n{table}\n")
    print(table)
    return a.out


if __name__ == "__main__":
    main()
