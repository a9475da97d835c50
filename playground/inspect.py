"""What the latent inspector shows, as pictures: functions over a recorded Trajectory and a VAE round trip.

No model calls here (the Engine decodes); only tensors already on the CPU, turned into PIL images
and numbers for the UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from playground import latents
from playground.requests import Trajectory, integer


@dataclass
class StepView:
    """What the inspector shows for one step of a trajectory."""

    index: int
    total: int
    timestep: float
    sigma: float
    snr_db: float
    channels: list[Image.Image]  # the 4 channels of x_t, diverging colours, one shared scale
    stats: list[latents.ChannelStats]
    scale: float  # the shared colour scale: +-scale saturates
    rgb_x_t: Image.Image  # linear RGB approximation of x_t (brought back to unit scale)
    rgb_x0: Image.Image  # linear RGB approximation of the predicted x0
    guidance: list[tuple[str, Image.Image]]  # (caption, image): cond, uncond, their difference (with CFG)


@dataclass
class RoundTrip:
    original: Image.Image  # the input fitted to the VAE (multiple of 8, at most MAX_SIZE)
    reconstruction: Image.Image
    channels: list[Image.Image]
    stats: list[latents.ChannelStats]
    latent_shape: tuple[int, int, int]  # (4, h, w)
    ratio: float  # numbers in the image / numbers in the latent: 48 for SD
    psnr: float  # dB


def channel_image(channel: np.ndarray, scale: float) -> Image.Image:
    """One latent channel in diverging colours, upscaled (nearest) so each latent pixel shows."""
    im = Image.fromarray(latents.diverging(channel, scale))
    k = max(1, 256 // max(im.size))
    return im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)


def strip(x: torch.Tensor, scale: float) -> Image.Image:
    """The channels of a (C, h, w) tensor side by side, one shared diverging scale."""
    parts = [channel_image(c, scale) for c in x.numpy()]
    out = Image.new("RGB", (sum(p.width for p in parts) + 4 * (len(parts) - 1), parts[0].height), "white")
    for k, p in enumerate(parts):
        out.paste(p, (k * (p.width + 4), 0))
    return out


def guidance_strips(cond: torch.Tensor, uncond: torch.Tensor) -> list[tuple[str, Image.Image]]:
    """(caption, strip) for the conditional and unconditional outputs (one scale) and their difference."""
    s = float(torch.maximum(cond.abs().max(), uncond.abs().max()))
    diff = cond - uncond
    return [(f"{caption}, ±{sc:.2f}", strip(x, sc)) for caption, x, sc in (
        ("prompt (conditional)", cond, s),
        ("negative / empty prompt (unconditional)", uncond, s),
        ("difference: what CFG multiplies", diff, float(diff.abs().max())))]


def step_view(traj: Trajectory, index: int, rgb_map: latents.RGBMap, vae_factor: int = 8) -> StepView:
    """Channel images, statistics and RGB approximations for step `index` of a trajectory."""
    index = integer("step", index, 0, traj.steps - 1)
    t = traj.tensors
    x_t = t["x_t"][index].float()  # (4, h, w)
    sigma = float(t["sigmas"][index])
    scale = float(x_t.abs().max())
    # Euler-like latents carry sqrt(1 + sigma^2) times the unit scale the RGB map expects
    unit = x_t / math.sqrt(1 + sigma**2) if traj.sigma_space else x_t
    guidance = guidance_strips(t["out_cond"][index].float(), t["out_uncond"][index].float()) if "out_uncond" in t else []
    return StepView(index=index, total=traj.steps, timestep=float(t["timesteps"][index]), sigma=sigma,
                    snr_db=latents.snr_db(sigma), channels=[channel_image(c, scale) for c in x_t.numpy()],
                    stats=latents.channel_stats(x_t.numpy()), scale=scale,
                    rgb_x_t=latents.preview(unit, vae_factor, rgb_map),
                    rgb_x0=latents.preview(t["x0"][index], vae_factor, rgb_map), guidance=guidance)


def round_trip(original: Image.Image, reconstruction: Image.Image, z: torch.Tensor) -> RoundTrip:
    """The figures of a VAE round trip from its input, output and (C, h, w) latent."""
    scale = float(z.abs().max())
    return RoundTrip(original=original, reconstruction=reconstruction,
                     channels=[channel_image(c, scale) for c in z.numpy()], stats=latents.channel_stats(z.numpy()),
                     latent_shape=tuple(z.shape), ratio=(3 * original.width * original.height) / z.numel(),
                     psnr=latents.psnr(np.asarray(original), np.asarray(reconstruction)))
