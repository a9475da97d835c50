"""One entry per model family: everything that differs between SD 1.x / 2.x and SDXL, asked by the loop.

An entry says how its prompt is encoded, which added conditioning the denoiser takes, how the denoiser
and its ControlNet are called, where its attention is recorded and at which resolutions, its latent
channels, scale and shift, and its default ControlNets. `sampling.denoise` and the Engine ask
`components.family` instead of testing what a pipeline has, so a new family (SD3's MMDiT, three encoders
and flow) is one more entry plus what its loop truly adds. The encodings follow diffusers' `encode_prompt`
of each pipeline; tests check the images are equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from transformers import CLIPTextModel, CLIPTokenizer

from playground.attention import cross_attention_layers
from playground.requests import TokenCount
from playground.settings import CONTROLNETS, CONTROLNETS_XL
from playground.tokens import tokenize


@dataclass
class Conditioning:
    """What the denoiser is conditioned on, one row per sample of its batch ([negative..., prompt...] with CFG)."""

    embeds: torch.Tensor  # (B, 77, D) the text encoders' hidden states
    added: dict[str, torch.Tensor] | None = None  # SDXL: pooled text embeddings and size / crop time ids


# ---------------------------------------------------------------- the entries

class StableDiffusion:
    """SD 1.x / 2.x: one CLIP text encoder (its last hidden states), a U-Net with cross-attention, eps or v."""

    name = "SD 1.x / 2.x"
    pipeline = "StableDiffusionPipeline"  # model_index.json's _class_name
    controlnets = CONTROLNETS  # kind -> hub id, when neither a setting nor the model names one

    # -- text ---------------------------------------------------------------------------------
    def tokenizers(self, c: Components) -> list[CLIPTokenizer]:
        """The tokenizers that read the prompt (the token counter counts each)."""
        return [c.tokenizer]

    def count_tokens(self, c: Components, prompt: str) -> TokenCount:
        """How many tokens `prompt` uses, and what is cut off past the limit (several tokenizers: the count
        that loses most, with how many read it; SDXL's two split the same way)."""
        counts = []
        for tok in self.tokenizers(c):
            ids = tokenize(tok, [prompt])["input_ids"][0]  # includes start and end tokens
            limit = tok.model_max_length
            dropped = tok.decode(ids[limit - 1:-1]) if len(ids) > limit else ""
            dropped = re.sub(r"\s+([,.;:!?])", r"\1", dropped).strip()  # CLIP's decode spaces out punctuation
            counts.append(TokenCount(used=len(ids), limit=limit, dropped=dropped))
        return replace(max(counts, key=lambda n: n.used - n.limit), encoders=len(counts))

    def encode_prompts(self, c: Components, prompts: Sequence[str]) -> Conditioning:
        """(len(prompts), 77, D) CLIP hidden states; each distinct prompt is encoded once."""
        unique = list(dict.fromkeys(prompts))
        tokens = tokenize(c.tokenizer, unique, padding="max_length", max_length=c.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt")
        mask = None
        if getattr(c.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(c.text_encoder.device)
        hidden = c.text_encoder(tokens.input_ids.to(c.text_encoder.device), attention_mask=mask)[0]
        index = torch.tensor([unique.index(p) for p in prompts], device=hidden.device)
        return Conditioning(hidden.to(dtype=c.text_encoder.dtype).index_select(0, index))

    def encode(self, c: Components, prompts: list[str], negatives: list[str], use_cfg: bool,
               size: tuple[int, int]) -> Conditioning:
        """The denoiser's conditioning for a batch: [negative..., prompt...] with CFG, else [prompt...]."""
        cond = self.encode_prompts(c, prompts)
        if not use_cfg:
            return cond
        return Conditioning(torch.cat([self.encode_prompts(c, negatives).embeds, cond.embeds]))

    # -- the denoiser -------------------------------------------------------------------------
    def denoise(self, c: Components, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                residuals: tuple | None = None) -> torch.Tensor:
        """The U-Net's output (eps or v) for latents x at timestep t, with a ControlNet's residuals added."""
        down, mid = residuals or (None, None)
        return c.unet(x, t, encoder_hidden_states=cond.embeds, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid, added_cond_kwargs=cond.added, return_dict=False)[0]

    def control(self, c: Components, net: ControlNetModel, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                image: torch.Tensor, scale: float) -> tuple:
        """A ControlNet's (down, mid) residuals for the U-Net, on the same conditioning."""
        return net(x, t, encoder_hidden_states=cond.embeds, controlnet_cond=image, conditioning_scale=scale,
                   guess_mode=False, added_cond_kwargs=cond.added, return_dict=False)

    def latent_channels(self, c: Components) -> int:
        return c.unet.config.in_channels  # 4 for SD's VAE

    # -- latents <-> pixels through the VAE, with its scale and shift -----------------------------
    def decode(self, c: Components, latents: torch.Tensor, generator=None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] from the denoiser's latents (undo the scale, add the shift back), in the
        VAE's own dtype (SDXL's is kept in fp32: it overflows in fp16)."""
        shift = c.vae.config.get("shift_factor") or 0.0
        z = latents.to(device=c.vae.device, dtype=c.vae.dtype) / c.vae.config.scaling_factor
        z = z + shift if shift else z
        return c.vae.decode(z, return_dict=False, generator=generator)[0]

    def encode_image(self, c: Components, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H/8, W/8) latents as the denoiser sees them from (B, 3, H, W) in [-1, 1]: the posterior's mode
        (deterministic), shifted and scaled (0.18215 is SD 1.x's scaling factor)."""
        shift = c.vae.config.get("shift_factor") or 0.0
        z = c.vae.encode(pixels.to(device=c.vae.device, dtype=c.vae.dtype)).latent_dist.mode()
        return (z - shift if shift else z) * c.vae.config.scaling_factor

    # -- where attention is recorded ------------------------------------------------------------
    def attention_layers(self, c: Components) -> list[tuple[str, Attention]]:
        """The U-Net's cross-attention layers (`attn2` of every transformer block), by name: what is recorded."""
        return cross_attention_layers(c.unet)

    def attention_grids(self, c: Components, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) grids the cross-attention layers work at for this latent size, coarsest first."""
        return layer_grids(c.unet.config, latent_hw)


class StableDiffusionXL(StableDiffusion):
    """SDXL: two text encoders (penultimate states side by side, the second's pooled vector) and size / crop ids."""

    name = "SDXL"
    pipeline = "StableDiffusionXLPipeline"
    controlnets = CONTROLNETS_XL

    def tokenizers(self, c: Components) -> list[CLIPTokenizer]:
        return [c.tokenizer, c.tokenizer_2]

    def encode_prompts(self, c: Components, prompts: Sequence[str]) -> Conditioning:
        """((B, 77, D1 + D2) both encoders' penultimate states, added {text_embeds: (B, P) the second's pooled,
        projected output}), as StableDiffusionXLPipeline.encode_prompt makes them."""
        unique = list(dict.fromkeys(prompts))
        hidden, pooled = [], None
        for tokenizer, encoder in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
            ids = tokenize(tokenizer, unique, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids.to(encoder.device)
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # the encoder with projection: its pooled output
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        index = torch.tensor([unique.index(p) for p in prompts], device=hidden[0].device)
        embeds = torch.cat(hidden, dim=-1).to(dtype=c.text_encoder_2.dtype).index_select(0, index)
        return Conditioning(embeds, {"text_embeds": pooled.index_select(0, index).to(embeds.device)})

    def encode(self, c: Components, prompts: list[str], negatives: list[str], use_cfg: bool,
               size: tuple[int, int]) -> Conditioning:
        cond = self.encode_prompts(c, prompts)
        embeds, pooled = cond.embeds, cond.added["text_embeds"]
        if use_cfg:
            neg = self.encode_prompts(c, negatives)
            neg_embeds, neg_pooled = neg.embeds, neg.added["text_embeds"]
            if c.force_zeros_for_empty_prompt:  # diffusers' default for a negative prompt left out
                empty = torch.tensor([not n for n in negatives], device=embeds.device)
                neg_embeds = torch.where(empty[:, None, None], torch.zeros_like(neg_embeds), neg_embeds)
                neg_pooled = torch.where(empty[:, None], torch.zeros_like(neg_pooled), neg_pooled)
            embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])
        # (original size, crop top-left, target size): the whole image, uncropped, at the asked size
        width, height = size
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=embeds.dtype,
                                device=embeds.device).repeat(len(embeds), 1)
        return Conditioning(embeds, {"text_embeds": pooled, "time_ids": time_ids})


FAMILIES: dict[str, StableDiffusion] = {f.pipeline: f for f in (StableDiffusion(), StableDiffusionXL())}


def of_pipeline(pipe) -> StableDiffusion:
    """The family entry of a loaded pipeline, by its class; ValueError naming it for a family with no entry."""
    name = type(pipe).__name__
    if name not in FAMILIES:
        raise ValueError(f"{name} is not a family this app runs; it runs {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclass(frozen=True)
class Components:
    """The loaded modules the loop runs on, read from the one cached pipeline for each request
    (so a module compiled in loading is the one used: no second handle can go stale)."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict  # the model's own: every request's scheduler is made from it
    tokenizer_2: CLIPTokenizer | None = None  # SDXL's second text encoder (OpenCLIP ViT-bigG), with projection
    text_encoder_2: CLIPTextModel | None = None
    force_zeros_for_empty_prompt: bool = False  # SDXL: an empty negative prompt is all zeros, not encoded ""
    family: StableDiffusion = FAMILIES["StableDiffusionPipeline"]  # what differs between families: ask it

    @classmethod
    def from_pipeline(cls, pipe) -> "Components":
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae, dict(pipe.scheduler.config),
                   getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None),
                   bool(getattr(pipe, "config", {}).get("force_zeros_for_empty_prompt", False)),
                   of_pipeline(pipe))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)  # 8 for SD


def layer_grids(unet_config, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """The (h, w) grids at which a UNet2DConditionModel has cross-attention layers, coarsest first: a down
    block's resolution when it cross-attends (each but the last halves it), the deepest for the mid block."""
    h, w = latent_hw
    grids, blocks = set(), list(unet_config["down_block_types"])
    for k, block in enumerate(blocks):
        if "CrossAttn" in block:
            grids.add((h, w))
        if k < len(blocks) - 1:
            h, w = -(-h // 2), -(-w // 2)
    if "CrossAttn" in str(unet_config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"):
        grids.add((h, w))
    return sorted(grids, key=lambda g: g[0] * g[1])
