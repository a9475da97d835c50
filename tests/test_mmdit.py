"""The second offline model's code (playground/tiny/mmdit.py) at the tests' size: a few training steps, the
export loaded through the app's own loader and run through the app's SD3 path, checked against diffusers'
StableDiffusion3Pipeline on the same weights, and the import that resumes training from an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from playground.engine import Engine
from playground.loading import MARKER, load_model
from playground.requests import GenerateRequest
from playground.tiny import mmdit

from conftest import tiny_settings


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run, out = tmp_path_factory.mktemp("mmdit-run"), tmp_path_factory.mktemp("mmdit-out")
    mmdit.main(["train", "--test-size", "--steps", "2", "--batch", "4", "--ckpt-dir", str(run)])
    mmdit.main(["export", str(out), "--test-size", "--ckpt-dir", str(run)])
    return run, out


def test_training_moves_the_weights_and_resumes_from_its_step(exported, tmp_path):
    run, _ = exported
    state = torch.load(run / "mmdit.pt", weights_only=False)
    assert state["step"] == 2 and state["arch"]["layers"] == mmdit.TEST_MMDIT.layers
    fresh = mmdit.new_transformer(mmdit.TEST_MMDIT).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in state["model"].items())
    mmdit.main(["train", "--test-size", "--steps", "1", "--batch", "2", "--ckpt-dir", str(run)])
    assert torch.load(run / "mmdit.pt", weights_only=False)["step"] == 3


def test_the_export_loads_through_the_app_as_an_sd3_and_matches_diffusers(exported):
    from diffusers import StableDiffusion3Pipeline

    _, out = exported
    marker = json.loads((out / MARKER).read_text())
    assert marker["t5_tokens"] == 1 and marker["name"] == "playground-offline-mmdit"
    settings = tiny_settings(out)
    model = load_model(settings)
    assert model.family.name.startswith("SD3") and model.t5_tokens == 1 and model.offline
    engine = Engine(model, settings)
    req = GenerateRequest(prompt="a red circle on the left", seed=4, steps=6, cfg_scale=4.0, scheduler="Flow Euler")
    ours = engine.generate(req).images[0].array
    pipe = model.pipe
    reference = StableDiffusion3Pipeline(**{k: v for k, v in pipe.components.items()})
    theirs = reference(req.prompt, num_inference_steps=6, guidance_scale=4.0, height=model.native_size,
                       width=model.native_size, max_sequence_length=1, output_type="np",
                       generator=torch.Generator().manual_seed(4)).images[0]
    assert float(np.abs(ours - theirs).max()) <= 1e-4
    count = engine.count_tokens("a red circle")
    assert count.t5 is None or count.t5.limit == 1


def test_an_export_imports_back_into_a_checkpoint(exported, tmp_path):
    _, out = exported
    mmdit.main(["import", str(out), "--ckpt-dir", str(tmp_path)])
    state = torch.load(tmp_path / "mmdit.pt", weights_only=False)
    assert state["step"] >= 2 and "opt" not in state
    mmdit.main(["train", "--test-size", "--steps", "1", "--batch", "2", "--ckpt-dir", str(tmp_path)])
    assert torch.load(tmp_path / "mmdit.pt", weights_only=False)["step"] == state["step"] + 1
