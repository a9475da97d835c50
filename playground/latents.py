"""Latent-space helpers: a cheap latent -> RGB preview."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# (4, 3) linear map from SD 1.x latents (already multiplied by 0.18215) to RGB in about [-1, 1];
# the factors ComfyUI and A1111 use for SD 1.5 previews.
SD1_LATENT_RGB = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
])


def latent_to_rgb(latent: torch.Tensor, factors: torch.Tensor = SD1_LATENT_RGB) -> np.ndarray:
    """(4, h, w) latent -> (h, w, 3) uint8 via the linear map; no VAE call."""
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), factors)
    return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()


def preview(latent: torch.Tensor, scale: int = 8) -> Image.Image:
    """A preview image of a (4, h, w) latent, upscaled `scale` times to roughly the output size."""
    small = Image.fromarray(latent_to_rgb(latent))
    return small.resize((small.width * scale, small.height * scale), Image.Resampling.BILINEAR)
