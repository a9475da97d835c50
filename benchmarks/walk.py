"""Walk speed: 16 frames of the bundled offline model in one batch, between two prompts and between two seeds, at
12 and 25 steps of DPM++ 2M Karras, 128 px, on this machine's CPU (the project's goal: 16 frames in at most 4 s).

    python benchmarks/walk.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground import walks  # noqa: E402
from playground.engine import Engine  # noqa: E402
from playground.loading import load_model  # noqa: E402
from playground.schema import GenerateRequest, WalkRequest
from playground.settings import Settings  # noqa: E402

TO = "a blue square at the bottom right on a black background"


def main() -> None:
    torch.set_num_threads(2)
    settings = Settings(model="bundled", device="cpu")
    engine = Engine(load_model(settings), settings)
    base = GenerateRequest(prompt="a red circle at the top left on a white background", seed=1, steps=12,
                           scheduler="DPM++ 2M Karras")
    engine.walk(WalkRequest(base=base, to_prompt=TO, frames=2))  # warm-up
    for steps in (12, 25):
        for between in ("prompts", "seeds"):
            req = WalkRequest(base=GenerateRequest(**{**base.__dict__, "steps": steps}), between=between,
                              to_prompt=TO, to_seed=7, frames=16)
            start = time.perf_counter()
            engine.walk(req)
            print(f"{steps} steps, between {between}: 16 frames in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
