"""SDXL and its refiner: two CLIP text encoders side by side (the second's pooled vector too), size and crop ids.

The encodings follow diffusers' `StableDiffusionXLPipeline.encode_prompt` and its img2img pipeline's for the
refiner; tests check the images are equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from playground.families.conditioning import Conditioning, token_tensors, weigh
from playground.families.sd import StableDiffusion
from playground.settings import CONTROLNETS_XL

if TYPE_CHECKING:
    from playground.components import Components


class StableDiffusionXL(StableDiffusion):
    """SDXL: two text encoders (penultimate states side by side, the second's pooled vector) and size / crop ids."""

    name = "SDXL"
    pipeline = "StableDiffusionXLPipeline"
    text_encoders = (("CLIP ViT-L/14", 77), ("OpenCLIP ViT-bigG/14", 77))
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
    text_encoders = (("OpenCLIP ViT-bigG/14", 77),)
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
