"""The launched app on 127.0.0.1, driven through gradio_client like an API user would."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from playground.metadata import read_png
from playground.schema import GenerateRequest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(serve):
    return serve()


def call_generate(client, prompt="a red circle", negative="", seed=3, steps=4, cfg=7.5, scheduler="Euler a",
                  width=64, height=64, n=2):
    return client.predict(prompt, negative, seed, steps, cfg, scheduler, width, height, n, api_name="/generate")


def test_generate_returns_pngs_with_parameters(served):
    engine, client = served
    preview, gallery, info, seed_used = call_generate(client)
    assert seed_used == 3 and "Seed 3" in info and "4 model evaluations per image" in info
    assert len(gallery) == 2 and Image.open(preview).size == (64, 64)
    for k, item in enumerate(gallery):
        with Image.open(item["image"]) as im:
            assert im.format == "PNG" and im.size == (64, 64)
            got = np.asarray(im.convert("RGB"))
        params = read_png(item["image"])
        assert (params.prompt, params.seed, params.steps, params.sampler) == ("a red circle", 3 + k, 4, "Euler a")
        # lossless PNG: the image made again alone from its own seed matches (batched maths rounds
        # differently from a batch of one, so allow one level in 255)
        want = engine.generate(GenerateRequest(prompt="a red circle", seed=3 + k, steps=4, scheduler="Euler a"))
        assert np.abs(got.astype(int) - np.asarray(want.images[0].image, dtype=int)).max() <= 1


def test_random_seed_is_reported(served):
    _, client = served
    _, gallery, info, seed_used = call_generate(client, seed=-1, n=1)
    assert 0 <= seed_used < 2**32 and f"Seed {seed_used}" in info
    assert read_png(gallery[0]["image"]).seed == seed_used


def test_bad_input_is_a_clear_error_and_server_keeps_serving(served):
    _, client = served
    with pytest.raises(Exception, match="width must be a multiple of 8, got 68"):
        call_generate(client, width=68)
    with pytest.raises(Exception, match="steps must be an integer from 1 to 50"):
        call_generate(client, steps=500)
    assert len(call_generate(client, n=1)[1]) == 1


def test_restore_settings_from_png(served, tmp_path):
    _, client = served
    _, gallery, _, _ = call_generate(client, prompt="blue star", negative="ugly", seed=9, steps=5, cfg=4,
                                     scheduler="UniPC", width=72, height=64, n=1)
    restored = client.predict(handle_file(gallery[0]["image"]), api_name="/restore")
    assert list(restored[:8]) == ["blue star", "ugly", 9, 5, 4, "UniPC", 72, 64]
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(Exception, match="no 'parameters' text chunk"):
        client.predict(handle_file(str(tmp_path / "plain.png")), api_name="/restore")


def test_cfg_stop_through_the_api_is_kept_in_the_png_and_restored(served):
    _, client = served
    _, gallery, info, _ = client.predict("a red circle", "", 3, 4, 7.5, "DDIM", 64, 64, 1, 0, 0, 0, "", 0.5,
                                         api_name="/generate")
    assert read_png(gallery[0]["image"]).cfg_stop == 0.5 and "CFG 7.5 to 0.5 of the steps" in info
    restored = client.predict(handle_file(gallery[0]["image"]), api_name="/restore")
    assert restored[-1] == 0.5  # the CFG stop slider, after the model
    _, full, _, _ = client.predict("a red circle", "", 3, 4, 7.5, "DDIM", 64, 64, 1, api_name="/generate")
    assert read_png(full[0]["image"]).cfg_stop == 1 and restored[:8] == client.predict(
        handle_file(full[0]["image"]), api_name="/restore")[:8]
    with pytest.raises(Exception, match="CFG stop must be a number from 0 to 1, got 2"):
        client.predict("a red circle", "", 3, 4, 7.5, "DDIM", 64, 64, 1, 0, 0, 0, "", 2, api_name="/generate")
