"""Latent-space helpers: latent -> RGB maps, channel images, noise-level maths, trajectory recording."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# (4, 3) linear map from SD 1.x / 2.x VAE latents (already multiplied by 0.18215) to RGB in about
# [-1, 1]; the factors ComfyUI and A1111 use for SD 1.5 previews.
SD1_LATENT_RGB = torch.tensor([
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
])


@dataclass(frozen=True)
class RGBMap:
    """rgb = latent . factors + bias, per pixel: a cheap look at 4 latent channels as a picture."""

    factors: torch.Tensor  # (4, 3)
    bias: torch.Tensor  # (3,)
    source: str  # "published SD 1.x factors" or "fitted to this VAE"


SD1_RGB = RGBMap(SD1_LATENT_RGB, torch.zeros(3), "published SD 1.x factors")


def is_sd_vae(vae) -> bool:
    """The SD 1.x / 2.x VAE (what the published factors were measured on)."""
    c = vae.config
    return (c.latent_channels == 4 and abs(c.scaling_factor - 0.18215) < 1e-6
            and tuple(c.block_out_channels) == (128, 256, 512, 512))


def fit_rgb_map(latents: torch.Tensor, images: torch.Tensor) -> RGBMap:
    """Least-squares (C, 3) map + bias from latents (N, C, h, w) to images (N, 3, h, w) in [-1, 1] (C: 4 for
    SD's VAE, 16 for SD3's)."""
    z = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    x = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)  # (P, C + 1): channels + bias
    y = images.permute(0, 2, 3, 1).reshape(-1, 3).double()  # (P, 3)
    w = torch.linalg.lstsq(x, y).solution  # (C + 1, 3)
    return RGBMap(w[:-1].float(), w[-1].float(), "fitted to this VAE")


def calibration_images(size: int = 64, count: int = 8, seed: int = 0) -> torch.Tensor:
    """(count, 3, size, size) smooth colourful images in [-1, 1]: gradients and colour blobs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(count):
        a, b, c = (torch.rand(3, 1, 1, generator=g) * 2 - 1 for _ in range(3))
        blob = torch.exp(-((xx - torch.rand(1, generator=g)) ** 2 + (yy - torch.rand(1, generator=g)) ** 2) / 0.05)
        out.append((a * xx + b * yy + c * blob).clamp(-1, 1))
    return torch.stack(out)


@torch.no_grad()
def rgb_map_for(vae) -> RGBMap:
    """Published factors for SD's VAE; otherwise a map fitted on calibration images through this VAE."""
    if is_sd_vae(vae):
        return SD1_RGB
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    images = calibration_images(size=8 * f).to(device=vae.device, dtype=vae.dtype)
    shift = vae.config.get("shift_factor") or 0.0  # latents as the denoiser sees them (SD3 shifts its VAE's)
    latents = (vae.encode(images).latent_dist.mode() - shift) * vae.config.scaling_factor
    small = torch.nn.functional.avg_pool2d(images.float(), f)  # the image at latent resolution
    return fit_rgb_map(latents.float().cpu(), small.cpu())


def latent_to_rgb(latent: torch.Tensor, rgb: RGBMap = SD1_RGB) -> np.ndarray:
    """(4, h, w) latent -> (h, w, 3) uint8 via the linear map; no VAE call."""
    out = torch.einsum("chw,cr->hwr", latent.float().cpu(), rgb.factors) + rgb.bias
    return ((out + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()


def preview(latent: torch.Tensor, scale: int = 8, rgb: RGBMap = SD1_RGB) -> Image.Image:
    """A preview image of a (4, h, w) latent, upscaled `scale` times (nearest: each latent pixel a block)."""
    small = Image.fromarray(latent_to_rgb(latent, rgb))
    return small.resize((small.width * scale, small.height * scale), Image.Resampling.NEAREST)


def diverging(channel: np.ndarray, scale: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8: blue below 0, white at 0, red above; +-scale saturates."""
    t = np.clip(channel / max(scale, 1e-12), -1.0, 1.0)[..., None]
    white, red, blue = np.array([255.0, 255, 255]), np.array([178.0, 24, 43]), np.array([33.0, 102, 172])
    rgb = np.where(t >= 0, white + (red - white) * t, white + (blue - white) * (-t))
    return rgb.round().astype(np.uint8)


@dataclass(frozen=True)
class ChannelStats:
    min: float
    mean: float
    std: float


def channel_stats(latent: np.ndarray) -> list[ChannelStats]:
    """min / mean / std of each channel of a (C, h, w) array."""
    flat = latent.reshape(latent.shape[0], -1).astype(np.float64)
    return [ChannelStats(float(c.min()), float(c.mean()), float(c.std())) for c in flat]


def snr_db(sigma: float, flow: bool = False) -> float:
    """Signal-to-noise ratio of x0 + sigma * eps in decibels, 10 log10(1 / sigma^2); for a flow model's
    (1 - sigma) x0 + sigma eps, 20 log10((1 - sigma) / sigma) (-60 dB at its start, pure noise)."""
    if flow:
        return 20.0 * math.log10(max(1.0 - sigma, 1e-3) / max(sigma, 1e-6))
    return -20.0 * math.log10(max(sigma, 1e-6))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors: every point on the way keeps the norm (and so the
    statistics) of Gaussian noise, where a straight line through the middle would be too quiet."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = float((a64 @ b64) / (a64.norm() * b64.norm()))
    angle = math.acos(max(-1.0, min(1.0, cos)))
    if angle < 1e-6:
        return a + (b - a) * t
    return ((math.sin((1 - t) * angle) * a.double() + math.sin(t * angle) * b.double()) / math.sin(angle)).to(a.dtype)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


class Recorder:
    """An observer that keeps x_t, x0 and the model outputs of sample 0 at every evaluation.

    The buffers live on the model's device in float16 and are filled with in-place copies, so
    recording adds no host-device sync to the loop; `tensors()` moves them to the CPU once.
    """

    FIELDS = ("x_t", "x0", "out_cond", "out_uncond", "out")

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.timesteps: list[torch.Tensor] = []
        self.sigmas: list[float] = []
        self.count = 0

    def __call__(self, step) -> None:
        if not self.buffers:
            like = step.x_t[0]
            fields = self.FIELDS if step.out_uncond is not None else ("x_t", "x0", "out_cond", "out")
            self.buffers = {k: like.new_empty((step.total, *like.shape), dtype=torch.float16) for k in fields}
        for k, buf in self.buffers.items():
            buf[step.index].copy_(getattr(step, k)[0])
        self.timesteps.append(step.timestep)
        self.sigmas.append(step.sigma)
        self.count = step.index + 1

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything recorded, on the CPU: (N, 4, h, w) float16 each, plus timesteps and sigmas."""
        out = {k: v[: self.count].cpu() for k, v in self.buffers.items()}
        out["timesteps"] = torch.stack([torch.as_tensor(t).float().cpu() for t in self.timesteps[: self.count]])
        out["sigmas"] = torch.tensor(self.sigmas[: self.count], dtype=torch.float32)
        return out
