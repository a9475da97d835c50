"""A grounding loss for the offline U-Net: each object's colour and shape words attend to that object.

The world knows where it drew every object, so it can say, for a training caption, which image region
each word names: the colour word and the shape word of an object -> that object's pixels, the background's
colour word -> the pixels no object covers. During training the U-Net's cross-attention probabilities
(image positions over the 77 tokens, `attention.cross_attention_probs`, the same maps the inspector shows)
are taken from every `attn2` layer, and for each grounded token the share of its attention that falls
outside its region is penalised: (1 - inside / total)^2, the token loss of TokenCompose (Wang et al.,
CVPR 2024), averaged over the grounded tokens and the layers. The denoising loss stays the main one; this
one only tells the keys which queries are theirs, so a colour word can no longer be "free to mean anything"
(the causal text encoder lets the shape word carry the colour: see docs/training.md).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from playground.attention.capture import cross_attention_probs
from playground.tiny import world

BACKGROUND = -1  # the region index of the background (every pixel no object covers)


def object_masks(objects, size: int = world.SIZE, grid: int = 16) -> np.ndarray:
    """(objects + 1, grid, grid): each object's share of each cell, then the background's (the rest)."""
    masks = []
    for colour, shape, cx, cy, side in objects:
        img = Image.new("L", (size, size), 0)
        world.draw_shape(ImageDraw.Draw(img), shape, cx, cy, side, 255, 0)
        masks.append(np.asarray(img.resize((grid, grid), Image.BOX), dtype=np.float32) / 255)
    background = np.clip(1 - sum(masks, np.zeros((grid, grid), np.float32)), 0, 1)
    return np.stack(masks + [background])


def word_regions(tokens: list[str], objects, background: str) -> dict[int, int]:
    """Token position -> region (object index in `objects`, or BACKGROUND) for the words that name one.

    `tokens` are the caption's tokens as the tokenizer writes them ("red</w>"); `objects` are named in the
    caption's order, and a caption naming two joins them with "and", so the k-th object's words are those
    between the (k-1)-th and the k-th "and". A colour word equal to the background's is the background's."""
    regions, k = {}, 0
    for i, token in enumerate(tokens):
        word = token.removesuffix("</w>")
        if word == "and":
            k += 1
        elif word == background and word in world.BACKGROUNDS:
            regions[i] = BACKGROUND
        elif k < len(objects) and word in (objects[k][0], objects[k][1]):
            regions[i] = k
    return regions


def targets(tokenizer, scenes, captions, grid: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 77, grid, grid) region masks and (B, 77) weights (1 for a grounded token) for a training batch.

    A caption emptied for classifier-free guidance, or a scene with no objects (a person), grounds nothing."""
    n = tokenizer.model_max_length
    masks, weights = torch.zeros(len(scenes), n, grid, grid), torch.zeros(len(scenes), n)
    for b, (scene, caption) in enumerate(zip(scenes, captions)):
        if not caption or not scene.objects:
            continue
        ids = tokenizer(caption, truncation=True, max_length=n).input_ids
        regions = word_regions(tokenizer.convert_ids_to_tokens(ids), scene.objects, scene.background)
        region_masks = torch.from_numpy(object_masks(scene.objects, grid=grid))
        for i, region in regions.items():
            masks[b, i] = region_masks[region]
            weights[b, i] = 1.0
    return masks, weights


class Capture:
    """While active, every cross-attention layer of `unet` also hands its probabilities (with their gradients)
    to `self.probs`; its output is its own processor's, unchanged. With no `unet`, it records nothing."""

    def __init__(self, unet):
        self.unet, self.probs = unet, []

    @contextlib.contextmanager
    def active(self):
        if self.unet is None:
            yield self.probs
            return
        saved = dict(self.unet.attn_processors)
        wrapped = {name: (_Recorded(proc, self.probs) if name.endswith("attn2.processor") else proc)
                   for name, proc in saved.items()}
        self.unet.set_attn_processor(wrapped)
        self.probs.clear()
        try:
            yield self.probs
        finally:
            self.unet.set_attn_processor(saved)


class _Recorded:
    def __init__(self, inner, out: list):
        self.inner, self.out = inner, out

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            self.out.append(cross_attention_probs(attn, hidden_states, encoder_hidden_states))
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def loss(probs: list[torch.Tensor], masks: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over layers and grounded tokens of (1 - the token's attention inside its region / all of it)^2.

    `probs`: per layer (B, positions, 77); `masks` (B, 77, g, g) at the finest layer's grid, pooled by area
    to each coarser one."""
    if not probs or weights.sum() == 0:
        return masks.new_zeros(())
    total = 0.0
    for p in probs:
        side = int(round(p.shape[1] ** 0.5))
        m = F.adaptive_avg_pool2d(masks, side).flatten(2).to(p)  # (B, 77, positions)
        attention = p.transpose(1, 2)  # (B, 77, positions)
        inside = (attention * m).sum(-1) / attention.sum(-1).clamp_min(1e-8)
        total = total + (((1 - inside) ** 2) * weights.to(p)).sum() / weights.sum()
    return total / len(probs)
