"""SDXL-shaped models: our loop against diffusers' StableDiffusionXLPipeline (and its ControlNet pipeline)
for every scheduler, on a tiny random-weight SDXL built from configs and loaded through the app's loader;
and the Engine's actions on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from playground import families, schedulers
from playground.engine import Engine
from playground.loading import load_model
from playground.schema import ControlRequest, GenerateRequest, GridRequest, TokenRequest
from playground.sampling import Components, Control, Job, denoise

from conftest import tiny_settings

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


@pytest.fixture(scope="module")
def xl(tiny_sdxl_dir):
    return load_model(tiny_settings(tiny_sdxl_dir))


def job(name="DDIM", negative=NEGATIVE, cfg=7.5, n=2, size=64, control=None) -> Job:
    return Job(scheduler=name, prompts=[PROMPT] * n, negative_prompts=[negative] * n, guidance=[cfg] * n,
               generators=[torch.Generator("cpu").manual_seed(7 + i) for i in range(n)], steps=5, height=size,
               width=size, control=control)


def pixels(images: torch.Tensor) -> np.ndarray:
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def theirs(model, name="DDIM", negative=NEGATIVE, cfg=7.5, n=2, size=64, controlnet=None, **kwargs):
    from diffusers import StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

    base = model.pipe
    parts = dict(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                 tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2, unet=base.unet,
                 scheduler=schedulers.make(name, base.scheduler.config))
    pipe = StableDiffusionXLPipeline(**parts) if controlnet is None else \
        StableDiffusionXLControlNetPipeline(controlnet=controlnet, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt=negative, num_inference_steps=5, guidance_scale=cfg, num_images_per_prompt=n,
                height=size, width=size, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(7 + i) for i in range(n)], **kwargs).images


def test_the_app_loads_it_as_sdxl(xl):
    c = Components.from_pipeline(xl.pipe)
    assert type(xl.pipe).__name__ == "StableDiffusionXLPipeline" and c.force_zeros_for_empty_prompt
    assert c.family is families.FAMILIES["StableDiffusionXLPipeline"] and xl.family.name == "SDXL"
    assert xl.family.controlnets["canny"] == "diffusers/controlnet-canny-sdxl-1.0"


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_loop_matches_diffusers_sdxl_for_every_scheduler(xl, name):
    mine = pixels(denoise(Components.from_pipeline(xl.pipe), job(name)).images)
    ref = theirs(xl, name)
    assert mine.shape == ref.shape == (2, 64, 64, 3)
    assert np.abs(mine - ref).max() <= 1e-4
    assert np.abs(mine[0] - mine[1]).max() > 1e-3


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_an_empty_negative_prompt_is_zeros_as_in_diffusers(xl, cfg):
    """force_zeros_for_empty_prompt: our "" is diffusers' negative_prompt=None (left out)."""
    mine = pixels(denoise(Components.from_pipeline(xl.pipe), job("Euler", negative="", cfg=cfg)).images)
    assert np.abs(mine - theirs(xl, "Euler", negative=None, cfg=cfg)).max() <= 1e-4
    if cfg != 1.0:  # and differs from encoding "" (what the pipeline does when given "")
        assert np.abs(mine - theirs(xl, "Euler", negative="", cfg=cfg)).max() > 1e-4


def test_controlnet_matches_diffusers_sdxl_controlnet_pipeline(xl):
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    net = ControlNetModel.from_unet(xl.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    for p in net.parameters():  # the zero convolutions made non-zero, so the test can see the residuals
        p.data.add_(torch.randn_like(p) * 0.02)
    cond = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    steer = Control(model=net, image=cond, scale=0.8, start=0.2, end=0.8)
    mine = pixels(denoise(Components.from_pipeline(xl.pipe), job("DDIM", n=1, control=steer)).images)
    ref = theirs(xl, "DDIM", n=1, controlnet=net, image=cond, controlnet_conditioning_scale=0.8,
                 control_guidance_start=0.2, control_guidance_end=0.8)
    assert np.abs(mine - ref).max() <= 1e-4
    plain = pixels(denoise(Components.from_pipeline(xl.pipe), job("DDIM", n=1)).images)
    assert np.abs(mine - plain).max() > 1e-3


def test_the_engine_runs_every_action_on_sdxl(xl, tiny_sdxl_dir, tmp_path):
    from diffusers import ControlNetModel

    net_dir = tmp_path / "controlnet"
    ControlNetModel.from_unet(xl.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8)).save_pretrained(net_dir)
    engine = Engine(xl, tiny_settings(tiny_sdxl_dir, controlnets={"canny": str(net_dir)}))
    req = GenerateRequest(prompt=PROMPT, seed=3, steps=3, scheduler="Euler", width=64, height=64)
    made = engine.generate(req)
    assert made.images[0].image.size == (64, 64) and not made.images[0].nsfw
    cells = engine.grid(GridRequest(base=req, schedulers=("DDIM", "Euler"), columns="1, 5"))
    assert len(cells.cells) == 2 and len(cells.cells[0]) == 2
    traj = engine.inspect(req)
    assert traj.tensors["x_t"].shape == (3, 4, 8, 8) and traj.attention.layers  # SDXL's 2048-d cross-attention
    assert np.array_equal(np.asarray(traj.image), np.asarray(made.images[0].image))
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    out = engine.control(ControlRequest(image=str(photo), base=req))
    assert out.images[0].image.size == (64, 64)
    assert engine.anatomy().text[1].startswith("CLIPTextModelWithProjection")
    # the token counter reads the prompt with both tokenizers
    count = engine.count_tokens(TokenRequest(" ".join(["red"] * 80)))
    assert (count.used, count.limit, count.encoders) == (82, 77, 2) and count.dropped.split() == ["red"] * 5
    from playground.ui.prompt import token_text

    count = engine.count_tokens(TokenRequest("a red circle"))
    assert token_text(count) == "5 / 77 tokens (each of its 2 CLIP text encoders)"
    # the default ControlNets follow the family
    assert Engine(xl, tiny_settings(tiny_sdxl_dir)).annotators.source("openpose") == "thibaud/controlnet-openpose-sdxl-1.0"


@pytest.mark.slow
def test_the_launched_app_answers_with_sdxl(xl, tiny_sdxl_dir, tmp_path):
    """The whole app on the tiny SDXL, through gradio_client: generate, grid, inspect, control, anatomy."""
    from diffusers import ControlNetModel
    from gradio_client import Client, handle_file
    from PIL import Image

    from conftest import free_port, launched
    from playground.metadata import read_png

    net_dir = tmp_path / "controlnet"
    ControlNetModel.from_unet(xl.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8)).save_pretrained(net_dir)
    settings = tiny_settings(tiny_sdxl_dir, port=free_port(), output_dir=tmp_path / "out",
                             controlnets={"canny": str(net_dir)})
    with launched(Engine(xl, settings), settings) as url:
        client = Client(url, verbose=False)
        try:
            _, gallery, _ = client.predict(PROMPT, "", 5, 3, 7.5, "Euler", 64, 64, 1, api_name="/generate")[:3]
            assert Image.open(gallery[0]["image"]).size == (64, 64)
            assert read_png(gallery[0]["image"]).seed == 5
            sheet, cells = client.predict(PROMPT, "", 5, 2, ["DDIM", "Euler"], "1, 5", 64, 64, "cfg", 7.5,
                                          api_name="/grid")[:2]
            assert len(cells) == 4
            out = client.predict(PROMPT, "", 5, 3, 7.5, "DDIM", 64, 64, "prompt", api_name="/inspect")
            assert "Recorded 3 model evaluations" in out[1]
            photo = tmp_path / "photo.png"
            Image.new("RGB", (64, 64), "white").save(photo)
            control_map, images, info = client.predict(handle_file(str(photo)), "canny", "canny", 100, 200, "crop", 1.0,
                                                       0.0, 1.0, PROMPT, "", 5, 2, 7.5, "Euler", 64, 64, 1,
                                                       api_name="/control")
            assert len(images) == 2 and "controlnet" in info
            table, *_ = client.predict(api_name="/anatomy")
            assert "CLIPTextModelWithProjection" in table and "U-Net 2.57B" in table
        finally:
            client.close()
