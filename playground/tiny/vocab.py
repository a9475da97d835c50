"""A small CLIP-style BPE tokenizer trained on the playground's own word list (no download)."""

from __future__ import annotations

import json

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
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

# CLIP's own pre-tokenizer split (same regex transformers' CLIPTokenizer uses).
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def build_tokenizer(words: list[str] = WORDS, model_max_length: int = 77) -> CLIPTokenizer:
    """Train a byte-level BPE whose merges make every word in `words` a single token."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,  # never reached: training stops when every word is one token
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(words)] * 2, trainer=trainer)

    vocab = dict(bpe.get_vocab())
    # Every byte must also be able to end a word, or unseen words would map to <unk>.
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        if ch + "</w>" not in vocab:
            vocab[ch + "</w>"] = len(vocab)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
