"""Shared fixtures: a tiny random-weight SD-shaped model saved to disk and loaded the app's way."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from playground.loading import LoadedModel, load_model
from playground.settings import Settings
from playground.tiny import untrained

torch.set_num_threads(int(os.environ.get("PLAYGROUND_TEST_THREADS", "2")))


def tiny_settings(model_dir, **overrides) -> Settings:
    s = Settings(model=str(model_dir), device="cpu", dtype="float32", max_steps=50, max_size=128, max_images=4)
    return dataclasses.replace(s, **overrides)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A TEST-preset pipeline written with save_pretrained (fp32, 64x64 native, 8x8 latents)."""
    out = tmp_path_factory.mktemp("tiny-sd")
    untrained.write(out, untrained.TEST, seed=0, dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_vpred_dir(tmp_path_factory):
    """The same model configured for v-prediction, like SD 2.x."""
    out = tmp_path_factory.mktemp("tiny-sd-v")
    untrained.write(out, dataclasses.replace(untrained.TEST, prediction_type="v_prediction"), seed=0, dtype=torch.float32)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_dir) -> LoadedModel:
    """Loaded through playground.loading, exactly as the app loads a --model directory."""
    return load_model(tiny_settings(tiny_dir))
