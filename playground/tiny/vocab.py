"""A small CLIP-style BPE tokenizer built from the playground's own word list (no download)."""

from __future__ import annotations

import math
import re

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer

# Words the offline model's tokenizer keeps whole: the procedural world's captions plus everyday
# prompt words. Anything else still tokenizes, as smaller byte-level pieces.
WORDS = """
a an the of on in at with and or to from by near above below left right top bottom center middle
corner background foreground small medium large big tiny huge one two three four five
red orange yellow green blue purple pink brown black white gray grey cyan magenta gold silver
circle square triangle star heart hexagon diamond ring cross rectangle shape shapes object objects
person people man woman figure stick standing sitting walking running jumping waving arms raised
pose t-pose dancing photo painting drawing sketch portrait landscape cat dog house tree sky sun
moon cloud mountain river sea city street forest flower car bird light dark bright colorful simple
detailed blurry ugly bad quality best high low resolution art style realistic cartoon scene
""".split()

SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
_PIECES = re.compile(r"[^\W\d_]+|\d|[^\s\w]+")  # CLIP's split for ASCII text: letter runs, digits, symbols


def _apply(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding (Sennrich et al. 2016): merge the lowest-ranked adjacent pair until none applies."""
    while len(symbols) > 1:
        rank, i = min((ranks.get(pair, math.inf), i) for i, pair in enumerate(zip(symbols, symbols[1:])))
        if rank == math.inf:
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return symbols


def build_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make every piece of every word one token; the same list on every build."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    pieces = sorted({p for w in words for p in _PIECES.findall(w.lower())})
    for piece in pieces:
        symbols = _apply(list(piece[:-1]) + [piece[-1] + "</w>"], ranks)
        while len(symbols) > 1:  # join the first two pieces left; a new last merge cannot split earlier words
            ranks[(symbols[0], symbols[1])] = len(merges)
            merges.append((symbols[0], symbols[1]))
            symbols = _apply(symbols, ranks)
    return merges


def build_tokenizer(words: list[str] = WORDS, model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIPTokenizer (transformers 5, from vocab and merges objects) whose merges keep `words` whole."""
    merges = build_merges(words)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # every byte alone and at a word's end, so unseen text never maps to <unk>; then the merged tokens
    tokens = alphabet + [ch + "</w>" for ch in alphabet] + [a + b for a, b in merges]
    vocab = {t: i for i, t in enumerate(SPECIAL + list(dict.fromkeys(tokens)))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_t5_tokenizer(words: list[str] = WORDS, model_max_length: int = 512):
    """A T5-style unigram tokenizer (transformers 5's T5Tokenizer from a (piece, score) list: no download) that
    keeps `words` whole; anything else falls back to single letters, so unseen text never maps to <unk> but
    for characters outside the words' alphabet. Its ids: <pad> 0, </s> 1, <unk> 2, as T5's."""
    from transformers import T5Tokenizer

    letters = sorted({ch for w in words for ch in w} | set("abcdefghijklmnopqrstuvwxyz0123456789,.-"))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in dict.fromkeys(words)]  # a whole word beats its letters
    pieces += [(ch, -3.0) for ch in letters] + [("\u2581" + ch, -3.0) for ch in letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
