"""Prompt weighting, A1111's syntax: the parser, the tokens each weight lands on, the encoders' states, and the
Engine: a word turned up changes the picture, its map is still found, the PNG keeps the weighted prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground.schema import TokenRequest
from playground.weights import is_weighted, parse, plain


@pytest.mark.parametrize("prompt,chunks", [
    ("a red circle", [("a red circle", 1.0)]),
    ("a (red:1.4) circle", [("a ", 1.0), ("red", 1.4), (" circle", 1.0)]),
    ("a ((red)) circle", [("a ", 1.0), ("red", 1.21), (" circle", 1.0)]),
    ("a [blue] square", [("a ", 1.0), ("blue", 1 / 1.1), (" square", 1.0)]),
    ("(a (red) circle:1.5)", [("a ", 1.5), ("red", 1.65), (" circle", 1.5)]),
    ("(red:0.5) and (blue:2)", [("red", 0.5), (" and ", 1.0), ("blue", 2.0)]),
    (r"a \(red\) circle", [("a (red) circle", 1.0)]),  # escaped: the characters themselves
    ("a (red circle", [("a ", 1.0), ("red circle", 1.1)]),  # unclosed: to the end, as A1111
    ("a red) circle, ratio 16:9 :)", [("a red) circle, ratio 16:9 :)", 1.0)]),  # stray: text
])
def test_a1111_syntax(prompt, chunks):
    got = parse(prompt)
    assert [t for t, _ in got] == [t for t, _ in chunks]
    assert np.allclose([w for _, w in got], [w for _, w in chunks])
    assert plain(prompt) == "".join(t for t, _ in chunks)
    assert is_weighted(prompt) == any(abs(w - 1) > 1e-9 for _, w in chunks)


def test_each_weight_lands_on_its_own_tokens_and_the_ids_are_the_plain_prompts():
    from playground.tiny.vocab import build_t5_tokenizer, build_tokenizer
    from playground.tokens import weighted_ids

    for tokenizer in (build_tokenizer(), build_t5_tokenizer()):
        (plain_ids,), _, _ = weighted_ids(tokenizer, ["a red circle on the left"], 16)
        (ids,), (weights,), (n,) = weighted_ids(tokenizer, ["a (red:1.4) circle on the [left]"], 16)
        assert ids == plain_ids and len(ids) == 16
        words = tokenizer.convert_ids_to_tokens(ids[:n])
        strong = [w for w, k in zip(words, weights) if k == 1.4]
        weak = [w for w, k in zip(words, weights) if abs(k - 1 / 1.1) < 1e-9]
        assert [w.strip("\u2581").replace("</w>", "") for w in strong] == ["red"]
        assert [w.strip("\u2581").replace("</w>", "") for w in weak] == ["left"]
        (cut,), _, (m,) = weighted_ids(tokenizer, ["(" + "red " * 40 + ":1.2)"], 16)  # cut to the window
        assert len(cut) == 16 and m == 16


def test_weights_turn_a_word_up_in_the_encoders_states(tiny_model):
    from playground.sampling import Components

    c = Components.from_pipeline(tiny_model.pipe)
    family = c.family
    base = family.encode_prompts(c, ["a red circle"]).embeds[0]
    assert torch.equal(family.encode_prompts(c, ["a (red:1.0) circle"]).embeds[0], base)  # 1.0 changes nothing
    up = family.encode_prompts(c, ["a (red:1.5) circle"]).embeds[0]
    assert abs(float(up.mean() - base.mean())) < 1e-5  # scaled back to the prompt's own mean
    ratio = (up.norm(dim=-1) / base.norm(dim=-1))
    # "red" turned up 1.5x against the rest, which all share one factor (the mean's rescale)
    assert abs(float(ratio[2] / ratio[0]) - 1.5) < 1e-4 and float((ratio[[0, 1, 3, 4]] - ratio[0]).abs().max()) < 1e-4


def test_the_engine_draws_a_weighted_word_and_its_map_is_found(tiny_model, tiny_dir):
    from conftest import tiny_settings
    from playground.engine import Engine
    from playground.schema import GenerateRequest, InspectRequest

    engine = Engine(tiny_model, tiny_settings(tiny_dir))
    req = GenerateRequest(prompt="a red circle", seed=3, steps=3, scheduler="DDIM", width=64, height=64)
    plain_img = engine.generate(req).images[0]
    weighted = engine.generate(GenerateRequest(**{**req.__dict__, "prompt": "a (red:1.6) circle"})).images[0]
    assert np.abs(weighted.array - plain_img.array).max() > 1e-3
    assert weighted.params.prompt == "a (red:1.6) circle"  # the PNG keeps the weighted prompt
    count = engine.count_tokens(TokenRequest("a (red:1.6) circle"))
    assert count.used == engine.count_tokens(TokenRequest("a red circle")).used == 5  # the syntax is not counted
    traj, view = engine.attention(InspectRequest(base=GenerateRequest(**{**req.__dict__, "prompt": "a (red:1.6) circle"}),
                                                 word="red"))
    assert view.token == "red" and [t.text for t in traj.attention.kept] == ["<start>", "a", "red", "circle", "<end>"]
