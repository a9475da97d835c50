"""Which word paints where: the UNet's cross-attention, recorded per token while the inspector records.

In each cross-attention layer (`attn2`) of the UNet the image positions are the queries and the
prompt's 77 CLIP tokens the keys: softmax(Q K^T / sqrt(d)) says, for every position, how much of its
attention goes to each token. `recording(layers, recorder)` wraps those layers' own processors for as long
as a recording runs: the layer's output is still the wrapped processor's (the fast SDPA path, the same
numbers), and only in the thread that records does the wrapper also compute the probabilities for one
sample (the prompt's half of the CFG batch, or the negative prompt's), average them over the heads and
add them to the current step's sum for that layer's resolution. Self-attention (`attn1`) and every run
that does not record are not touched at all.

Maps are kept per step, per layer resolution (mean over the layers of that resolution), for the tokens
the prompt has (start token, words, end token), in float16 at each layer's own resolution: 50 steps x
16 tokens x (64² + 32² + 16² + 8²) positions is 8.7 MB for SD 1.5 at 512 px. They are upsampled to the
latent grid only when shown.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from playground.tokens import Token, check_resolution, first_word, kept, resolution_names

# ---------------------------------------------------------------- the probabilities of one layer

def cross_attention_probs(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
                          ) -> torch.Tensor:
    """(B, positions, tokens): softmax(Q K^T / sqrt(d)) of one attention layer, averaged over its heads.

    Q and K are computed as the layer's own processor computes them (group norm, cross norm, q/k norms
    where the layer has them); the scores in float32.
    """
    if hidden_states.ndim == 4:  # (B, C, H, W) -> (B, HW, C)
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    batch = hidden_states.shape[0]
    query, key = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, S, d)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    scores = query.float() @ key.float().transpose(-1, -2) / math.sqrt(head_dim)  # as SDPA scales
    return scores.softmax(dim=-1).mean(dim=1)


def joint_attention_probs(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
                          ) -> torch.Tensor:
    """(B, patches, tokens): an MMDiT joint-attention layer's image queries over its text keys, averaged over
    the heads. A joint layer attends over image and text keys at once; the softmax over the text columns
    alone is the full softmax renormalised over them, so each row says how a patch shares out the attention
    it pays to the text."""
    batch = hidden_states.shape[0]
    query, key = attn.to_q(hidden_states), attn.add_k_proj(encoder_hidden_states)
    head_dim = query.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_added_k is not None:
        key = attn.norm_added_k(key)
    scores = query.float() @ key.float().transpose(-1, -2) / math.sqrt(head_dim)
    return scores.softmax(dim=-1).mean(dim=1)


def layer_grid(positions: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of a layer with `positions` image positions: the latent grid halved k times (rounding up,
    as the UNet's stride-2 convolutions do)."""
    h, w = latent_hw
    for _ in range(8):
        if h * w == positions:
            return h, w
        h, w = -(-h // 2), -(-w // 2)
    raise ValueError(f"{positions} positions fit no halving of the {latent_hw[0]}x{latent_hw[1]} latent grid")


# ---------------------------------------------------------------- recording

class AttentionRecorder:
    """Keeps the per-token maps of one sample at every step, per layer resolution.

    `sample` is the row of the UNet's batch to record (with CFG the batch is [uncond..., cond...]);
    `tokens` how many of the 77 positions to keep (start, words, end). The processor calls `add` once
    per cross-attention layer; the loop's observer calls `end_step` after each model evaluation.
    """

    def __init__(self, sample: int, tokens: int | list[int], latent_hw: tuple[int, int]):
        # the text positions to keep: the first `tokens`, or these (SD3: CLIP's, then T5's after the 77)
        self.columns = list(range(tokens)) if isinstance(tokens, int) else list(tokens)
        self.sample, self.tokens, self.latent_hw = sample, len(self.columns), latent_hw
        self._sum: dict[tuple[int, int], torch.Tensor] = {}  # this step: resolution -> (T, h, w) float32
        self._count: dict[tuple[int, int], int] = {}
        self.buffers: dict[tuple[int, int], torch.Tensor] = {}  # resolution -> (steps, T, h, w) float16
        self.layers: dict[tuple[int, int], int] = {}  # resolution -> cross-attention layers there
        self.recorded = 0
        self.window = 0  # how many text tokens the layers attend over (77 for CLIP)

    def add(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
            block: tuple[int, int] | None = None) -> None:
        """One layer's maps, added to its group: its resolution (a U-Net's), or its band of blocks (an MMDiT keeps
        one resolution through its depth, so its layers are told apart by depth: (h, w, first, last))."""
        s = self.sample
        probs_of = joint_attention_probs if is_joint(attn) else cross_attention_probs
        probs = probs_of(attn, hidden_states[s: s + 1], encoder_hidden_states[s: s + 1])[0]
        grid, self.window = layer_grid(probs.shape[0], self.latent_hw), probs.shape[1]
        maps = probs[:, self.columns].T.reshape(self.tokens, *grid)  # (T, h, w)
        grid = grid if block is None else (*grid, *block)
        if grid in self._sum:
            self._sum[grid] += maps
            self._count[grid] += 1
        else:
            self._sum[grid], self._count[grid] = maps.clone(), 1

    def end_step(self, index: int, total_steps: int) -> None:
        """Store the mean over this step's layers at each resolution as step `index` of `total_steps`."""
        for grid, total in self._sum.items():
            if grid not in self.buffers:  # on the model's device, filled in place: no sync in the loop; NaN marks
                # the steps a group did not run at (SDXL's refiner has layers, and steps, of its own)
                self.buffers[grid] = total.new_full((total_steps, *total.shape), float("nan"), dtype=torch.float16)
            self.buffers[grid][index].copy_(total / self._count[grid])
            self.layers[grid] = self._count[grid]
        self._sum.clear()
        self._count.clear()
        self.recorded = index + 1

    def maps(self, tokens: list[Token], of: str) -> "AttentionMaps":
        """What was recorded, on the CPU."""
        return AttentionMaps(tokens=tokens, of=of, latent_hw=self.latent_hw, layers=dict(self.layers), window=self.window,
                             maps={g: b[: self.recorded].cpu() for g, b in self.buffers.items()})


_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar("attention_recorder", default=None)
_LOCK = threading.Lock()
_USERS: dict[int, int] = {}  # id(the first layer) -> recordings running on those layers


class RecordingProcessor:
    """Wraps a cross-attention layer's processor: same output; records when this thread is recording."""

    def __init__(self, inner, block: tuple[int, int] | None = None):
        self.inner, self.block = inner, block  # an MMDiT layer's band of blocks (its depth)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        recorder = _ACTIVE.get()
        if recorder is not None and encoder_hidden_states is not None:
            recorder.add(attn, hidden_states, encoder_hidden_states, self.block)
        return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                          attention_mask=attention_mask, **kwargs)


def cross_attention_layers(unet: torch.nn.Module) -> list[tuple[str, Attention]]:
    """The UNet's cross-attention layers (`attn2` of every transformer block), by name."""
    return [(name, m) for name, m in unet.named_modules() if name.endswith("attn2") and isinstance(m, Attention)]


def is_joint(attn: Attention) -> bool:
    """An MMDiT joint-attention layer (text keys from its own added projections), not a U-Net cross-attention."""
    return getattr(attn, "add_k_proj", None) is not None


BANDS = 4  # an MMDiT's blocks are recorded in this many bands of depth (24 blocks, each kept: 225 MB at 1024 px)


def band(block: int, blocks: int, bands: int = BANDS) -> tuple[int, int]:
    """(first, last) block of the band of depth `block` belongs to, of `blocks` split into `bands` equal bands."""
    n = min(bands, blocks)
    k = block * n // blocks
    return -(-k * blocks // n), -(-(k + 1) * blocks // n) - 1


def block_of(name: str, layer: Attention) -> int | None:
    """The block index of a joint-attention layer from its name ("transformer_blocks.3.attn" -> 3); None for a
    U-Net's cross-attention (grouped by resolution)."""
    if not is_joint(layer):
        return None
    digits = [part for part in name.split(".") if part.isdigit()]
    return int(digits[0]) if digits else 0


def group_of(name: str, layer: Attention, layers: list[tuple[str, Attention]]) -> tuple[int, int] | None:
    """Where a layer's maps are kept besides its resolution: an MMDiT layer's band of depth, (first, last) block;
    None for a U-Net's (kept by resolution)."""
    block = block_of(name, layer)
    if block is None:
        return None
    blocks = 1 + max(block_of(n, m) or 0 for n, m in layers if is_joint(m))
    return band(block, blocks)


def joint_attention_layers(transformer: torch.nn.Module) -> list[tuple[str, Attention]]:
    """An MMDiT's joint-attention layers (`attn` of every block; SD3.5's extra self-attention `attn2` has no
    text), by name."""
    return [(name, m) for name, m in transformer.named_modules() if isinstance(m, Attention) and is_joint(m)]


@contextlib.contextmanager
def recording(layers: list[tuple[str, Attention]], recorder: AttentionRecorder):
    """Record the cross-attention of `layers` (a family's `attention_layers`) into `recorder` for the calls
    this thread makes inside the block.

    The wrappers go on when the first recording on these layers starts and come off when the last one
    ends; other threads' runs meanwhile pass straight through to the wrapped processors.
    """
    if not layers:
        raise ValueError("this model has no cross-attention or joint-attention layers to record")
    key = id(layers[0][1])  # the same model's layers, whichever request lists them
    with _LOCK:
        if _USERS.get(key, 0) == 0:
            for name, layer in layers:
                layer.set_processor(RecordingProcessor(layer.processor, group_of(name, layer, layers)))
        _USERS[key] = _USERS.get(key, 0) + 1
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)
        with _LOCK:
            _USERS[key] -= 1
            if _USERS[key] == 0:
                del _USERS[key]
                for _, layer in layers:
                    if isinstance(layer.processor, RecordingProcessor):
                        layer.set_processor(layer.processor.inner)


# ---------------------------------------------------------------- the result

@dataclass
class AttentionMaps:
    """Recorded cross-attention of one trajectory: per step, per layer resolution, per kept token."""

    tokens: list[Token]  # the whole split prompt (dropped ones too); maps follow kept(tokens)
    of: str  # whose tokens: a key of attention.sources.ATTENTION_OF ("prompt" or "negative")
    latent_hw: tuple[int, int]
    layers: dict[tuple[int, int], int]  # resolution -> how many layers were averaged there
    window: int  # how many text tokens every position attends over (77 for CLIP): the kept ones plus padding
    maps: dict[tuple[int, int], torch.Tensor] = field(repr=False)  # resolution -> (steps, T, h, w) float16

    @property
    def kept(self) -> list[Token]:
        return kept(self.tokens)

    @property
    def first(self) -> int:
        """The kept token shown first (see first_word)."""
        return first_word(self.tokens)

    @property
    def resolutions(self) -> list[tuple[int, ...]]:
        """Layer groups present: resolutions (h, w) coarsest first, or an MMDiT's blocks (h, w, block) in depth
        order."""
        return sorted(self.maps, key=lambda g: (g[0] * g[1], *g[2:]))

    @property
    def by_block(self) -> bool:
        """The layers are an MMDiT's blocks (one resolution), not a U-Net's resolutions."""
        return any(len(g) > 2 for g in self.maps)

    @property
    def resolution_names(self) -> list[str]:
        """The layer-resolution choices for this recording: 'all' and each 'WxH' recorded."""
        return resolution_names(self.resolutions)

    @property
    def steps(self) -> int:
        return next(iter(self.maps.values())).shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.maps.values())

    def resolution_key(self, resolution: str | None) -> list[tuple[int, int]]:
        """'all' (or None) or '16x16' -> the resolutions to average; InvalidRequest naming a bad one."""
        resolution = check_resolution(resolution, self.resolution_names)
        names = dict(zip(self.resolution_names[1:], self.resolutions))
        return self.resolutions if resolution == "all" else [names[resolution]]

    def stack(self, step: int | None = None, resolution: str | None = None) -> np.ndarray:
        """(T, h, w) float32 on the latent grid: step `step` (None = summed over all steps), averaged over
        the chosen resolutions' layers (weighted by how many layers each has), bilinearly upsampled."""
        h, w = self.latent_hw
        groups = self.resolution_key(resolution)
        if any(bool(self.maps[g][:, 0, 0, 0].isnan().any()) for g in groups):
            return self._stack_by_step(groups, step)
        total, weight = torch.zeros(len(self.kept), h, w), 0
        for g in groups:
            m = self.maps[g].float()
            m = m.sum(0) if step is None else m[step]
            up = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0] if g[:2] != (h, w) else m
            total += self.layers[g] * up
            weight += self.layers[g]
        return (total / weight).numpy()

    def _stack_by_step(self, groups: list[tuple[int, ...]], step: int | None) -> np.ndarray:
        """stack() when some groups ran at some steps only (a base's layers, then its refiner's): each step is the
        mean over the layers that ran at it, then the chosen step (or the sum over the steps that have any)."""
        h, w = self.latent_hw
        steps = range(self.steps) if step is None else [step]
        out = torch.zeros(len(self.kept), h, w)
        for s in steps:
            total, weight = torch.zeros(len(self.kept), h, w), 0
            for g in groups:
                m = self.maps[g][s].float()
                if bool(m[0, 0, 0].isnan()):
                    continue
                total += self.layers[g] * F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]
                weight += self.layers[g]
            out += total / weight if weight else 0
        return out.numpy()

    def share(self, step: int | None = None, resolution: str | None = None) -> np.ndarray:
        """(T,) the mean attention each kept token gets over the image, as a fraction of the whole (the
        kept tokens' shares add up to at most 1: the padding end tokens take the rest)."""
        return self.shares(self.stack(step, resolution), summed=step is None)

    def shares(self, stack: np.ndarray, summed: bool = False) -> np.ndarray:
        """share() of a stack already made (a summed one is divided by the number of steps)."""
        return stack.mean(axis=(1, 2)) / (self.steps if summed else 1.0)


def mass_centre(heat: np.ndarray) -> tuple[float, float]:
    """(x, y) of a non-negative (h, w) map's mass centre, in fractions of the width and height."""
    h, w = heat.shape
    total = float(heat.sum())
    if total <= 0:
        return 0.5, 0.5
    ys, xs = np.mgrid[0:h, 0:w]
    return float((heat * (xs + 0.5)).sum() / total / w), float((heat * (ys + 0.5)).sum() / total / h)


def focus(heat: np.ndarray) -> tuple[float, float]:
    """Where a token's map points: the mass centre of the part above the map's own mean, (x, y) in
    fractions of the width and height (every position attends to every token a little, and that floor
    alone would pull any mass centre to the middle)."""
    return mass_centre(np.clip(heat - heat.mean(), 0, None))
