"""The second offline model's code (playground/tiny/mmdit.py) at the tests' size: a few training steps, the
export loaded through the app's own loader and run through the app's SD3 path, checked against diffusers'
StableDiffusion3Pipeline on the same weights, and the import that resumes training from an export."""

from __future__ import annotations

import json
from pathlib import Path

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


SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "offline-mmdit"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no exported MMDiT in assets/")
def test_the_shipped_mmdit_loads_and_draws_the_colours_and_backgrounds_it_is_asked_for(tmp_path):
    """assets/offline-mmdit through the app's loader: an SD3 at 128 px, one zero T5 token. A red shape on black and
    a blue one on white come out in those colours on those backgrounds, and not in each other's (its shapes are
    still blobs: README, "The second offline model")."""
    from playground.settings import Settings

    settings = Settings(model=str(SHIPPED), device="cpu", output_dir=tmp_path)
    model = load_model(settings)
    assert model.family.flow and model.t5_tokens == 1 and model.native_size == 128 and model.trained
    engine = Engine(model, settings)

    def draw(prompt):
        return engine.generate(GenerateRequest(prompt=prompt, seed=1, steps=25, cfg_scale=5.0,
                                               scheduler="Flow Euler")).images[0].array

    def share(image, colour):
        r, g, b = image[..., 0], image[..., 1], image[..., 2]
        return float({"red": (r > 0.5) & (g < 0.35) & (b < 0.35), "blue": (b > 0.5) & (r < 0.35) & (g < 0.5),
                      "black": image.max(axis=-1) < 0.25, "white": image.min(axis=-1) > 0.8}[colour].mean())

    red = draw("a large red square at the top left on a black background")
    blue = draw("a large blue circle in the center on a white background")
    assert share(red, "red") > 0.05 and share(red, "black") > 0.2 and share(red, "blue") < 0.01
    assert share(blue, "blue") > 0.03 and share(blue, "white") > 0.3 and share(blue, "red") < 0.01
