"""SDXL's refiner hand-off: the base denoises to a fraction of the way, the refiner finishes from its latents, as
diffusers' denoising_end / denoising_start do; our loop against diffusers' base-then-refiner pair on tiny parts,
loaded through the app's loader (the refiner sharing the base's second text encoder and VAE)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from playground import schedulers
from playground.loading import load_model
from playground.sampling import Components, Job, denoise

from conftest import tiny_settings

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


@pytest.fixture(scope="module")
def xl(tiny_sdxl_dir, tiny_refiner_dir):
    return load_model(tiny_settings(tiny_sdxl_dir, refiner=str(tiny_refiner_dir)))


def job(name="DDIM", n=2, cfg=7.5, negative=NEGATIVE, **changes) -> Job:
    return Job(scheduler=name, prompts=[PROMPT] * n, negative_prompts=[negative] * n, guidance=[cfg] * n,
               generators=[torch.Generator("cpu").manual_seed(7 + i) for i in range(n)], steps=6, height=64,
               width=64, **changes)


def pixels(images: torch.Tensor) -> np.ndarray:
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def ours(xl, name, start=0.8, **kwargs) -> np.ndarray:
    base = job(name, end=start, **kwargs)
    first = denoise(Components.from_pipeline(xl.pipe), base)
    assert first.images is None  # the base hands its latents over undecoded
    # the refiner goes on with the base's generators, where the base left them
    second = denoise(Components.from_pipeline(xl.refiner), dataclasses.replace(
        base, start=start, end=1.0, init_latents=first.latents))
    return pixels(second.images)


def theirs(xl, name, start=0.8, n=2, cfg=7.5, negative=NEGATIVE) -> np.ndarray:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base, ref = xl.pipe, xl.refiner
    pipe = StableDiffusionXLPipeline(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                                     tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2, unet=base.unet,
                                     scheduler=schedulers.make(name, base.scheduler.config))
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=ref.vae, text_encoder=None, tokenizer=None, text_encoder_2=ref.text_encoder_2, tokenizer_2=ref.tokenizer_2,
        unet=ref.unet, scheduler=schedulers.make(name, ref.scheduler.config), requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=ref.config.force_zeros_for_empty_prompt)
    for p in (pipe, refiner):
        p.set_progress_bar_config(disable=True)
    seeds = [torch.Generator("cpu").manual_seed(7 + i) for i in range(n)]  # the same generators for both calls
    common = dict(negative_prompt=negative, num_inference_steps=6, guidance_scale=cfg, num_images_per_prompt=n)
    latents = pipe(PROMPT, height=64, width=64, denoising_end=start, output_type="latent", generator=seeds,
                   **common).images
    return refiner(PROMPT, image=latents, denoising_start=start, output_type="np", generator=seeds, **common).images


def test_the_refiner_loads_beside_the_base_and_shares_its_parts(xl):
    assert type(xl.refiner).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert xl.refiner.text_encoder_2 is xl.pipe.text_encoder_2 and xl.refiner.vae is xl.pipe.vae
    assert xl.refiner.unet is not xl.pipe.unet and Components.from_pipeline(xl.refiner).aesthetics


@pytest.mark.parametrize("name", ["DDIM", "Euler", "Euler a", "Heun", "DPM++ 2M", "UniPC"])
def test_base_then_refiner_matches_diffusers(xl, name):
    got, ref = ours(xl, name), theirs(xl, name)
    assert got.shape == ref.shape == (2, 64, 64, 3)
    assert np.abs(got - ref).max() <= 1e-4
    plain = pixels(denoise(Components.from_pipeline(xl.pipe), job(name)).images)
    assert np.abs(got - plain).max() > 1e-3  # the refiner's steps are its own


@pytest.mark.parametrize("start", [0.5, 0.9])
def test_the_hand_off_point_matches_diffusers(xl, start):
    assert np.abs(ours(xl, "Euler", start) - theirs(xl, "Euler", start)).max() <= 1e-4


def test_the_engine_hands_off_and_the_inspector_marks_it(xl, tiny_sdxl_dir, tiny_refiner_dir):
    from playground.engine import Engine
    from playground.errors import InvalidRequest
    from playground.schema import GenerateRequest
    from playground.ui.inspector import inspect_text, noise_plot

    engine = Engine(xl, tiny_settings(tiny_sdxl_dir, refiner=str(tiny_refiner_dir)))
    assert engine.limits.refiner
    req = GenerateRequest(prompt=PROMPT, negative_prompt=NEGATIVE, seed=7, steps=6, scheduler="DDIM", width=64,
                          height=64, refiner_start=0.8)
    made = engine.generate(req)
    assert np.abs(made.images[0].array - ours(xl, "DDIM", n=1)[0]).max() <= 1e-4  # the loop's own hand-off
    assert made.images[0].params.refiner_start == 0.8 and made.unet_calls == 6
    # a stochastic sampler: the refiner's noise goes on from the base's generators (the loop's hand-off, in ours())
    noisy = engine.generate(dataclasses.replace(req, scheduler="Euler a"))
    assert np.abs(noisy.images[0].array - ours(xl, "Euler a", n=1)[0]).max() <= 1e-4
    seen = []
    traj = engine.inspect(req, on_progress=lambda p: seen.append((p.step, p.total)))
    assert seen == [(k, 6) for k in range(1, 7)]  # one progress bar over both passes
    assert traj.handoff == 5 and traj.steps == 6  # DDIM's 6 steps: the base's first 5 (to 0.8), the refiner's last
    assert np.array_equal(np.asarray(traj.image), np.asarray(made.images[0].image))
    # the attention maps cover both: the base's layers at its steps, the refiner's at its own
    a = traj.attention
    assert not np.isnan(a.stack(None)).any() and not np.isnan(a.stack(5)).any() and not np.isnan(a.stack(0)).any()
    assert "refiner" in inspect_text(traj, 64) and "refiner takes over" in set(noise_plot(traj, 0)["series"])
    parts = [p.name for p in engine.anatomy().parts]
    assert any(name.startswith("refiner: UNet2DConditionModel") for name in parts)
    without = Engine(load_model(tiny_settings(tiny_sdxl_dir)), tiny_settings(tiny_sdxl_dir))
    with pytest.raises(InvalidRequest, match=r"refiner start 0.8 needs an SDXL refiner loaded beside the base"):
        without.generate(req)


def test_a_refiner_beside_a_base_of_another_family_is_refused_and_the_base_still_loads(tiny_dir, tiny_refiner_dir):
    model = load_model(tiny_settings(tiny_dir, refiner=str(tiny_refiner_dir)))
    assert model.refiner is None and "does not run beside a SD 1.x / 2.x base (an SDXL base takes" in model.reason
    assert str(tiny_refiner_dir) not in model.reason  # the banner shows no server path


@pytest.mark.slow
def test_the_launched_app_hands_off_to_the_refiner(xl, tiny_sdxl_dir, tiny_refiner_dir, tmp_path):
    """Through gradio_client: /generate with refiner_start (its PNG carries it, /restore gives it back) and /inspect
    marking the hand-off."""
    from gradio_client import Client, handle_file

    from conftest import free_port, launched
    from playground.engine import Engine
    from playground.metadata import read_png

    settings = tiny_settings(tiny_sdxl_dir, port=free_port(), output_dir=tmp_path / "out", refiner=str(tiny_refiner_dir))
    with launched(Engine(xl, settings), settings) as url:
        client = Client(url, verbose=False)
        try:
            _, gallery, info = client.predict(PROMPT, NEGATIVE, 7, 6, 7.5, "DDIM", 64, 64, 1, 0, 0.8,
                                              api_name="/generate")[:3]
            assert "refiner from 0.8" in info and read_png(gallery[0]["image"]).refiner_start == 0.8
            restored = client.predict(handle_file(gallery[0]["image"]), api_name="/restore")
            assert restored[9] == 0.8  # the refiner slider
            out = client.predict(PROMPT, NEGATIVE, 7, 6, 7.5, "DDIM", 64, 64, "prompt", 0.8, api_name="/inspect")
            assert "the **refiner** steps 6-6" in out[1]
            with pytest.raises(Exception, match="refiner start must be a number from 0 to 0.95, got 0.99"):
                client.predict(PROMPT, "", 7, 6, 7.5, "DDIM", 64, 64, 1, 0, 0.99, api_name="/generate")
        finally:
            client.close()
