"""Engine: validation, seeds, token counting, and isolation between concurrent requests."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from playground.engine import Engine
from playground.errors import InvalidRequest
from playground.schema import GenerateRequest, TokenRequest

from conftest import tiny_settings


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir))


def pixels(result):
    return [np.asarray(g.image, dtype=np.int16) for g in result.images]


OK = dict(prompt="a red circle", steps=3, width=64, height=64)

# (field, bad value, words the message must contain): every range and type the Prompt tab accepts
BAD = [
    ("width", 68, ["width", "multiple of 8", "68", "64 or 72"]),
    ("height", 100, ["height", "multiple of 8", "100"]),
    ("width", 32, ["width", "64 to 128", "32"]),
    ("height", 4096, ["height", "64 to 128", "4096"]),
    ("steps", 0, ["steps", "1 to 50", "0"]),
    ("steps", 51, ["steps", "1 to 50", "51"]),
    ("steps", 2.5, ["steps", "2.5"]),
    ("steps", float("nan"), ["steps", "nan"]),
    ("cfg_scale", float("nan"), ["CFG scale", "0 to 30", "nan"]),
    ("cfg_scale", float("inf"), ["CFG scale", "inf"]),
    ("cfg_scale", -1, ["CFG scale", "-1"]),
    ("cfg_scale", 31, ["CFG scale", "31"]),
    ("cfg_scale", "high", ["CFG scale", "high"]),
    ("num_images", 0, ["number of images", "1 to 4", "0"]),
    ("num_images", 5, ["number of images", "5"]),
    ("seed", -2, ["seed", "-2"]),
    ("seed", 2**32, ["seed", str(2**32)]),
    ("seed", "abc", ["seed", "abc"]),
    ("scheduler", "Euler b", ["scheduler", "Euler b", "DPM++ 2M"]),
    ("prompt", 12, ["prompt", "text"]),
    ("prompt", "x" * 20_001, ["prompt", "20001", "limit"]),
    ("negative_prompt", "y" * 20_001, ["negative prompt", "20001"]),
]


@pytest.mark.parametrize("field,value,words", BAD, ids=[f"{f}={str(v)[:12]}" for f, v, _ in BAD])
def test_bad_input_is_named_and_next_request_works(engine, field, value, words):
    with pytest.raises(InvalidRequest) as err:
        engine.generate(GenerateRequest(**{**OK, field: value}))
    for w in words:
        assert w.lower() in str(err.value).lower()
    assert len(engine.generate(GenerateRequest(**OK)).images) == 1


def test_empty_prompt_is_unconditional_generation(engine):
    """With an empty prompt and negative prompt, cond == uncond, so every CFG scale gives the one
    unconditional image; any prompt gives another."""
    def image(prompt, cfg):
        req = GenerateRequest(prompt=prompt, cfg_scale=cfg, steps=3, width=64, height=64, seed=1, scheduler="DDIM")
        return engine.generate(req).images[0].array

    empty = image("", 7.5)
    assert np.abs(empty - image("", 1.0)).max() <= 1e-5 and np.abs(empty - image("", 0.0)).max() <= 1e-5
    assert np.abs(empty - image("a red circle", 7.5)).max() > 1e-3


def test_default_size_is_the_models_native_size(engine):
    r = engine.generate(GenerateRequest(prompt="x", steps=1, seed=1))
    assert (r.request.width, r.request.height) == (64, 64) == r.images[0].image.size


def test_random_seed_is_resolved_and_reproduces(engine):
    a = engine.generate(GenerateRequest(**OK, seed=-1, num_images=2))
    assert 0 <= a.request.seed < 2**32
    assert [g.params.seed for g in a.images] == [a.request.seed, a.request.seed + 1]
    # image 1 alone, from the seed written in its PNG parameters, is the same picture
    again = engine.generate(GenerateRequest(**OK, seed=a.images[1].params.seed))
    assert np.abs(pixels(again)[0] - pixels(a)[1]).max() <= 1  # batch-of-2 vs batch-of-1 rounding
    same = engine.generate(GenerateRequest(**{**OK, "seed": a.request.seed, "num_images": 2}))
    assert all(np.array_equal(x, y) for x, y in zip(pixels(same), pixels(a)))  # same request: bit for bit


def test_non_square_size(engine):
    r = engine.generate(GenerateRequest(**{**OK, "width": 128, "height": 72}))
    assert r.images[0].image.size == (128, 72)


def test_progress_reports_every_step_with_a_preview(engine):
    seen = []
    engine.generate(GenerateRequest(**{**OK, "steps": 4}, scheduler="Euler"), on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3, 4] and all(p.total == 4 for p in seen)
    assert seen[0].preview is not None and seen[-1].preview.size == (64, 64)  # first and last always
    assert not np.array_equal(np.asarray(seen[0].preview), np.asarray(seen[-1].preview))  # it moves


def test_previews_are_throttled(engine, monkeypatch):
    from playground import engine as engine_mod

    monkeypatch.setattr(engine_mod, "PREVIEW_INTERVAL", 3600)
    seen = []
    engine.generate(GenerateRequest(**{**OK, "steps": 6}, scheduler="Euler"), on_progress=seen.append)
    assert [p.preview is not None for p in seen] == [True, False, False, False, False, True]


def test_jobs_sharing_the_denoiser_space_their_previews_by_how_many_share_it(monkeypatch):
    """Alone, a preview every PREVIEW_INTERVAL; with four jobs in the batch, every four intervals (the server sends
    about as many in all); the first and the last step always have one."""
    from types import SimpleNamespace

    from playground import engine as engine_mod

    clock = iter(np.arange(0, 100, 0.25))  # a step every quarter of a second
    monkeypatch.setattr(engine_mod.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(engine_mod, "PREVIEW_INTERVAL", 0.2)

    def previews(sharing):
        seen = []
        observer = engine_mod.progress_observer(seen.append, "denoising", preview=lambda x0: "image",
                                                sharing=sharing)
        for i in range(12):
            observer(SimpleNamespace(index=i, total=12, x0=torch.zeros(1, 4, 8, 8)))
        return [k for k, p in enumerate(seen) if p.preview is not None]

    assert previews(None) == list(range(12)) and previews(lambda: 1) == list(range(12))
    assert previews(lambda: 4) == [0, 4, 8, 11]


def test_model_evaluations_are_counted(engine):
    assert engine.generate(GenerateRequest(**{**OK, "steps": 4}, scheduler="Heun")).unet_calls == 7
    assert engine.generate(GenerateRequest(**{**OK, "steps": 4}, scheduler="DDIM")).unet_calls == 4


def test_token_counter(engine):
    short = engine.count_tokens(TokenRequest("a red circle"))
    assert (short.used, short.limit, short.dropped) == (5, 77, "")  # start + 3 words + end
    long = engine.count_tokens(TokenRequest(" ".join(["red"] * 80)))
    assert long.used == 82 and long.limit == 77
    assert long.dropped == " ".join(["red"] * 5)  # 75 words fit between start and end


def test_concurrent_requests_do_not_leak(engine):
    """Threads with different schedulers, seeds, sizes and prompts give what each gives alone."""
    reqs = [
        GenerateRequest(prompt="a red circle", seed=1, steps=4, scheduler="Euler a", width=64, height=64),
        GenerateRequest(prompt="blue square", seed=2, steps=5, scheduler="DPM++ 2M SDE Karras", width=72, height=64),
        GenerateRequest(prompt="", seed=3, steps=3, scheduler="PNDM", cfg_scale=2, width=64, height=80),
        GenerateRequest(prompt=" ".join(["green star"] * 50), seed=4, steps=4, scheduler="UniPC", width=64, height=64,
                        num_images=2),
        GenerateRequest(prompt="yellow", seed=5, steps=6, scheduler="Heun", width=64, height=64),
        GenerateRequest(prompt="a red circle", seed=1, steps=4, scheduler="LMS", cfg_scale=12, width=64, height=64),
    ]
    alone = [pixels(engine.generate(r)) for r in reqs]
    results: dict[int, list] = {}

    def run(k):
        tokens = [engine.count_tokens(TokenRequest("x " * k)) for _ in range(20)]  # tokenizer traffic in between
        results[k] = pixels(engine.generate(reqs[k]))
        assert all(t.used == k + 2 for t in tokens)

    for _ in range(2):
        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(reqs))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for k in range(len(reqs)):
            assert all(np.array_equal(a, b) for a, b in zip(results[k], alone[k])), reqs[k]


def test_native_size_is_the_unet_sample_size_times_the_vae_factor(engine):
    assert engine.native_size == 64 and engine.vae_factor == 8  # arch.TEST: an 8x8 latent through the f=8 VAE
