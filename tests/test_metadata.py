"""PNG parameters chunk: our round trip, and reading A1111's own text."""

from __future__ import annotations

import pytest
from PIL import Image

from playground.metadata import Params, format_parameters, parse_parameters, read_png, save_png

P = Params(prompt="a red circle, on a blue: background\nsecond line", negative_prompt="blurry, ugly", steps=25,
           sampler="DPM++ 2M Karras", cfg_scale=7.5, seed=4294967295, width=512, height=768,
           model="stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_png_round_trip(tmp_path):
    path = save_png(Image.new("RGB", (8, 8), "red"), P, tmp_path / "x.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.info["parameters"].startswith("a red circle")
    assert read_png(path) == P


def test_text_is_a1111_shaped():
    text = format_parameters(P)
    lines = text.split("\n")
    assert lines[2] == "Negative prompt: blurry, ugly"
    assert lines[3].startswith("Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 4294967295, Size: 512x768")


def test_reads_a1111_text_with_schedule_type():
    text = ("masterpiece, a cat\nNegative prompt: lowres\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, "
            "CFG scale: 6, Seed: 123, Size: 512x640, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
            'Lora hashes: "a: 1, b: 2", Version: v1.10.1')
    p = parse_parameters(text)
    assert (p.prompt, p.negative_prompt, p.steps, p.sampler, p.cfg_scale, p.seed, p.width, p.height, p.model) == (
        "masterpiece, a cat", "lowres", 30, "DPM++ 2M Karras", 6.0, 123, 512, 640, "v1-5-pruned-emaonly")


def test_no_negative_prompt():
    p = parse_parameters("just a prompt\nSteps: 5, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64")
    assert p.prompt == "just a prompt" and p.negative_prompt == "" and p.sampler == "Euler a"


def test_png_without_parameters_is_a_named_error(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="plain.png"):
        read_png(tmp_path / "plain.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        read_png(tmp_path / "broken.png")


def test_cfg_stop_round_trips_and_is_left_out_at_the_end():
    from playground.metadata import Params, format_parameters, parse_parameters

    p = Params(prompt="a red circle", negative_prompt="", steps=20, sampler="DDIM", cfg_scale=7.5, seed=3, width=128,
               height=128, cfg_stop=0.6)
    text = format_parameters(p)
    assert "CFG stop: 0.6" in text and parse_parameters(text) == p
    full = format_parameters(Params(prompt="x", negative_prompt="", steps=20, sampler="DDIM", cfg_scale=7.5, seed=3,
                                    width=128, height=128))
    assert "CFG stop" not in full and parse_parameters(full).cfg_stop == 1.0
