"""Trajectory views: what the latent inspector shows, as pictures, from a recorded Trajectory and a VAE round trip.

No model calls here (the Engine decodes); only tensors already on the CPU, turned into PIL images
and numbers for the UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from playground import latents, tokens
from playground.errors import InvalidRequest
from playground.schema import Trajectory
from playground.validation import integer, text


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
                    snr_db=latents.snr_db(sigma, traj.flow), channels=[channel_image(c, scale) for c in x_t.numpy()],
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


# ---------------------------------------------------------------- cross-attention maps

@dataclass
class AttentionView:
    """The inspector's pictures of the cross-attention recorded at one step, for one token."""

    token: str  # the token (or word) shown
    step: int  # the step index the maps are of
    at_step: Image.Image  # its map at the step, over that step's predicted image
    summed: Image.Image  # its map summed over every step, over the final image
    strip: list[tuple[Image.Image, str]]  # every kept token's map summed over all steps, captioned with its share
    low: float  # the step map's range, as a share of each position's attention
    high: float
    share: float  # the token's mean share of attention at the step
    together: float  # every kept token's share at the step together (the padding takes the rest)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) float in [0, 1]: black, purple, orange, pale yellow (magma-like)."""
    stops = np.array([[0.0, 0.0, 0.02], [0.45, 0.1, 0.5], [0.95, 0.4, 0.2], [1.0, 0.95, 0.7]])
    x = np.clip(heat, 0, 1) * (len(stops) - 1)
    k = np.minimum(x.astype(int), len(stops) - 2)
    t = (x - k)[..., None]
    return stops[k] * (1 - t) + stops[k + 1] * t


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """A (h, w) map, stretched to its own range, in heat colours over a dimmed grey copy of `image`."""
    lo, hi = float(heat.min()), float(heat.max())
    norm = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    small = Image.fromarray((norm * 255).astype(np.uint8))
    up = np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    grey = np.asarray(image.convert("L"), dtype=np.float64)[..., None] / 255.0
    mixed = (1 - alpha) * grey + alpha * heat_colours(up)
    return Image.fromarray((mixed * 255).round().astype(np.uint8))


def chosen_tokens(traj: Trajectory, token: int | str | list[int], tokenizer) -> list[int]:
    """Kept-token indices from an index, a list of them, or a word (all the pieces it is split into)."""
    if traj.attention is None:
        raise InvalidRequest("this trajectory was recorded without attention maps")
    if isinstance(token, str):
        return tokens.find_word(traj.attention.tokens, text("word", token, tokens.MAX_WORD_CHARS), tokenizer)
    return list(token) if isinstance(token, (list, tuple)) else [token]


def attention_view(traj: Trajectory, index: int, token: int | str | list[int], resolution: str | None,
                   backdrop: Image.Image, tokenizer=None) -> AttentionView:  # a word needs the tokenizer
    """Maps of the chosen kept tokens (their sum: a word CLIP splits in pieces) at step `index` over
    `backdrop`, and over all steps over the final image; plus every token's map over all steps."""
    chosen = chosen_tokens(traj, token, tokenizer)
    maps = traj.attention
    index = integer("step", index, 0, traj.steps - 1)
    names = [t.text for t in maps.kept]
    for k in chosen:
        integer("token", k, 0, len(names) - 1)
    at_step, summed = maps.stack(index, resolution), maps.stack(None, resolution)
    share = maps.shares(at_step)
    heat = at_step[chosen].sum(0)
    base = backdrop.convert("RGB").resize(traj.image.size)
    overall = maps.shares(summed, summed=True)
    strip = [(overlay(traj.image, summed[k]), f"{name} · {100 * overall[k]:.1f}%") for k, name in enumerate(names)]
    return AttentionView(token=" ".join(names[k] for k in chosen), step=index, at_step=overlay(base, heat),
                         summed=overlay(traj.image, summed[chosen].sum(0)), strip=strip, low=float(heat.min()),
                         high=float(heat.max()), share=float(share[chosen].sum()),
                         together=float(share.sum()))
