"""Walks between two prompts (embeddings mixed) and two seeds (noise slerped): the ends are the plain pictures,
the frames move between them, the files are written, and the launched app answers /walk."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from playground import latents, walks
from playground.engine import Engine
from playground.errors import InvalidRequest
from playground.schema import GenerateRequest, WalkRequest

from conftest import tiny_settings

BASE = GenerateRequest(prompt="a red circle", negative_prompt="", seed=3, steps=4, scheduler="DDIM", width=64,
                       height=64)


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir))


def arrays(result) -> list[np.ndarray]:
    return [g.array for g in result.frames]


def test_a_walk_between_prompts_starts_and_ends_on_the_two_pictures(engine):
    result = engine.walk(WalkRequest(base=BASE, between="prompts", to_prompt="a blue square", frames=4))
    frames = arrays(result)
    first = engine.generate(BASE).images[0].array
    last = engine.generate(GenerateRequest(**{**BASE.__dict__, "prompt": "a blue square"})).images[0].array
    assert len(frames) == 4 and result.mix == [0, 1 / 3, 2 / 3, 1]
    assert np.abs(frames[0] - first).max() <= 2e-3 and np.abs(frames[-1] - last).max() <= 2e-3  # batched maths
    steps = [np.abs(frames[k + 1] - frames[k]).mean() for k in range(3)]
    assert all(s > 1e-4 for s in steps)  # every frame moves on
    assert dict(result.frames[1].params.extra)["Walk position"] == "0.333"


def test_a_walk_between_seeds_slerps_the_noise(engine):
    result = engine.walk(WalkRequest(base=BASE, between="seeds", to_seed=9, frames=3))
    frames = arrays(result)
    assert np.abs(frames[0] - engine.generate(BASE).images[0].array).max() <= 2e-3
    assert np.abs(frames[-1] - engine.generate(GenerateRequest(**{**BASE.__dict__, "seed": 9})).images[0].array
                  ).max() <= 2e-3
    a, b = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0)), \
        torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1))
    middle = latents.slerp(a, b, 0.5)
    loud = (a.norm() + b.norm()) / 2
    assert abs(float(middle.norm() / loud) - 1) < 0.05  # as loud as noise; a straight line's middle is ~0.71
    assert float(((a + b) / 2).norm() / loud) < 0.8


def test_a_walk_is_checked_and_written(engine, tmp_path):
    from playground.outputs import save_walk

    with pytest.raises(InvalidRequest, match="frames must be an integer from 2 to 16, got 40"):
        engine.walk(WalkRequest(base=BASE, frames=40))
    with pytest.raises(InvalidRequest, match="walk between 'colours'"):
        engine.walk(WalkRequest(base=BASE, between="colours"))
    result = engine.walk(WalkRequest(base=BASE, to_prompt="a blue square", frames=3))
    gif, strip, items = save_walk(result, tmp_path)
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.info.get("loop") == 0  # 3 frames there, the middle one back
    assert Image.open(strip).width > 3 * 64 and len(items) == 3


@pytest.mark.slow
def test_the_launched_app_walks(serve):
    _, client = serve()
    gif, strip, frames, info = client.predict("a red circle", "", 3, 4, 7.5, "DDIM", 64, 64, "prompts",
                                              "a blue square", -1, 4, api_name="/walk")
    assert len(frames) == 4 and gif.endswith(".gif") and "4 frames" in info
