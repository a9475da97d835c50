"""The prompt as the text encoder's tokenizer splits it: pure Python over a tokenizer, no torch.

The token counter, the attention chips and the word lookup of the `attention` endpoint all read
prompts through here, so the same split is shown, checked and recorded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from playground.errors import InvalidRequest
from playground.weights import is_weighted, parse, plain

START, END = "<start>", "<end>"

# Fast tokenizers set padding/truncation on the shared Rust object before each call, so two
# threads tokenizing with different settings could see each other's: one lock for all calls.
_TOKENIZER_LOCK = threading.Lock()


def tokenize(tokenizer, texts: list[str], **kwargs):
    """tokenizer(texts, **kwargs), safe to call from several request threads at once."""
    with _TOKENIZER_LOCK:
        return tokenizer(texts, **kwargs)


def weighted_ids(tokenizer, prompts: list[str], max_length: int) -> tuple[list[list[int]], list[list[float]], list[int]]:
    """For each prompt: its token ids padded (or cut) to `max_length` with the tokenizer's special tokens, each
    token's weight (A1111's syntax, `playground.weights`; 1 for special tokens and padding), and how many ids are
    not padding. A prompt that weights nothing is tokenized whole, exactly as the pipelines do; a weighted one
    chunk by chunk, so that each weight lands on its own words' tokens."""
    ids, weights, lengths = [], [], []
    for prompt in prompts:
        if not is_weighted(prompt):  # (its text without any syntax: "(red:1.0)" is "red")
            row = tokenize(tokenizer, [plain(prompt)], padding="max_length", max_length=max_length, truncation=True)
            ids.append(list(row["input_ids"][0]))
            weights.append([1.0] * len(ids[-1]))
            lengths.append(int(sum(row["attention_mask"][0])))
            continue
        body, body_weights = [], []
        for text, weight in parse(prompt):
            pieces = tokenize(tokenizer, [text], add_special_tokens=False)["input_ids"][0]
            body += pieces
            body_weights += [weight] * len(pieces)
        empty = tokenize(tokenizer, [""])["input_ids"][0]  # the special tokens alone: CLIP's start + end, T5's end
        head = empty[:1] if tokenizer.bos_token_id is not None and empty[:1] == [tokenizer.bos_token_id] else []
        tail = empty[len(head):]
        room = max_length - len(head) - len(tail)
        row = head + body[:room] + tail
        row_weights = [1.0] * len(head) + body_weights[:room] + [1.0] * len(tail)
        lengths.append(len(row))
        ids.append(row + [tokenizer.pad_token_id] * (max_length - len(row)))
        weights.append(row_weights + [1.0] * (max_length - len(row)))
    return ids, weights, lengths


@dataclass(frozen=True)
class Token:
    text: str  # as shown: a word piece without CLIP's "</w>", or <start> / <end>
    position: int  # index in the tokenized prompt (0 = start token); past the limit for dropped ones
    kind: str  # "start", "word", "end" or "dropped" (past the 77-token window: the model never sees it)
    encoder: str = "CLIP"  # whose tokens: CLIP's, or SD3's T5 (after CLIP's 77 in the MMDiT's text sequence)


def split_prompt(tokenizer, prompt: str) -> list[Token]:
    """Every token of `prompt` as CLIP's tokenizer makes it, marking the ones the window cuts off."""
    ids = tokenize(tokenizer, [prompt], truncation=False)["input_ids"][0]  # start, words..., end
    limit = tokenizer.model_max_length
    pieces = tokenizer.convert_ids_to_tokens(ids[1:-1])
    out = [Token(START, 0, "start")]
    for k, piece in enumerate(pieces, start=1):
        # the window keeps start + limit-2 word pieces + end
        out.append(Token(piece.replace("</w>", ""), k, "word" if k < limit - 1 else "dropped"))
    kept_words = sum(t.kind == "word" for t in out)
    out.insert(kept_words + 1, Token(END, kept_words + 1, "end"))
    return out


def split_t5(tokenizer, prompt: str, offset: int, window: int) -> list[Token]:
    """Every T5 token of `prompt` (SD3's third encoder: word pieces, then its end token), placed after CLIP's
    `offset` positions in the text sequence; the ones past T5's `window` marked as dropped."""
    ids = tokenize(tokenizer, [prompt])["input_ids"][0]  # pieces..., </s>
    pieces = tokenizer.convert_ids_to_tokens(ids[:-1])
    out = [Token(p.replace("\u2581", "") or "\u2581", offset + k, "word" if k < window - 1 else "dropped", "T5")
           for k, p in enumerate(pieces)]
    kept_words = sum(t.kind == "word" for t in out)
    out.insert(kept_words, Token(END, offset + kept_words, "end", "T5"))
    return out


def kept(tokens: list[Token]) -> list[Token]:
    """The tokens the denoiser attends to (start, words inside the window, end), in order."""
    return [t for t in tokens if t.kind != "dropped"]


# words that rarely paint anything: the token shown first is the first word not among them
FILLER = {"a", "an", "the", "of", "on", "in", "at", "with", "and", "or", "to", "by", "from"}


def first_word(tokens: list[Token]) -> int:
    """Index (into `kept(tokens)`) of the first word worth a map: not a filler word; else the first token."""
    shown = kept(tokens)
    return next((k for k, t in enumerate(shown) if t.kind == "word" and t.text.lower() not in FILLER),
                1 if len(shown) > 2 else 0)


def find_word(tokens: list[Token], word: str, tokenizer) -> list[int]:
    """Indices (into `kept(tokens)`) of the token pieces that spell `word`; InvalidRequest naming it if absent."""
    shown = kept(tokens)
    want = word.strip().lower()
    if want in (START, END):
        return [k for k, t in enumerate(shown) if t.text == want]
    pieces = [p.replace("</w>", "") for p in tokenizer.tokenize(want)]  # no padding / truncation state
    texts = [t.text for t in shown]
    for k in range(len(texts) - len(pieces) + 1):
        if pieces and texts[k: k + len(pieces)] == pieces:
            return list(range(k, k + len(pieces)))
    words = ", ".join(repr(t.text) for t in shown if t.kind == "word")
    raise InvalidRequest(f"word {word!r} is not among the prompt's tokens; choose one of: {words} (or {START}, {END})")


def resolution_names(grids: list[tuple[int, ...]]) -> list[str]:
    """'all' and 'WxH' for each (h, w) grid, or 'blocks a-b' ('block a') for an MMDiT's band (h, w, a, b): the
    layer choices."""
    def name(g):
        if len(g) == 2:
            return f"{g[1]}x{g[0]}"
        return f"block {g[2]}" if g[2] == g[3] else f"blocks {g[2]}-{g[3]}"
    return ["all", *(name(g) for g in grids)]


MAX_WORD_CHARS = 200  # a word to look up among the prompt's tokens


def check_resolution(resolution, names: list[str]) -> str:
    """'all' (None and '' too) or one of the layer choices `names` ('all', '8x8', ...); InvalidRequest naming them."""
    if resolution in (None, ""):
        return "all"
    if resolution not in names:
        raise InvalidRequest(f"layer resolution {resolution!r} is not one this model has at this size; "
                             f"choose one of: {', '.join(names)}")
    return resolution
