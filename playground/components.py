"""The loaded modules the loop runs on, read afresh from the one cached pipeline for each request."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from playground.families import FAMILIES, StableDiffusion, of_pipeline


@dataclass(frozen=True)
class Components:
    """The loaded modules the loop runs on, read from the one cached pipeline for each request
    (so a module compiled in loading is the one used: no second handle can go stale)."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    denoiser: UNet2DConditionModel | SD3Transformer2DModel  # SD's U-Net, or SD3's MMDiT (its `transformer`)
    vae: AutoencoderKL
    scheduler_config: dict  # the model's own: every request's scheduler is made from it
    tokenizer_2: CLIPTokenizer | None = None  # SDXL's and SD3's second text encoder (OpenCLIP ViT-bigG)
    text_encoder_2: CLIPTextModel | None = None
    force_zeros_for_empty_prompt: bool = False  # SDXL: an empty negative prompt is all zeros, not encoded ""
    family: StableDiffusion = FAMILIES["StableDiffusionPipeline"]  # what differs between families: ask it
    tokenizer_3: T5TokenizerFast | None = None  # SD3's T5-XXL (None: a model loaded without it, zeros instead)
    text_encoder_3: T5EncoderModel | None = None
    t5_tokens: int = 256  # SD3: how many T5 tokens the prompt gets (diffusers' max_sequence_length)
    aesthetics: bool = False  # SDXL's refiner: its size ids end in an aesthetic score (requires_aesthetics_score)

    @classmethod
    def from_pipeline(cls, pipe, t5_tokens: int = 256) -> "Components":
        return cls(pipe.tokenizer, pipe.text_encoder, denoiser_of(pipe), pipe.vae,
                   dict(pipe.scheduler.config), getattr(pipe, "tokenizer_2", None),
                   getattr(pipe, "text_encoder_2", None),
                   bool(getattr(pipe, "config", {}).get("force_zeros_for_empty_prompt", False)),
                   of_pipeline(pipe), getattr(pipe, "tokenizer_3", None), getattr(pipe, "text_encoder_3", None),
                   t5_tokens, bool(getattr(pipe, "config", {}).get("requires_aesthetics_score", False)))

    @property
    def unet(self) -> UNet2DConditionModel | SD3Transformer2DModel:
        """The denoiser, by its SD 1.x name (a U-Net for every family but SD3)."""
        return self.denoiser

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)  # 8 for SD


def denoiser_of(pipe) -> torch.nn.Module:
    """A pipeline's denoiser: its U-Net, or SD3's MMDiT (`transformer`). Compared with None, never by truth: a
    compiled module forwards len() to a model that refuses it."""
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else pipe.transformer
