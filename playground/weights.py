"""Prompt weighting in A1111's syntax: `(word)` is 1.1 times as strong, `((word))` 1.21, `[word]` 1/1.1,
`(word:1.4)` 1.4, and `\\(` `\\)` `\\[` `\\]` are the characters themselves.

Written here rather than taken from compel: compel has a syntax of its own (`word++`, `(word)1.3`) and builds
the embeddings itself through a diffusers pipeline's text encoders, while the playground's loop encodes the
prompt in each family's entry (CLIP, SDXL's two encoders, SD3's CLIPs and T5). So the parser is small and
pure, and the families weight the tokens they make: each chunk is tokenized alone (so a weight lands on
exactly its words' tokens), the encoder's hidden states are multiplied token by token by the weights, and
then scaled back to the unweighted states' mean, as A1111 does, so that turning one word up does not turn
the whole prompt up.
"""

from __future__ import annotations

import re

UP, DOWN = 1.1, 1 / 1.1  # one pair of ( ) or of [ ]
_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\)|\[|\]|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|[^\\()\[\]:]+|:|\\")


def parse(prompt: str) -> list[tuple[str, float]]:
    """The prompt as (text, weight) chunks, neighbours of one weight joined; text without the syntax.

    An unclosed bracket weights the rest of the prompt, as A1111 does; a stray closing one is kept as text.
    """
    chunks: list[list] = []
    round_open: list[int] = []  # where each open "(" started (an index into chunks)
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for chunk in chunks[start:]:
            chunk[1] *= factor

    for m in _TOKEN.finditer(prompt):
        text, explicit = m.group(0), m.group(1)
        if text.startswith("\\") and len(text) == 2:
            chunks.append([text[1], 1.0])
        elif text == "(":
            round_open.append(len(chunks))
        elif text == "[":
            square_open.append(len(chunks))
        elif explicit is not None and round_open:  # ":1.4)" closes the innermost "(" with its own weight
            scale(round_open.pop(), float(explicit))
        elif text == ")" and round_open:
            scale(round_open.pop(), UP)
        elif text == "]" and square_open:
            scale(square_open.pop(), DOWN)
        else:
            chunks.append([text, 1.0])
    for start in round_open:  # unclosed: the rest of the prompt, as if closed at its end
        scale(start, UP)
    for start in square_open:
        scale(start, DOWN)
    merged: list[tuple[str, float]] = []
    for text, weight in chunks:
        if merged and abs(merged[-1][1] - weight) < 1e-9:
            merged[-1] = (merged[-1][0] + text, weight)
        elif text:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def plain(prompt: str) -> str:
    """The prompt without the weighting syntax: what the tokenizers read and the token counter counts."""
    return "".join(text for text, _ in parse(prompt))


def is_weighted(prompt: str) -> bool:
    """Whether the prompt weights any of its words (else it is encoded exactly as it is)."""
    return any(abs(weight - 1.0) > 1e-9 for _, weight in parse(prompt))
