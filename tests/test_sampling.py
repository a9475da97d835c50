"""Our denoising loop against diffusers' StableDiffusionPipeline, and its observer maths."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from playground import schedulers
from playground.loading import load_model
from playground.sampling import Cancelled, Components, Job, denoise, predict_x0

from conftest import tiny_settings

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


def job(name="DDIM", seed=7, steps=6, cfg=7.5, n=1, size=64, control=None) -> Job:
    """A fresh job (fresh generators: a run consumes them), image i from seed + i."""
    return Job(scheduler=name, prompts=[PROMPT] * n, negative_prompts=[NEGATIVE] * n, guidance=[cfg] * n,
               generators=[torch.Generator("cpu").manual_seed(seed + i) for i in range(n)],
               steps=steps, height=size, width=size, control=control)


def ours(model, name, seed=7, steps=6, cfg=7.5, n=2, size=64, observer=None, cancel=None):
    out = denoise(Components.from_pipeline(model.pipe), job(name, seed, steps, cfg, n, size), observer=observer,
                  cancel=cancel)
    return out, (out.images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


def theirs(model, name, seed=7, steps=6, cfg=7.5, n=2, size=64):
    base = model.pipe
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=schedulers.make(name, base.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=cfg,
                num_images_per_prompt=n, height=size, width=size, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]).images


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_loop_matches_diffusers_for_every_scheduler(tiny_model, name):
    _, mine = ours(tiny_model, name)
    ref = theirs(tiny_model, name)
    assert mine.shape == ref.shape == (2, 64, 64, 3)
    assert np.abs(mine - ref).max() <= 1e-4
    assert np.abs(mine[0] - mine[1]).max() > 1e-3  # different seeds give different images


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_loop_matches_diffusers_at_other_guidance(tiny_model, cfg):
    _, mine = ours(tiny_model, "Euler a", cfg=cfg)
    assert np.abs(mine - theirs(tiny_model, "Euler a", cfg=cfg)).max() <= 1e-4


@pytest.mark.parametrize("name", ["DDIM", "Euler", "DPM++ 2M Karras"])
def test_v_prediction_matches_diffusers(tiny_vpred_dir, name):
    model = load_model(tiny_settings(tiny_vpred_dir))
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
    _, mine = ours(model, name)
    assert np.abs(mine - theirs(model, name)).max() <= 1e-4


@pytest.mark.parametrize("name", schedulers.NAMES)
def test_sd2_layout_matches_diffusers_for_every_scheduler(tiny_sd2_dir, name):
    """SD 2.x: v-prediction, upcast attention, linear projections, 768 px native (generated here at 64 px)."""
    model = load_model(tiny_settings(tiny_sd2_dir, max_size=768))
    unet = model.pipe.unet.config
    assert model.native_size == 768 and model.family.name == "SD 1.x / 2.x"
    assert unet.upcast_attention and unet.use_linear_projection
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
    _, mine = ours(model, name)
    assert np.abs(mine - theirs(model, name)).max() <= 1e-4
    assert np.abs(mine[0] - mine[1]).max() > 1e-3


def test_seed_reproduces_and_differs(tiny_model):
    _, a = ours(tiny_model, "DPM++ 2M", seed=11)
    _, b = ours(tiny_model, "DPM++ 2M", seed=11)
    _, c = ours(tiny_model, "DPM++ 2M", seed=12)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_per_sample_guidance_equals_separate_runs(tiny_model):
    """One batch with guidance [1, 4, 9] == three runs with one scale each (same seed, same noise)."""
    pipe = tiny_model.pipe
    c = Components.from_pipeline(pipe)

    def run(scales):
        batch = Job("Euler", [PROMPT] * len(scales), [NEGATIVE] * len(scales), scales,
                    [torch.Generator("cpu").manual_seed(3) for _ in scales], steps=5, height=64, width=64)
        return denoise(c, batch).images

    batched = run([1.0, 4.0, 9.0])
    for k, g in enumerate([1.0, 4.0, 9.0]):
        assert (batched[k] - run([g])[0]).abs().max() <= 1e-4


def test_observer_sees_every_evaluation_and_heun_costs_two(tiny_model):
    seen = []
    out, _ = ours(tiny_model, "Heun", steps=5, n=1, observer=lambda s: seen.append((s.index, s.total, s.sigma)))
    assert out.unet_calls == 9 == len(seen)  # 2 * steps - 1 for Heun
    assert [i for i, _, _ in seen] == list(range(9))
    out, _ = ours(tiny_model, "Euler", steps=5, n=1)
    assert out.unet_calls == 5


@pytest.mark.parametrize("name", ["DDIM", "Euler", "LMS"])
def test_x0_matches_schedulers_own_prediction(tiny_model, name):
    """Our predicted x0 equals pred_original_sample from the scheduler's own step()."""
    pipe = tiny_model.pipe
    sched = schedulers.make(name, pipe.scheduler.config)
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen) * 3
    eps = torch.randn(1, 4, 8, 8, generator=gen)
    for k in range(3):  # walk the scheduler to step 3
        sched.scale_model_input(x, sched.timesteps[k])
        sched.step(eps, sched.timesteps[k], x)
    sched.scale_model_input(x, t)
    theirs_x0 = sched.step(eps, t, x).pred_original_sample
    from playground.sampling import noise_level
    mine = predict_x0(x, eps, noise_level(sched, t), schedulers.REGISTRY[name].sigma_space, "epsilon")
    assert (mine - theirs_x0).abs().max() <= 1e-4


def test_cancel_stops_the_loop(tiny_model):
    cancel = threading.Event()
    calls = []

    def observer(step):
        calls.append(step.index)
        if step.index == 1:
            cancel.set()

    with pytest.raises(Cancelled):
        ours(tiny_model, "Euler", steps=8, n=1, observer=observer, cancel=cancel)
    assert calls == [0, 1]


def _controlnet_pipeline(base, net):
    """diffusers' own ControlNet pipeline on the tiny model's modules, with DDIM."""
    from diffusers import StableDiffusionControlNetPipeline

    ref = StableDiffusionControlNetPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                            unet=base.unet, controlnet=net,
                                            scheduler=schedulers.make("DDIM", base.scheduler.config),
                                            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


def _controlnet(model, zero: bool):
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    net = ControlNetModel.from_unet(model.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8))  # 3 downsamples: f=8
    if not zero:  # a trained ControlNet's zero convolutions are no longer zero
        for name, p in net.named_parameters():
            if "zero" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                torch.nn.init.normal_(p, std=0.5)
    return net.eval()


def test_controlnet_hook_matches_diffusers_controlnet_pipeline(tiny_model):
    from playground.sampling import Control

    net = _controlnet(tiny_model, zero=False)
    cond = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    base = tiny_model.pipe
    ref = _controlnet_pipeline(base, net)
    want = ref(PROMPT, negative_prompt=NEGATIVE, image=cond, num_inference_steps=6, guidance_scale=7.5, height=64,
               width=64, controlnet_conditioning_scale=0.8, control_guidance_start=0.2, control_guidance_end=0.8,
               output_type="np", generator=[torch.Generator("cpu").manual_seed(7)]).images
    steer = Control(model=net, image=cond, scale=0.8, start=0.2, end=0.8)
    got = denoise(Components.from_pipeline(base), job(control=steer)).images
    got = (got / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - want).max() <= 1e-4
    # the same job (fresh generators: the same noise) without the ControlNet gives another image
    plain, _ = ours(tiny_model, "DDIM", n=1, steps=6)
    assert (plain.images - denoise(Components.from_pipeline(base), job(control=steer)).images).abs().max() > 1e-3
    assert (plain.images - denoise(Components.from_pipeline(base), job()).images).abs().max() == 0


def test_zero_initialised_controlnet_changes_nothing(tiny_model):
    """The ControlNet paper's zero convolutions: a fresh ControlNet leaves the output identical."""
    from playground.sampling import Control

    net = _controlnet(tiny_model, zero=True)
    cond = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    base = tiny_model.pipe
    got = denoise(Components.from_pipeline(base), job(control=Control(model=net, image=cond, scale=1.0))).images
    plain, _ = ours(tiny_model, "DDIM", n=1, steps=6)
    assert (plain.images - got).abs().max() <= 1e-5


def _stop_guidance_at(stop: int, *halves: str):
    """diffusers' way to end CFG part-way (a step-end callback): from evaluation `stop` on, scale 1 and the
    prompt's half of each batched input named in `halves`."""
    def callback(pipe, i, t, tensors):
        if i + 1 != stop:
            return {}
        pipe._guidance_scale = 1.0
        return {name: tensors[name].chunk(2)[1] for name in halves}
    return callback


@pytest.mark.parametrize("name,cfg_stop", [("DDIM", 0.5), ("DPM++ 2M Karras", 0.7), ("Euler a", 0.34)])
def test_cfg_stop_matches_diffusers(tiny_model, name, cfg_stop):
    """Guidance that stops after a fraction of the steps: our loop against diffusers' pipeline with a callback
    that ends CFG at the same evaluation, int(cfg_stop * steps) as diffusers' guiders count it."""
    steps, stop = 6, int(cfg_stop * 6)
    seen = []
    out = denoise(Components.from_pipeline(tiny_model.pipe), replace(job(name, n=2), cfg_stop=cfg_stop),
                  observer=lambda s: seen.append(s.out_uncond is not None))
    assert seen == [k < stop for k in range(steps)]  # the unconditional half is gone after the stop
    mine = (out.images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    base = tiny_model.pipe
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=schedulers.make(name, base.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    want = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7.5,
                num_images_per_prompt=2, height=64, width=64, output_type="np",
                generator=[torch.Generator("cpu").manual_seed(7 + i) for i in range(2)],
                callback_on_step_end=_stop_guidance_at(stop, "prompt_embeds"),
                callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
    assert np.abs(mine - want).max() <= 1e-4
    full, _ = ours(tiny_model, name)
    assert (full.images - out.images).abs().max() > 3e-4  # stopping guidance changes the picture (beyond the 1e-4)


@pytest.mark.parametrize("cfg_stop,total", [(0.5, 6), (0.34, 6), (0.6, 25), (0.99, 25), (0.0, 8), (1.0, 8)])
def test_cfg_stop_counts_as_diffusers_guiders(tiny_model, cfg_stop, total):
    """The evaluations that are guided are those diffusers' ClassifierFreeGuidance(stop=...) guides."""
    from diffusers.guiders import ClassifierFreeGuidance

    guider = ClassifierFreeGuidance(guidance_scale=7.5, stop=cfg_stop)
    want = []
    for k in range(total):
        guider.set_state(step=k, num_inference_steps=total, timestep=torch.tensor(0))
        want.append(guider._is_cfg_enabled())
    seen = []
    denoise(Components.from_pipeline(tiny_model.pipe), replace(job("DDIM", steps=total), cfg_stop=cfg_stop),
            observer=lambda s: seen.append(s.out_uncond is not None))
    assert seen == want


def test_cfg_stop_with_a_controlnet_matches_diffusers(tiny_model):
    """After the stop the ControlNet sees the prompt's half of its map batch too, as diffusers' ControlNet pipeline
    does when a step-end callback ends CFG there."""
    from playground.sampling import Control

    net = _controlnet(tiny_model, zero=False)
    cond = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    base = tiny_model.pipe
    ref = _controlnet_pipeline(base, net)
    want = ref(PROMPT, negative_prompt=NEGATIVE, image=cond, num_inference_steps=6, guidance_scale=7.5, height=64,
               width=64, controlnet_conditioning_scale=0.8, output_type="np",
               generator=[torch.Generator("cpu").manual_seed(7)],
               callback_on_step_end=_stop_guidance_at(3, "prompt_embeds", "image"),
               callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "image"]).images
    steer = Control(model=net, image=cond, scale=0.8)
    got = denoise(Components.from_pipeline(base), replace(job(control=steer), cfg_stop=0.5)).images
    got = (got / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - want).max() <= 1e-4
    full = denoise(Components.from_pipeline(base), job(control=steer)).images
    assert np.abs((full / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() - want).max() > 3e-4
