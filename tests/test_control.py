"""ControlNet: preprocessors, fitting, the shared pipeline, zero-ControlNet equivalence, bad input, the API."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel

from playground import preprocessors
from playground.engine import Engine
from playground.preprocessors import CannyOptions
from playground.errors import ControlNetUnavailable, InvalidRequest
from playground.schema import ControlRequest, GenerateRequest
from playground.loading import controlnet_source
from playground.metadata import read_png
from playground.settings import ASSETS

from conftest import tiny_settings

SCENE = ASSETS / "examples" / "scene.png"
GENERATE = {f.name for f in dataclasses.fields(GenerateRequest)}


def creq(**kw) -> ControlRequest:
    """A ControlRequest from flat keywords: generation settings go to its base, thresholds to its Canny options."""
    base = GenerateRequest(**{k: v for k, v in kw.items() if k in GENERATE})
    params = {k: kw[k] for k in ("low", "high") if k in kw}
    rest = {k: v for k, v in kw.items() if k not in GENERATE and k not in params}
    return ControlRequest(canny=CannyOptions(**params), base=base, **rest)


def _save_controlnet(unet, out, zero: bool):
    torch.manual_seed(1)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 8))  # f=8 like the VAE
    if not zero:  # what training does: the zero convolutions stop being zero
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                torch.nn.init.normal_(p, std=0.5)
    net.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def nets(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("controlnets")
    return (_save_controlnet(tiny_model.pipe.unet, root / "canny", zero=False),
            _save_controlnet(tiny_model.pipe.unet, root / "zero", zero=True))


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir, nets):
    canny_dir, zero_dir = nets
    return Engine(tiny_model, tiny_settings(tiny_dir, controlnets={"canny": str(canny_dir), "openpose": str(zero_dir)}))


def square() -> Image.Image:
    im = np.zeros((64, 64, 3), np.uint8)
    im[16:48, 16:48] = 255
    return Image.fromarray(im)


def test_canny_finds_the_square_outline():
    edges = np.asarray(preprocessors.canny(square(), 100, 200))[..., 0]
    assert set(np.unique(edges)) == {0, 255}
    assert edges[16:48, 14:18].any() and edges[16:48, 46:50].any()  # left and right sides
    assert not edges[22:42, 22:42].any() and not edges[:10].any()  # flat inside and outside: no edges


def test_fit_modes():
    wide = Image.new("RGB", (200, 100), "white")
    assert preprocessors.fit(wide, 64, 64, "crop").size == (64, 64)
    padded = np.asarray(preprocessors.fit(wide, 64, 64, "pad"))
    assert padded.shape == (64, 64, 3) and padded[0, 32].sum() == 0 and padded[32, 32].sum() == 765  # black bars
    assert preprocessors.fit(wide, 64, 48, "stretch").size == (64, 48)
    with pytest.raises(ValueError, match="unknown resize mode 'zoom'"):
        preprocessors.fit(wide, 64, 64, "zoom")
    assert max(preprocessors.downscale(Image.new("RGB", (5000, 100)), 128).size) == 128


def test_preprocess_fits_and_validates(engine, tmp_path):
    m = engine.preprocess(creq(image=SCENE, mode="canny", width=128, height=64))
    assert m.size == (128, 64) and set(np.unique(np.asarray(m))) <= {0, 255}
    as_is = engine.preprocess(creq(image=square(), mode="image", width=64, height=64))
    assert np.array_equal(np.asarray(as_is), np.asarray(square()))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    for req, words in [(creq(image=None), "no image given"),
                       (creq(image=tmp_path / "bad.jpg"), "bad.jpg is not a readable image"),
                       (creq(image=SCENE, mode="depth"), "unknown control mode 'depth'"),
                       (creq(image=SCENE, resize="zoom"), "unknown resize mode 'zoom'"),
                       (creq(image=SCENE, low=300), "Canny low threshold must be an integer from 0 to 255"),
                       (creq(image=SCENE, low=200, high=100), "must not be above the high one"),
                       (creq(image=SCENE, width=68), "width must be a multiple of 8")]:
        with pytest.raises(InvalidRequest, match=words):
            engine.preprocess(req)


def test_zero_controlnet_leaves_the_prompt_tab_output(engine):
    """The ControlNet paper's zero convolutions hold in our loop, through the Engine."""
    req = dict(prompt="a red circle", negative_prompt="blurry", seed=3, steps=4, scheduler="DDIM", width=64,
               height=64)
    plain = engine.generate(GenerateRequest(**req)).images[0].array
    zero = engine.control(creq(image=SCENE, mode="image", controlnet="openpose", **req)).images[0].array
    assert np.abs(plain - zero).max() <= 1e-4
    steered = engine.control(creq(image=SCENE, mode="canny", controlnet="canny", **req))
    assert np.abs(plain - steered.images[0].array).max() > 1e-3  # a trained-looking one does change it
    weak = engine.control(creq(image=SCENE, conditioning_scale=0.0, **req)).images[0].array
    assert np.abs(plain - weak).max() <= 1e-4  # scale 0: no effect
    params = steered.images[0].params
    assert dict(params.extra)["ControlNet"] == "canny" and params.seed == 3


def test_controlnet_reuses_the_base_components_and_loads_once(tiny_model, tiny_dir, nets, monkeypatch):
    def no_second_copy(*a, **k):
        raise AssertionError("the ControlNet path must not load base weights again")

    for cls in (UNet2DConditionModel, AutoencoderKL, CLIPTextModel):
        monkeypatch.setattr(cls, "from_pretrained", no_second_copy)
    loads = []
    real = ControlNetModel.from_pretrained.__func__
    monkeypatch.setattr(ControlNetModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a[0]) or real(cls, *a, **k)))
    engine = Engine(tiny_model, tiny_settings(tiny_dir, controlnets={"canny": str(nets[0])}))
    for _ in range(2):
        engine.control(creq(image=SCENE, prompt="x", seed=1, steps=2))
    assert loads == [str(nets[0])]  # loaded once, on first use
    assert engine.components.unet is tiny_model.pipe.unet and engine.components.vae is tiny_model.pipe.vae
    assert engine.components.text_encoder is tiny_model.pipe.text_encoder
    net, _ = engine.annotators._controlnets["canny"]
    assert net.dtype == tiny_model.dtype


def test_bad_control_settings(engine):
    base = dict(image=SCENE, prompt="x", seed=1, steps=2)
    for change, words in [(dict(conditioning_scale=2.5), "conditioning scale must be a number from 0 to 2"),
                          (dict(guidance_start=0.8, guidance_end=0.5), "guidance start (0.8) must be below"),
                          (dict(guidance_end=float("nan")), "guidance end"),
                          (dict(controlnet="depth"), "unknown ControlNet 'depth'"),
                          (dict(mode="canny", controlnet="openpose"), "Canny edges need the canny ControlNet"),
                          (dict(steps=0), "steps must be")]:
        with pytest.raises(InvalidRequest, match=words.replace("(", r"\(").replace(")", r"\)")):
            engine.control(creq(**{**base, **change}))


def test_unavailable_controlnet_is_named(tiny_model, tiny_dir, tmp_path):
    engine = Engine(tiny_model, tiny_settings(tiny_dir, controlnets={"canny": str(tmp_path / "missing")}))
    with pytest.raises(ControlNetUnavailable, match="the canny ControlNet .*missing.* could not be loaded"):
        engine.control(creq(image=SCENE, prompt="x", seed=1, steps=2))
    # a model folder's own controlnet-<kind> comes first; for a hub model, the SD 1.5 ControlNet
    assert engine.annotators.source("openpose") == str(tiny_dir / "controlnet-openpose")
    hub_model = dataclasses.replace(tiny_model, source="stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert controlnet_source("openpose", tiny_settings(tiny_dir), hub_model) == "lllyasviel/control_v11p_sd15_openpose"


@pytest.mark.slow
def test_bundled_model_ships_trained_controlnets():
    """The offline model's ControlNets load from its folder, and, trained, change the image."""
    from playground.loading import load_model
    from playground.settings import BUNDLED_MODEL

    settings = tiny_settings("bundled", dtype="auto", max_size=256)
    engine = Engine(load_model(settings), settings)
    assert engine.annotators.source("canny") == str(BUNDLED_MODEL / "controlnet-canny")
    req = dict(prompt="a house", seed=2, steps=3)
    plain = engine.generate(GenerateRequest(**req)).images[0].array
    steered = engine.control(creq(image=SCENE, **req))
    assert steered.control_map.size == (128, 128) and np.abs(plain - steered.images[0].array).mean() > 0.02


@pytest.mark.slow
def test_preprocess_and_control_through_gradio_client(serve, nets, tmp_path):
    from gradio_client import handle_file

    _, client = serve(controlnets={"canny": str(nets[0])})
    scene = handle_file(str(SCENE))
    m = client.predict(scene, "Canny edges from the photo", "canny", 100, 200, "crop", 64, 64,
                       api_name="/preprocess")
    assert Image.open(m).size == (64, 64)
    control_map, gallery, info = client.predict(
        scene, "Canny edges from the photo", "canny", 100, 200, "pad", 1.0, 0.0, 1.0, "a house", "", 5, 3, 7.5,
        "Euler", 64, 64, 2, api_name="/control")
    assert [g["caption"] for g in gallery] == ["control map", "seed 5", "seed 6"]
    assert read_png(gallery[1]["image"]).seed == 5 and "Seed 5" in info
    with pytest.raises(Exception, match="conditioning scale must be a number from 0 to 2, got 3"):
        client.predict(scene, "Canny edges from the photo", "canny", 100, 200, "crop", 3, 0.0, 1.0, "x", "", 5, 3,
                       7.5, "Euler", 64, 64, 1, api_name="/control")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(Exception, match="corrupt.png is not a readable image"):
        client.predict(handle_file(str(tmp_path / "corrupt.png")), "Canny edges from the photo", "canny", 100,
                       200, "crop", 64, 64, api_name="/preprocess")
