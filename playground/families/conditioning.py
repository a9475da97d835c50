"""What the denoiser is conditioned on, and prompt weighting on the text encoders' states (shared by the entries)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from playground.tokens import weighted_ids


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
