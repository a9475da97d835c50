"""SD3: an MMDiT with joint attention, three text encoders, 16 latent channels and rectified flow.

The encodings follow diffusers' `StableDiffusion3Pipeline.encode_prompt`; tests check the images are equal.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import torch
from diffusers.models.attention_processor import Attention

from playground.attention.capture import band, joint_attention_layers
from playground.families.conditioning import Conditioning, token_tensors, weigh
from playground.families.sd import StableDiffusion
from playground.schema import TokenCount
from playground.settings import CONTROLNETS_SD3
from playground.tokens import Token, split_prompt, split_t5, tokenize
from playground.weights import plain

if TYPE_CHECKING:
    from playground.components import Components


class StableDiffusion3(StableDiffusion):
    """SD3: an MMDiT (joint attention over image patches and text tokens) instead of a U-Net, three text encoders
    (CLIP-L and CLIP-G side by side, T5-XXL after them), 16 latent channels, and rectified flow: the model sees
    x_t = (1 - sigma) x0 + sigma eps and predicts v = eps - x0, so x0 = x_t - sigma v."""

    name = "SD3"
    pipeline = "StableDiffusion3Pipeline"
    denoiser = "MMDiT"
    summary = "MMDiT, rectified flow"
    # T5's window is the model's max_sequence_length (256 here, 512 at most; T5_TOKENS)
    text_encoders = (("CLIP ViT-L/14", 77), ("OpenCLIP ViT-bigG/14", 77), ("T5-XXL", 256))
    prediction = "flow_prediction"  # v = eps - x0, whatever the scheduler config says
    schedulers = "flow"
    shift = True
    joint_attention = True
    skip_layer_guidance = True
    controlnets = CONTROLNETS_SD3
    controlnet_class = "SD3ControlNetModel"
    default_scheduler = "Flow Euler"

    def tokenizers(self, c: Components) -> list:
        return [t for t in (c.tokenizer, c.tokenizer_2) if t is not None]

    def count_tokens(self, c: Components, prompt: str) -> TokenCount:
        """The CLIP count (77) with, when the model has T5, T5's own count against its window (256 or 512)."""
        clip = super().count_tokens(c, prompt)
        if c.tokenizer_3 is None:
            return clip
        ids = tokenize(c.tokenizer_3, [plain(prompt)])["input_ids"][0]  # the words and T5's end token
        dropped = c.tokenizer_3.decode(ids[c.t5_tokens - 1:-1]).strip() if len(ids) > c.t5_tokens else ""
        return replace(clip, t5=TokenCount(used=len(ids), limit=c.t5_tokens, dropped=dropped))

    def split_prompt(self, c: Components, prompt: str) -> list[Token]:
        """CLIP's tokens, then (with T5) T5's own, which the MMDiT sees after CLIP's 77."""
        prompt = plain(prompt)
        clip = split_prompt(c.tokenizer, prompt)
        if c.tokenizer_3 is None:
            return clip
        return clip + split_t5(c.tokenizer_3, prompt, c.tokenizer.model_max_length, c.t5_tokens)

    def encode_prompts(self, c: Components, prompts: Sequence[str]) -> Conditioning:
        """((B, 77 + L, D) the CLIPs' penultimate states side by side, zero-padded to T5's width D, then T5's L
        tokens (zeros without T5); added {pooled: (B, P1 + P2) both CLIPs' projections}), as
        StableDiffusion3Pipeline.encode_prompt makes them."""
        unique = list(dict.fromkeys(prompts))
        hidden, pooled = [], []
        for tokenizer, encoder in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
            ids, weights, _ = token_tensors(tokenizer, unique, tokenizer.model_max_length, encoder.device)
            out = encoder(ids, output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(weigh(out.hidden_states[-2], weights).to(dtype=c.text_encoder.dtype))
        clip = torch.cat(hidden, dim=-1)
        if c.text_encoder_3 is None:  # as diffusers: zeros in T5's place
            t5 = clip.new_zeros((len(unique), c.t5_tokens, c.denoiser.config.joint_attention_dim))
        else:
            ids, weights, _ = token_tensors(c.tokenizer_3, unique, c.t5_tokens, c.text_encoder_3.device)
            t5 = weigh(c.text_encoder_3(ids)[0], weights).to(dtype=c.text_encoder_3.dtype)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1])).to(t5.device)
        index = torch.tensor([unique.index(p) for p in prompts], device=t5.device)
        embeds = torch.cat([clip.to(t5.dtype), t5], dim=-2).index_select(0, index)
        return Conditioning(embeds, {"pooled": torch.cat(pooled, dim=-1).to(t5.device).index_select(0, index)})

    def encode(self, c: Components, prompts: list[str], negatives: list[str], use_cfg: bool,
               size: tuple[int, int]) -> Conditioning:
        cond = self.encode_prompts(c, prompts)
        if not use_cfg:
            return cond
        neg = self.encode_prompts(c, negatives)  # "" is encoded, as diffusers does
        return Conditioning(torch.cat([neg.embeds, cond.embeds]),
                            {"pooled": torch.cat([neg.added["pooled"], cond.added["pooled"]])})

    def denoise(self, c: Components, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                residuals: tuple | None = None, skip_layers: list[int] | None = None) -> torch.Tensor:
        """The MMDiT's velocity for latents x at timestep t (sigma * 1000), with a ControlNet's block residuals; with
        `skip_layers`, those blocks left out (SD3.5's skip-layer guidance)."""
        return c.denoiser(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=cond.embeds,
                          pooled_projections=cond.added["pooled"], block_controlnet_hidden_states=residuals,
                          skip_layers=skip_layers, return_dict=False)[0]

    def control(self, c: Components, net, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                image: torch.Tensor, scale: float) -> tuple:
        """An SD3ControlNetModel's block residuals (InstantX's take zeros for the pooled projection)."""
        pooled = cond.added["pooled"]
        if net.config.force_zeros_for_pooled_projection:
            pooled = torch.zeros_like(pooled)
        text = cond.embeds if net.config.joint_attention_dim is not None else None
        return net(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=text,
                   pooled_projections=pooled, controlnet_cond=image, conditioning_scale=scale, return_dict=False)[0]

    def control_input(self, c: Components, net, image: torch.Tensor, rows: int, generator: torch.Generator | None
                      ) -> torch.Tensor:
        """The map in [-1, 1] through the VAE, one latent sample per row, shifted and scaled (as
        StableDiffusion3ControlNetPipeline; InstantX's ControlNets, which take zeros for the pooled projection,
        were trained without the shift)."""
        pixels = (image * 2 - 1).to(device=c.vae.device, dtype=c.vae.dtype).expand(rows, -1, -1, -1)
        shift = 0.0 if net.config.force_zeros_for_pooled_projection else (c.vae.config.get("shift_factor") or 0.0)
        z = c.vae.encode(pixels).latent_dist.sample(generator)
        return ((z - shift) * c.vae.config.scaling_factor).to(dtype=c.denoiser.dtype)

    def timestep_options(self, c: Components, scheduler, latent_hw: tuple[int, int]) -> dict:
        """SD3.5-style dynamic shifting: mu from the number of image patches (diffusers' calculate_shift)."""
        config = scheduler.config
        if not config.get("use_dynamic_shifting"):
            return {}
        p = c.denoiser.config.patch_size
        seq, lo, hi = (latent_hw[0] // p) * (latent_hw[1] // p), config.get("base_image_seq_len", 256), \
            config.get("max_image_seq_len", 4096)
        base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.16)
        return {"mu": base + (seq - lo) * (top - base) / (hi - lo)}

    def attention_layers(self, c: Components) -> list[tuple[str, Attention]]:
        """The MMDiT's joint-attention layers (`attn` of every transformer block), by name."""
        return joint_attention_layers(c.denoiser)

    def blocks(self, c: Components) -> int:
        return c.denoiser.config.num_layers

    def skip_layers(self, c: Components) -> tuple[int, ...]:
        """The blocks 30-40% of the way down, as SD3.5 Medium's recommended 7, 8 and 9 of its 24 (one block at
        least): the bundled MMDiT's 6 give 1 and 2."""
        n = self.blocks(c)
        return tuple(range(int(0.3 * n), max(int(0.3 * n) + 1, -(-4 * n // 10))))

    def patch(self, c: Components) -> int:
        return c.denoiser.config.patch_size  # 2: sizes are multiples of 16 pixels

    def attention_grids(self, c: Components, latent_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """(h, w, first, last) for each band of blocks: an MMDiT keeps one grid, the patch grid, through its depth,
        so its attention is chosen by depth (attention.BANDS bands, kept apart: SD3 Medium's 24 blocks as 4)."""
        p, blocks = c.denoiser.config.patch_size, c.denoiser.config.num_layers
        bands = dict.fromkeys(band(k, blocks) for k in range(blocks))
        return [(latent_hw[0] // p, latent_hw[1] // p, *b) for b in bands]
