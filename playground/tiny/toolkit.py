"""What every trainer of the offline models shares (the U-Net model's stages, `stages.py`, and the MMDiT's,
`mmdit.py`): the world's scenes as batches and tensors, resumable checkpoints, the chunk budget (`--minutes`,
`--steps`), data parallelism over processes, the EMA and the progress line."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from playground.tiny import world

CFG_DROPOUT = 0.1  # the empty caption this often, so one model is both conditional and unconditional
SEED_STRIDE = {"vae": 0, "unet": 10_000_000, "canny": 20_000_000, "openpose": 30_000_000}


def to_tensor(images) -> torch.Tensor:
    """PIL images -> [B, 3, H, W] in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def batch(stage: str, step: int, size: int, kind: str | None = None, mix: dict[str, float] | None = None):
    first = SEED_STRIDE[stage] + step * size
    return [world.sample(first + i, kind, mix) for i in range(size)]


# ---------------------------------------------------------------- checkpoints

class Checkpoint:
    """`<run>/<stage>.pt`: the state to resume from, written atomically."""

    def __init__(self, run: Path, stage: str):
        self.path = Path(run) / f"{stage}.pt"

    def load(self):
        return torch.load(self.path, map_location="cpu", weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


def resume(state: dict | None, opt: torch.optim.Optimizer, **modules: torch.nn.Module) -> int:
    """Load a checkpoint's weights (by key) and optimiser state, when there are any; the step to go on from."""
    if not state:
        return 0
    for key, module in modules.items():
        module.load_state_dict(state[key])
    if "opt" in state:  # absent after `import` or for a decoder-only run: a fresh optimiser
        opt.load_state_dict(state["opt"])
    return state["step"]


class Budget:
    def __init__(self, minutes: float | None, steps: int | None):
        self.deadline = time.monotonic() + minutes * 60 if minutes else math.inf
        self.steps = steps

    def more(self, done_here: int) -> bool:
        return time.monotonic() < self.deadline and (self.steps is None or done_here < self.steps)


class Ranks:
    """Data parallelism over processes (`torchrun --nproc_per_node N`): the same model in each, every
    process on its own scenes, gradients averaged. On CPU, N single-thread processes beat one N-thread
    process (2 cores: 36 vs 27 samples/s for the UNet). Without torchrun: one process, no-ops."""

    def __init__(self):
        import os

        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.size > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params) -> None:
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, more: bool) -> bool:
        """Go on only while the first process's budget says so (every process stops at the same step)."""
        if self.size == 1:
            return more
        flag = torch.tensor([1.0 if more else 0.0])
        self.dist.broadcast(flag, src=0)
        return bool(flag.item())


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def log(stage: str, step: int, loss: float, started: float, seen: int) -> None:
    rate = seen / max(time.monotonic() - started, 1e-9)
    print(f"[{stage}] step {step:6d}  loss {loss:.4f}  {rate:6.1f} samples/s", flush=True)

