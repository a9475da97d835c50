"""Inspector recording overhead: the same generation with and without recording every step, and with
the cross-attention maps recorded on top.

Same process, alternating A/B/C, median after a warm-up, reported as ratios; plus the state sizes.

    python benchmarks/recording.py                    # bundled model
    python benchmarks/recording.py --model sd15-shaped --size 512 --steps 50 --dtype float16   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import engine_for, sync  # noqa: E402

from playground.schema import GenerateRequest, InspectRequest
from playground.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()

    engine = engine_for(a.model, a.dtype, Settings(max_size=2048, max_steps=200))
    size = a.size or engine.native_size
    req = GenerateRequest(prompt="a red circle on a blue background", negative_prompt="blurry", seed=1, steps=a.steps,
                          cfg_scale=7.5, scheduler="DPM++ 2M Karras", width=size, height=size)
    med, nbytes, attention_bytes = measure(engine, req, a.runs)
    base = med[PLAIN]
    device = engine.model.device
    hw = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# Recording overhead, {engine.model.name} {size}x{size}, {a.steps} steps, {hw}, {time.strftime('%Y-%m-%d')}\n")
    print(f"| what | seconds (median of {a.runs}) | ratio to no recording | ratio to plain recording |\n|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v / base:.3f}x | {v / med[RECORD]:.3f}x |")
    print(f"\nState kept per session: {nbytes / 1e6:.2f} MB for {req.steps} steps at {size}x{size}, of which the "
          f"attention maps {attention_bytes / 1e6:.2f} MB.")


PLAIN = "generate (no recording)"
RECORD = "inspect (records x_t, x0, 3 model outputs per step)"
ATTENTION = "inspect + cross-attention maps per token"


def measure(engine, req: GenerateRequest, runs: int) -> tuple[dict[str, float], int, int]:
    """Median seconds without recording, recording, and recording with attention maps (alternating); the
    recorded state's size with attention maps, and theirs alone."""
    device = engine.model.device
    variants = {PLAIN: lambda: engine.generate(req),
                RECORD: lambda: engine.inspect(InspectRequest(req, "off")),
                ATTENTION: lambda: engine.inspect(InspectRequest(req, "prompt"))}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    traj = engine.inspect(InspectRequest(req, "prompt"))
    return {k: statistics.median(v) for k, v in times.items()}, traj.nbytes + traj.attention.nbytes, traj.attention.nbytes


if __name__ == "__main__":
    main()
