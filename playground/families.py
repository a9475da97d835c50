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
from diffusers import AutoencoderKL, ControlNetModel, SD3Transformer2DModel, UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from playground.attention.capture import band, cross_attention_layers, joint_attention_layers
from playground.schema import TokenCount
from playground.settings import CONTROLNETS, CONTROLNETS_SD3, CONTROLNETS_XL
from playground.tokens import Token, split_prompt, split_t5, tokenize, weighted_ids
from playground.weights import plain


@dataclass
class Conditioning:
    """What the denoiser is conditioned on, one row per sample of its batch ([negative..., prompt...] with CFG)."""

    embeds: torch.Tensor  # (B, 77, D) the text encoders' hidden states
    added: dict[str, torch.Tensor] | None = None  # SDXL: pooled text embeddings and size / crop time ids

    def lerp(self, other: "Conditioning", t: torch.Tensor) -> "Conditioning":
        """(1 - t) self + t other, row by row (t: one weight a row), the added conditioning too."""
        def mix(a, b):
            w = t.to(a.dtype).view(-1, *[1] * (a.ndim - 1))
            return a + (b - a) * w
        added = {k: mix(v, other.added[k]) for k, v in self.added.items()} if self.added else None
        return Conditioning(mix(self.embeds, other.embeds), added)

    def half(self, batch: int) -> "Conditioning":
        """The prompt's rows of a CFG batch ([negative..., prompt...]): its last `batch`."""
        return Conditioning(self.embeds[-batch:], {k: v[-batch:] for k, v in (self.added or {}).items()} or None)


def token_tensors(tokenizer, prompts: list[str], max_length: int, device) -> tuple[torch.Tensor, ...]:
    """(ids (N, L), weights (N, L), lengths (N,)) on `device`: tokens.weighted_ids as tensors."""
    ids, weights, lengths = weighted_ids(tokenizer, prompts, max_length)
    return (torch.tensor(ids, device=device), torch.tensor(weights, device=device, dtype=torch.float32),
            torch.tensor(lengths, device=device))


def weigh(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, L, D) hidden states with each token's weight applied, as A1111 does: multiplied token by token, then
    scaled back to each prompt's unweighted mean, so turning one word up does not turn the whole prompt up.
    Unweighted prompts come back unchanged (the same tensor)."""
    if bool((weights == 1).all()):
        return hidden
    weighted = hidden * weights[..., None].to(hidden.dtype)
    scale = hidden.float().mean(dim=(1, 2), keepdim=True) / weighted.float().mean(dim=(1, 2), keepdim=True)
    return weighted * scale.to(hidden.dtype)


# ---------------------------------------------------------------- the entries

class StableDiffusion:
    """SD 1.x / 2.x: one CLIP text encoder (its last hidden states), a U-Net with cross-attention, eps or v."""

    name = "SD 1.x / 2.x"
    pipeline = "StableDiffusionPipeline"  # model_index.json's _class_name
    controlnets = CONTROLNETS  # kind -> hub id, when neither a setting nor the model names one
    controlnet_class = "ControlNetModel"  # the diffusers class its ControlNets load as
    flow = False  # trained with rectified flow (SD3): its schedulers are schedulers.FLOW_NAMES, not NAMES
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
        """What the request checks need of the family (requests.Limits' fields): its name, whether it is a flow
        model, its latent channels, and the MMDiT blocks skip-layer guidance may skip (none in a U-Net)."""
        return {"family": self.name, "flow": self.flow, "channels": self.latent_channels(c),
                "blocks": c.denoiser.config.get("num_layers", 0) if self.flow else 0,
                "multiple": c.vae_scale_factor * self.patch(c)}

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


class StableDiffusionXL(StableDiffusion):
    """SDXL: two text encoders (penultimate states side by side, the second's pooled vector) and size / crop ids."""

    name = "SDXL"
    pipeline = "StableDiffusionXLPipeline"
    controlnets = CONTROLNETS_XL
    refiner = "StableDiffusionXLImg2ImgPipeline"

    def tokenizers(self, c: Components) -> list[CLIPTokenizer]:
        return [tokenizer for tokenizer, _ in self.encoders(c)]

    def encoders(self, c: Components) -> list[tuple[CLIPTokenizer, CLIPTextModel]]:
        """(tokenizer, text encoder) pairs whose penultimate states go side by side: CLIP-L's and OpenCLIP-G's."""
        return [(c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)]

    def time_ids(self, c: Components, size: tuple[int, int], negatives: int, prompts: int) -> torch.Tensor:
        """(negatives + prompts, 6): (original size, crop top-left, target size): the whole image, uncropped, at
        the asked size, for every row."""
        width, height = size
        return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(negatives + prompts, 1)

    def encode_prompts(self, c: Components, prompts: Sequence[str]) -> Conditioning:
        """((B, 77, D1 + D2) both encoders' penultimate states, added {text_embeds: (B, P) the second's pooled,
        projected output}), as StableDiffusionXLPipeline.encode_prompt makes them."""
        unique = list(dict.fromkeys(prompts))
        hidden, pooled = [], None
        for tokenizer, encoder in self.encoders(c):
            ids, weights, _ = token_tensors(tokenizer, unique, tokenizer.model_max_length, encoder.device)
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # the encoder with projection: its pooled output (never weighted, as in A1111)
                pooled = out[0]
            hidden.append(weigh(out.hidden_states[-2], weights))
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
        time_ids = self.time_ids(c, size, len(negatives) if use_cfg else 0, len(prompts))
        return Conditioning(embeds, {"text_embeds": pooled, "time_ids": time_ids.to(embeds.device, embeds.dtype)})


class StableDiffusionXLRefiner(StableDiffusionXL):
    """SDXL's refiner: a second U-Net that finishes the base's last steps (the base hands its latents over at a
    fraction of the way). It reads the prompt with the base's second text encoder only, and its size ids carry an
    aesthetic score instead of the target size: 6.0 for the prompt, 2.5 for the negative (diffusers' defaults).
    Not a family of its own: it runs beside an SDXL base (`--refiner`)."""

    name = "SDXL refiner"
    pipeline = "StableDiffusionXLImg2ImgPipeline"
    refiner = None
    AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5

    def encoders(self, c: Components) -> list[tuple[CLIPTokenizer, CLIPTextModel]]:
        return [(c.tokenizer_2, c.text_encoder_2)]

    def time_ids(self, c: Components, size: tuple[int, int], negatives: int, prompts: int) -> torch.Tensor:
        if not c.aesthetics:
            return super().time_ids(c, size, negatives, prompts)
        width, height = size
        rows = [[height, width, 0, 0, self.NEGATIVE_AESTHETIC_SCORE]] * negatives + \
            [[height, width, 0, 0, self.AESTHETIC_SCORE]] * prompts
        return torch.tensor(rows, dtype=torch.float32)


class StableDiffusion3(StableDiffusion):
    """SD3: an MMDiT (joint attention over image patches and text tokens) instead of a U-Net, three text encoders
    (CLIP-L and CLIP-G side by side, T5-XXL after them), 16 latent channels, and rectified flow: the model sees
    x_t = (1 - sigma) x0 + sigma eps and predicts v = eps - x0, so x0 = x_t - sigma v."""

    name = "SD3"
    pipeline = "StableDiffusion3Pipeline"
    controlnets = CONTROLNETS_SD3
    controlnet_class = "SD3ControlNetModel"
    flow = True
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

    def patch(self, c: Components) -> int:
        return c.denoiser.config.patch_size  # 2: sizes are multiples of 16 pixels

    def attention_grids(self, c: Components, latent_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """(h, w, first, last) for each band of blocks: an MMDiT keeps one grid, the patch grid, through its depth,
        so its attention is chosen by depth (attention.BANDS bands, kept apart: SD3 Medium's 24 blocks as 4)."""
        p, blocks = c.denoiser.config.patch_size, c.denoiser.config.num_layers
        bands = dict.fromkeys(band(k, blocks) for k in range(blocks))
        return [(latent_hw[0] // p, latent_hw[1] // p, *b) for b in bands]


FAMILIES: dict[str, StableDiffusion] = {f.pipeline: f for f in (StableDiffusion(), StableDiffusionXL(),
                                                                 StableDiffusion3())}


# the second stages, each run only beside a base of its family (not a model the app loads alone)
REFINERS: dict[str, StableDiffusion] = {f.pipeline: f for f in (StableDiffusionXLRefiner(),)}


def of_pipeline(pipe) -> StableDiffusion:
    """The family entry of a loaded pipeline (or refiner), by its class; ValueError naming it for one with no entry."""
    name = type(pipe).__name__
    if name not in FAMILIES and name not in REFINERS:
        raise ValueError(f"{name} is not a family this app runs; it runs {', '.join(FAMILIES)}")
    return FAMILIES.get(name) or REFINERS[name]


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
