"""Walks: frames on the way from one picture to another, in one batch of our loop.

Between two prompts, every frame starts from the same seed's noise and is conditioned on a mix of the two
prompts' embeddings, (1 - t) A + t B (the negative prompt's as it is). Between two seeds, every frame has the
same prompt and starts from noise slerped between the two seeds' noise: spherical, because a straight line
through the middle of two Gaussian draws is too quiet, and a quiet start draws a blurred picture. The Engine's
`walk` runs the frames as one batch; they are written as a strip and as a looping GIF (`playground.outputs.save_walk`).
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from playground import latents


def mixes(frames: int) -> list[float]:
    """Where each frame stands on the way: 0, 1/(n-1), ..., 1."""
    return [k / (frames - 1) for k in range(frames)]


def slerped_noise(shape: tuple[int, ...], seed: int, to_seed: int, mix: list[float]) -> torch.Tensor:
    """(len(mix), C, h, w): each frame's starting noise, slerped from `seed`'s noise to `to_seed`'s (each of `shape`,
    drawn as the loop draws a seed's noise: on the CPU)."""
    a, b = (randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in (seed, to_seed))
    return torch.cat([latents.slerp(a, b, t) for t in mix])
