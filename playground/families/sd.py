"""SD 1.x / 2.x: one CLIP text encoder, a U-Net with cross-attention, noise (or v) prediction.

This entry is also the base every other family's entry extends: it lists the capabilities each entry states
(the class attributes under "what it has") and the steps each one implements or inherits. The encodings follow
diffusers' `StableDiffusionPipeline.encode_prompt`; tests check the images are equal.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import torch
from diffusers import ControlNetModel
from diffusers.models.attention_processor import Attention
from transformers import CLIPTokenizer

from playground.attention.capture import cross_attention_layers
from playground.families.conditioning import Conditioning, token_tensors, weigh
from playground.schema import TokenCount
from playground.settings import CONTROLNETS
from playground.tokens import Token, split_prompt, tokenize
from playground.weights import plain

if TYPE_CHECKING:
    from playground.components import Components


class StableDiffusion:
    """SD 1.x / 2.x: one CLIP text encoder (its last hidden states), a U-Net with cross-attention, eps or v."""

    # -- what it has: code outside the entries asks these, never the class or its name ------------
    name = "SD 1.x / 2.x"  # as the UI and errors name it
    pipeline = "StableDiffusionPipeline"  # model_index.json's _class_name
    denoiser = "U-Net"  # what denoises: a U-Net (convolutions, cross-attention) or an MMDiT (a transformer)
    summary = "U-Net"  # how the Model menu describes it beside its name
    # the text encoders that read the prompt, each with its token window (the tokenizers' model_max_length)
    text_encoders: tuple[tuple[str, int], ...] = (("CLIP ViT-L/14 (SD 2.x: OpenCLIP ViT-H/14)", 77),)
    prediction: str | None = None  # what the denoiser predicts; None: as its scheduler config says (eps or v)
    schedulers = "noise"  # the kind of schedulers that fit it (schedulers.fitting): noise-prediction ones
    shift = False  # its schedulers take a timestep shift (rectified flow's)
    joint_attention = False  # image and text tokens attend to each other (MMDiT) rather than image to text
    skip_layer_guidance = False  # some of its blocks can be skipped for SD3.5's skip-layer guidance
    controlnets = CONTROLNETS  # kind -> hub id, when neither a setting nor the model names one
    controlnet_class = "ControlNetModel"  # the diffusers class its ControlNets load as
    default_scheduler = "DPM++ 2M Karras"
    refiner: str | None = None  # the pipeline class of a second stage that runs beside it (SDXL's refiner)

    # -- text ---------------------------------------------------------------------------------
    def tokenizers(self, c: Components) -> list[CLIPTokenizer]:
        """The tokenizers that read the prompt (the token counter counts each)."""
        return [c.tokenizer]

    def count_tokens(self, c: Components, prompt: str) -> TokenCount:
        """How many tokens `prompt` uses, and what is cut off past the limit (several tokenizers: the count
        that loses most, with how many read it; SDXL's two split the same way)."""
        counts, prompt = [], plain(prompt)  # the weighting syntax is not read as words
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
        ids, weights, lengths = token_tensors(c.tokenizer, unique, c.tokenizer.model_max_length, c.text_encoder.device)
        mask = None
        if getattr(c.text_encoder.config, "use_attention_mask", False):
            mask = (torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]).long()
        hidden = weigh(c.text_encoder(ids, attention_mask=mask)[0], weights)
        index = torch.tensor([unique.index(p) for p in prompts], device=hidden.device)
        return Conditioning(hidden.to(dtype=c.text_encoder.dtype).index_select(0, index))

    def encode(self, c: Components, prompts: list[str], negatives: list[str], use_cfg: bool,
               size: tuple[int, int]) -> Conditioning:
        """The denoiser's conditioning for a batch: [negative..., prompt...] with CFG, else [prompt...]."""
        cond = self.encode_prompts(c, prompts)
        if not use_cfg:
            return cond
        return Conditioning(torch.cat([self.encode_prompts(c, negatives).embeds, cond.embeds]))

    def split_prompt(self, c: Components, prompt: str) -> list[Token]:
        """The prompt's tokens as the denoiser's text sequence holds them (CLIP's; SD3 adds T5's after them)."""
        return split_prompt(c.tokenizer, plain(prompt))

    # -- the denoiser -------------------------------------------------------------------------
    def denoise(self, c: Components, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                residuals: tuple | None = None) -> torch.Tensor:
        """The U-Net's output (eps or v) for latents x at timestep t, with a ControlNet's residuals added."""
        down, mid = residuals or (None, None)
        return c.denoiser(x, t, encoder_hidden_states=cond.embeds, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid, added_cond_kwargs=cond.added, return_dict=False)[0]

    def control(self, c: Components, net: ControlNetModel, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                image: torch.Tensor, scale: float) -> tuple:
        """A ControlNet's (down, mid) residuals for the U-Net, on the same conditioning."""
        return net(x, t, encoder_hidden_states=cond.embeds, controlnet_cond=image, conditioning_scale=scale,
                   guess_mode=False, added_cond_kwargs=cond.added, return_dict=False)

    def control_input(self, c: Components, net, image: torch.Tensor, rows: int, generator: torch.Generator | None
                      ) -> torch.Tensor:
        """The ControlNet's input for a batch of `rows`, from a (1, 3, H, W) map in [0, 1]: the map itself."""
        return image.to(device=c.denoiser.device, dtype=c.denoiser.dtype).expand(rows, -1, -1, -1)

    def timestep_options(self, c: Components, scheduler, latent_hw: tuple[int, int]) -> dict:
        """Extra arguments for the scheduler's set_timesteps (SD3.5's resolution-dependent shift)."""
        return {}

    def latent_channels(self, c: Components) -> int:
        return c.denoiser.config.in_channels  # 4 for SD's VAE, 16 for SD3's

    def facts(self, c: Components) -> dict:
        """What the request checks need of the family (Limits' fields): its name, its capabilities, its latent
        channels, the size multiple, and the blocks skip-layer guidance may skip with those it skips by default."""
        return {"family": self.name, "summary": self.summary, "scheduler_kind": self.schedulers, "shift": self.shift,
                "joint_attention": self.joint_attention, "channels": self.latent_channels(c),
                "blocks": self.blocks(c), "skip_layers": self.skip_layers(c) if self.skip_layer_guidance else (),
                "multiple": c.vae_scale_factor * self.patch(c)}

    def blocks(self, c: Components) -> int:
        """The denoiser's transformer blocks that skip-layer guidance may skip (a U-Net: none)."""
        return 0

    def skip_layers(self, c: Components) -> tuple[int, ...]:
        """The blocks skip-layer guidance skips unless SLG_LAYERS says otherwise (none in a U-Net)."""
        return ()

    def patch(self, c: Components) -> int:
        """Latent pixels per side the denoiser reads as one position (a U-Net 1; an MMDiT its patch size, 2)."""
        return 1

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
        return cross_attention_layers(c.denoiser)

    def attention_grids(self, c: Components, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The (h, w) grids the cross-attention layers work at for this latent size, coarsest first."""
        return layer_grids(c.denoiser.config, latent_hw)


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
