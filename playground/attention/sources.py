"""Whose tokens the inspector's attention recording follows: the prompt's, the negative prompt's, or none."""

from __future__ import annotations

from dataclasses import dataclass

from playground.errors import InvalidRequest
from playground.schema import GenerateRequest


@dataclass(frozen=True)
class AttentionSource:
    """Whose tokens the inspector's attention recording follows."""

    label: str  # the choice as the UI and the API name it
    records: bool = True  # False: no maps at all
    negative: bool = False  # the negative prompt's tokens, from the unconditional half of the CFG batch

    def text(self, req: GenerateRequest) -> str:
        return req.negative_prompt if self.negative else req.prompt

    def sample(self, req: GenerateRequest) -> int:
        """The row of the denoiser's batch to record: it is [negative, prompt] with CFG, [prompt] without."""
        return 0 if self.negative or req.cfg_scale == 1 else 1

    def check(self, req: GenerateRequest) -> None:
        if self.negative and req.cfg_scale == 1:
            raise InvalidRequest("attention of the negative prompt needs a CFG scale other than 1: at CFG 1 the "
                                 "unconditional (negative prompt) pass is skipped")


ATTENTION_OF = {"prompt": AttentionSource("the prompt"),
                "negative": AttentionSource("the negative prompt", negative=True),
                "off": AttentionSource("off (no attention maps)", records=False)}
