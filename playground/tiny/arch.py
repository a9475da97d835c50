"""The project's own models' architecture: SD's layout, small. One dataclass, three sizes.

Every project model has SD 1.x's shape: a VAE with 4 down blocks (f = 8) and 4 latent channels, a
CLIP text encoder over the offline vocabulary, and a UNet whose blocks all cross-attend to the text
but the deepest. `untrained.py` builds random-weight stand-ins from it and `stages.py` trains the
offline model (`python -m playground.tiny.train`); both read the sizes from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


# SD 1.5's published scheduler config, so the offline model samples on the same noise schedule.
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    clip_sample=False,
)


@dataclass(frozen=True)
class Arch:
    image_size: int = 128  # native pixels per side; latents are image_size / 8
    vae_channels: tuple[int, ...] = (16, 32, 64, 64)  # one per VAE block (4 blocks: f = 8)
    vae_groups: int = 4  # GroupNorm groups in the VAE; must divide every VAE channel count
    unet_channels: tuple[int, ...] = (64, 128, 128)  # one per UNet level, the deepest without cross-attention
    unet_groups: int = 8
    attention_head_dim: int = 8
    text_width: int = 96  # CLIP hidden size == the UNet's cross-attention width
    text_layers: int = 3
    text_heads: int = 4
    prediction_type: str = "epsilon"
    terminal_signal: float | None = None  # sqrt(alpha_bar) at the last step: None for SD's (see rescaled_betas)


# the shipped, trained offline model (5.9M-parameter UNet): v-prediction on a schedule that ends in near-pure noise
OFFLINE = Arch(prediction_type="v_prediction", terminal_signal=0.02)
BUNDLED = Arch(vae_channels=(32, 32, 64, 64), vae_groups=32, unet_channels=(64, 128), unet_groups=32, text_width=64,
               text_layers=2)  # the random-weight stand-in the offline model replaced
TEST = Arch(image_size=64, vae_channels=(8, 8, 8, 8), unet_channels=(8, 16), unet_groups=4, text_width=16,
            text_layers=1)  # the tests' tiny model: 8x8 latents


def rescaled_betas(terminal_signal: float, config: dict = SD15_SCHEDULER) -> list[float]:
    """SD's scaled-linear betas rescaled so that sqrt(alpha_bar), the share of the image left in the
    latents, falls linearly to `terminal_signal` at the last step instead of SD's 0.068.

    Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps Are Flawed"): with SD 1.5's
    schedule even the noisiest training latents still show where the objects are, so the model learns
    to read the layout from the noise and the prompt's place words never matter (the offline model drew
    every "top left" and "bottom right" square exactly where the seed's noise put it). Rescaled, the
    last steps show almost nothing and the layout has to come from the text. They rescale to exactly 0;
    a small positive end keeps sigma_max finite and moderate (0.02: sigma_max 50, SD's 14.6), so sigma-space
    schedulers (Euler, Heun, LMS) and Karras spacings do not spend their steps on pure noise.
    """
    n = config["num_train_timesteps"]
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, n, dtype=np.float64) ** 2
    root = np.sqrt(np.cumprod(1 - betas))
    root = (root - root[-1]) * (root[0] - terminal_signal) / (root[0] - root[-1]) + terminal_signal
    alpha_bar = root ** 2
    previous = np.concatenate([[1.0], alpha_bar[:-1]])
    return [float(b) for b in 1 - alpha_bar / previous]


def scheduler_config(arch: Arch) -> dict:
    """The noise schedule a model of `arch` is trained and sampled on: SD 1.5's, or its rescaling to a
    lower terminal signal (as `trained_betas`, which every diffusers scheduler the app offers reads),
    sampled from the last step ("trailing" spacing, as Lin et al. recommend)."""
    config = {**SD15_SCHEDULER, "prediction_type": arch.prediction_type}
    if arch.terminal_signal is not None:
        config |= {"trained_betas": rescaled_betas(arch.terminal_signal), "timestep_spacing": "trailing"}
    return config


def new_text_encoder(arch: Arch, tokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_width, intermediate_size=arch.text_width * 4,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def new_vae(arch: Arch) -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=arch.vae_channels,
                         layers_per_block=1, latent_channels=4, norm_num_groups=arch.vae_groups,
                         sample_size=arch.image_size, scaling_factor=0.18215)  # SD 1.x's, until training measures its own


def new_unet(arch: Arch) -> UNet2DConditionModel:
    levels = len(arch.unet_channels)
    return UNet2DConditionModel(
        sample_size=arch.image_size // 8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        block_out_channels=arch.unet_channels, layers_per_block=1, cross_attention_dim=arch.text_width,
        attention_head_dim=arch.attention_head_dim, norm_num_groups=arch.unet_groups)
