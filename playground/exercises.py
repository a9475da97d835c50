"""The lesson's three exercises, answered on a real model: the VAE's compression over resolutions, what
classifier-free guidance does to the prediction as its scale grows, and how a sampler's error falls with its
step count (and where doubling the steps stops paying).

Pure functions over numbers and tensors: the compression needs only the VAE's factor and channels, the CFG
response one recorded step's two predictions (a Trajectory's out_uncond and out_cond), the step quality a list
of (steps, error) pairs, from a model's runs against a long reference or from `toy_step_errors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZES = (256, 512, 768, 1024)  # pixels a side
CFG_SCALES = tuple(float(s) for s in range(1, 21))  # 1 to 20
STEP_COUNTS = (5, 10, 20, 40, 80, 160)  # each the double of the one before: the knee compares neighbours
KNEE_GAIN = 0.10  # the knee: the first count from which doubling the steps cuts the error by less than this


@dataclass(frozen=True)
class Compression:
    size: int  # pixels a side (square)
    pixel_numbers: int  # size x size x 3
    latent_numbers: int  # (size / factor)^2 x channels
    ratio: float  # pixel numbers per latent number
    saved_bytes: int  # float32 bytes one image needs less as latents
    latent_runs: int  # 50-step latent runs (every step's state kept) in the memory of one such pixel-space run


def compression(factor: int, channels: int, sizes: tuple[int, ...] = SIZES, steps: int = 50) -> list[Compression]:
    """The VAE's compression at each size: an image of size^2 x 3 numbers becomes (size/factor)^2 x channels
    latents (SD 1.x and SDXL: factor 8, 4 channels, 48x; SD3: 16 channels, 12x)."""
    rows = []
    for size in sizes:
        pixels, latents = size * size * 3, (size // factor) ** 2 * channels
        rows.append(Compression(size, pixels, latents, pixels / latents, 4 * (pixels - latents),
                                (steps * pixels) // (steps * latents)))
    return rows


@dataclass(frozen=True)
class GuidanceRow:
    scale: float
    cosine: float  # between the guided prediction and the conditional direction (cond - uncond)
    norm_ratio: float  # |guided| / |cond|
    amplification: float  # |guided - cond| / |cond|: how far guidance moves the prediction from the conditional one


@dataclass(frozen=True)
class GuidanceResponse:
    rows: list[GuidanceRow]
    passes_3x: float | None  # the first scale whose guided prediction is over 3x the conditional one (None: none)


def cfg_response(uncond: torch.Tensor, cond: torch.Tensor, scales: tuple[float, ...] = CFG_SCALES,
                 limit: float = 3.0) -> GuidanceResponse:
    """What CFG makes of one step's two predictions, guided = uncond + s (cond - uncond), for each scale s."""
    u, c = uncond.double().flatten(), cond.double().flatten()
    d = c - u
    rows = []
    for s in scales:
        g = u + s * d
        cosine = float(torch.dot(g, d) / (g.norm() * d.norm())) if d.norm() > 0 and g.norm() > 0 else 0.0
        rows.append(GuidanceRow(s, cosine, float(g.norm() / c.norm()), float((g - c).norm() / c.norm())))
    over = next((r.scale for r in rows if r.norm_ratio > limit), None)
    return GuidanceResponse(rows, over)


def knee(errors: list[tuple[int, float]], gain: float = KNEE_GAIN) -> int | None:
    """The first step count n (with 2n among `errors`) from which doubling the steps cuts the error by less than
    `gain` (10%): past it, more steps buy little. None when every doubling still pays."""
    by_steps = dict(errors)
    for n, e in sorted(errors):
        twice = by_steps.get(2 * n)
        if twice is not None and e > 0 and (e - twice) / e < gain:
            return n
    return None


def toy_step_errors(step_counts: tuple[int, ...] = STEP_COUNTS, reference_steps: int = 999,
                    samples: int = 512) -> list[tuple[int, float]]:
    """The exercise's own 1-D toy: data at -1 and +1 (equal odds), SD's scaled-linear schedule, and a perfect noise
    predictor (the exact E[x0 | x_t] of that data), sampled with DDIM from the same noise; the error of each step
    count against a run through all 999 of the schedule's steps (the ODE's own answer, as near as it has one). The predictor makes no error, so what is left
    is the ODE's discretisation: DDIM's first-order steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    noise = torch.randn(samples, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def ddim(n: int) -> torch.Tensor:
        ts = torch.linspace(999, 0, n + 1).round().long()
        x = noise.clone()  # at t = 999, x is noise up to a 0.07 share of the data: the same start for every n
        for t, t_next in zip(ts[:-1], ts[1:]):
            a, a_next = alpha_bar[t], alpha_bar[t_next]
            x0 = torch.tanh(a.sqrt() * x / (1 - a))  # E[x0 | x_t] for x0 = +-1
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x

    reference = ddim(reference_steps)
    return [(n, float((ddim(n) - reference).pow(2).mean().sqrt())) for n in step_counts]


def halvings(errors: list[tuple[int, float]]) -> list[float]:
    """Each doubling's cut in the error, as a share (0.5: halved), between neighbours in `errors`."""
    pairs = sorted(errors)
    return [1 - b / a if a > 0 else math.nan for (_, a), (_, b) in zip(pairs, pairs[1:])]
