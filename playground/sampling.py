"""THE denoising loop: prompts -> latents -> images, with per-sample CFG and an observer.

It follows diffusers' `StableDiffusionPipeline.__call__` step for step, and for SDXL
`StableDiffusionXLPipeline.__call__` (tests check that both give the same images for every registered
scheduler). What differs between the families (the prompt encoding, the added conditioning, how the
denoiser and its ControlNet are called, the VAE's scale and shift) is asked of the model's entry in
`playground.families`; the loop itself is one. It adds what the playground needs:
a guidance scale per sample (shape [B]) so grid cells can share one batch, an observer that sees
every model evaluation (x_t, predicted x0, conditional / unconditional / guided model outputs),
cancellation, and an optional ControlNet whose residuals are added to the UNet.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from diffusers import ControlNetModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from playground import schedulers
from playground.errors import Cancelled
from playground.components import Components
from playground.families.conditioning import Conditioning


@dataclass
class Control:
    """ControlNet input: a model, its conditioning image and when/how strongly it steers."""

    model: ControlNetModel
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], on any device: the loop moves it once, one per sample
    scale: float = 1.0  # conditioning scale, multiplies every residual
    start: float = 0.0  # fraction of the steps before which the ControlNet is off
    end: float = 1.0  # fraction of the steps after which it is off again


@dataclass
class Job:
    """One batched run of the loop. Lists have one entry per sample."""

    scheduler: str  # a schedulers.REGISTRY name: the loop makes a fresh one from the model's config
    prompts: list[str]
    negative_prompts: list[str]
    guidance: list[float]  # classifier-free guidance scale per sample; 1.0 = no guidance
    generators: list[torch.Generator]  # CPU generators: seeds give the same noise on every device
    steps: int
    height: int
    width: int
    # the fraction of the model evaluations after which classifier-free guidance stops (diffusers' guiders' `stop`:
    # on while index < int(cfg_stop * total)): later evaluations see the prompt alone, half the batch, at scale 1
    cfg_stop: float = 1.0
    control: Control | None = None
    eta: float = 0.0  # DDIM's eta (0 = deterministic), as diffusers' default
    shift: float | None = None  # a flow scheduler's shift (None: the model's own, SD3's 3.0)
    # SDXL's two-stage hand-off, as diffusers' denoising_end / denoising_start: the base stops at `end` (a fraction
    # of the way from noise to image) and returns its latents undecoded; the refiner starts at `start` from them
    end: float = 1.0
    start: float = 0.0
    init_latents: torch.Tensor | None = None  # the refiner's: the base's latents at the hand-off
    observer_offset: int = 0  # model evaluations made before this pass (the base's, for the refiner's steps)
    observer_total: int | None = None  # model evaluations of the whole run, both passes
    # SD3.5's skip-layer guidance: between `skip_start` and `skip_stop` of the steps, one more pass on the prompt with
    # these blocks skipped, and out += skip_scale * (out_cond - out_skipped) (diffusers' defaults; () = off)
    skip_layers: tuple[int, ...] = ()
    skip_scale: float = 2.8
    skip_start: float = 0.01
    skip_stop: float = 0.2
    # a walk: each sample's conditioning is (1 - mix) of its prompt's and mix of `prompts_to`'s (their embeddings,
    # negatives as they are), and/or its starting noise is given (slerped between two seeds' noise)
    prompts_to: list[str] | None = None
    mix: list[float] | None = None
    noise: torch.Tensor | None = None  # (B, C, H/8, W/8) ~ N(0, 1): used instead of the generators' draw


@dataclass
class Step:
    """What an observer sees after each model evaluation (tensors are views: copy to keep)."""

    index: int  # 0 .. total-1 over model evaluations (Heun has two per step)
    total: int
    timestep: torch.Tensor
    sigma: float  # noise level of x_t, k-diffusion convention: x_t ~ x0 + sigma * eps (up to scale)
    x_t: torch.Tensor  # (B, 4, H/8, W/8) latents the model saw, before the scheduler step
    x0: torch.Tensor  # (B, 4, H/8, W/8) the clean latents the model currently predicts
    out_cond: torch.Tensor  # model output for the prompt (eps, or v for v-prediction models)
    out_uncond: torch.Tensor | None  # model output for the negative prompt (None without CFG)
    out: torch.Tensor  # guided model output the scheduler steps with


Observer = Callable[[Step], None]


@dataclass
class Denoised:
    images: torch.Tensor | None  # (B, 3, H, W) decoded, in [-1, 1]; None for a base that hands off (end < 1)
    latents: torch.Tensor  # (B, 4, H/8, W/8) the final latents the VAE decoded (scaled, as the UNet sees them)
    unet_calls: int  # model evaluations per sample (a CFG call evaluates cond and uncond in one batch)
    sigmas: list[float]  # noise level at each evaluation
    sigma_space: bool  # the scheduler's latents are x0 + sigma * eps (Euler-like); see SchedulerSpec
    prediction_type: str  # what the model outputs: "epsilon", "v_prediction" or "sample"
    handoff: int | None = None  # with SDXL's refiner: the first evaluation the refiner made (the base's count)


def noise_level(scheduler: SchedulerMixin, t: torch.Tensor) -> float:
    """sigma of the step just taken: the scheduler's own when it keeps sigmas, else from alpha_bar[t].

    Call after `scheduler.step`: schedulers with sigmas have advanced `step_index` past it by then.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    index = getattr(scheduler, "step_index", None)
    if sigmas is not None and index is not None:
        return float(sigmas[index - 1])
    alpha_bar = float(scheduler.alphas_cumprod[int(t)])
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def predict_x0(x_t: torch.Tensor, out: torch.Tensor, sigma: float, sigma_space: bool, prediction_type: str) -> torch.Tensor:
    """Clean-latent estimate from x_t and a model output (Karras et al. 2022, eq. 7 / Salimans & Ho 2022 for v;
    for a flow model sigma is the flow's own, x_t = (1 - sigma) x0 + sigma eps)."""
    alpha = (1 + sigma**2) ** -0.5  # sqrt(alpha_bar)
    x_vp = x_t * alpha if sigma_space else x_t  # in the sqrt(a) x0 + sqrt(1-a) eps form
    if prediction_type == "epsilon":
        return x_vp / alpha - sigma * out
    if prediction_type == "v_prediction":
        return alpha * x_vp - (sigma * alpha) * out
    if prediction_type == "sample":
        return out
    if prediction_type == "flow_prediction":  # x_t = (1 - sigma) x0 + sigma eps and out = eps - x0
        return x_t - sigma * out
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def cut_timesteps(scheduler: SchedulerMixin, start: float = 0.0, end: float = 1.0) -> torch.Tensor:
    """The scheduler's timesteps (set already) that a pass from `start` to `end` runs, as diffusers cuts them:
    the base keeps those at or above the cutoff (denoising_end), the refiner those below it (denoising_start,
    one more for a second-order scheduler caught between its two evaluations), from its begin index."""
    timesteps, n_train = scheduler.timesteps, scheduler.config.num_train_timesteps
    if 0 < end < 1:
        cutoff = int(round(n_train - end * n_train))
        timesteps = timesteps[: int((timesteps >= cutoff).sum())]
    if 0 < start < 1:
        cutoff = int(round(n_train - start * n_train))
        n = int((scheduler.timesteps < cutoff).sum())
        n += scheduler.order == 2 and n % 2 == 0
        begin = len(scheduler.timesteps) - n
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        timesteps = scheduler.timesteps[begin:]
    return timesteps


def _step_kwargs(scheduler: SchedulerMixin, generators: list[torch.Generator], eta: float) -> dict:
    """eta and generator only for schedulers whose step() takes them (as diffusers does)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generators
    return kwargs


@dataclass
class Run:
    """One job's loop in flight: its own scheduler, timesteps, latents and conditioning, and the index of the model
    evaluation it makes next. `denoise` steps one run; `playground.batching` steps several through one denoiser
    call (each with its own scheduler and timestep: the denoiser takes one timestep a sample)."""

    job: Job
    scheduler: SchedulerMixin
    sigma_space: bool
    prediction_type: str
    use_cfg: bool
    g: torch.Tensor  # (B, 1, 1, 1) the guidance scale of each sample
    cond: Conditioning  # (2B, ...) as [uncond..., cond...] with CFG, else (B, ...)
    timesteps: torch.Tensor
    timesteps_cpu: torch.Tensor  # a CPU copy for the noise-level maths: no device sync per step
    latents: torch.Tensor  # (B, C, H/8, W/8) x_t before evaluation `i`
    step_kwargs: dict
    control_image: torch.Tensor | None
    guided_until: int  # guidance on while i is before this
    i: int = 0
    sigmas: list[float] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return len(self.job.prompts)

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.i >= self.total


def start(c: Components, job: Job) -> Run:
    """Steps 1-6 of the loop for `job`: a fresh scheduler, guidance, prompts encoded, timesteps, noise."""
    # 1. Check inputs; a fresh scheduler of the job's kind, and what its registry entry knows
    batch = len(job.prompts)
    if not (len(job.negative_prompts) == len(job.guidance) == len(job.generators) == batch):
        raise ValueError("prompts, negative_prompts, guidance and generators need one entry per sample")
    device, dtype = c.denoiser.device, c.denoiser.dtype
    scheduler = schedulers.make(job.scheduler, c.scheduler_config, job.shift)
    sigma_space = schedulers.REGISTRY[job.scheduler].sigma_space
    prediction_type = c.family.prediction or scheduler.config.get("prediction_type", "epsilon")

    # 2. Guidance: one scale per sample, shape [B]; skip the unconditional pass when all are 1
    use_cfg = any(scale != 1.0 for scale in job.guidance)
    g = torch.tensor(job.guidance, dtype=torch.float32, device=device).to(dtype)[:, None, None, None]  # (B, 1, 1, 1)

    # 3. Encode prompts: (2B, 77, D) as [uncond..., cond...] with CFG, else (B, 77, D), and the family's added
    #    conditioning (SDXL: pooled text embeddings, size and crop ids)
    family = c.family
    cond = family.encode(c, job.prompts, job.negative_prompts, use_cfg, (job.width, job.height))
    if job.mix is not None:  # a walk between two prompts: mix their embeddings (the negatives' rows are equal)
        other = family.encode(c, job.prompts_to, job.negative_prompts, use_cfg, (job.width, job.height))
        cond = cond.lerp(other, torch.tensor(job.mix * (2 if use_cfg else 1), device=cond.embeds.device))

    # 4. Prepare timesteps (plus a CPU copy for the noise-level maths: no device sync per step)
    f = c.vae_scale_factor
    scheduler.set_timesteps(job.steps, device=device,
                            **family.timestep_options(c, scheduler, (job.height // f, job.width // f)))
    timesteps = cut_timesteps(scheduler, job.start, job.end)

    # 5. Prepare latents: (B, C, H/8, W/8) ~ N(0, 1) from CPU generators, scaled for the scheduler (a flow
    #    scheduler starts at sigma = 1: pure noise, unscaled)
    shape = (batch, family.latent_channels(c), job.height // f, job.width // f)
    if job.init_latents is not None:  # a refiner goes on from the base's latents, as they are
        latents = job.init_latents.to(device=device, dtype=cond.embeds.dtype)
    else:
        latents = randn_tensor(shape, generator=job.generators, device=device, dtype=cond.embeds.dtype)
        if job.noise is not None:  # a walk between two seeds: the noise given (the generators' draw set aside)
            latents = job.noise.to(device=device, dtype=cond.embeds.dtype)
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)

    # 6. Prepare the ControlNet input: one map per sample (2B with CFG, like the latents); SD3's through the VAE
    control, control_image = job.control, None
    if control is not None:
        seed = torch.Generator("cpu").manual_seed(job.generators[0].initial_seed())
        control_image = family.control_input(c, control.model, control.image, 2 * batch if use_cfg else batch, seed)

    # guidance on while the run's evaluation index (both passes of a hand-off) is before the stop
    guided_until = int(job.cfg_stop * (job.observer_total or len(timesteps))) - job.observer_offset
    return Run(job, scheduler, sigma_space, prediction_type, use_cfg, g, cond, timesteps, timesteps.cpu(), latents,
               _step_kwargs(scheduler, job.generators, job.eta), control_image, guided_until)


def model_input(run: Run) -> torch.Tensor:
    """What the denoiser takes at the run's next evaluation: x_t, twice with CFG ((2B, C, H/8, W/8)), scaled for
    the scheduler. Past the guidance stop the run goes on with the prompt's half of every batched input."""
    if run.use_cfg and run.i >= run.guided_until:
        run.use_cfg, run.cond = False, run.cond.half(run.batch)
        run.control_image = run.control_image[-run.batch:] if run.control_image is not None else None
    x = torch.cat([run.latents] * 2) if run.use_cfg else run.latents
    if hasattr(run.scheduler, "scale_model_input"):  # the flow-matching schedulers have none: x_t goes in as is
        x = run.scheduler.scale_model_input(x, run.timesteps[run.i])
    return x


def advance(c: Components, run: Run, out: torch.Tensor, observer: Observer | None = None) -> None:
    """The rest of the run's evaluation from the denoiser's output for `model_input(run)`: guidance, the
    scheduler's step, the observer."""
    i, t, job, batch = run.i, run.timesteps[run.i], run.job, run.batch
    if run.use_cfg:
        out_uncond, out_cond = out.chunk(2)
        out = out_uncond + run.g * (out_cond - out_uncond)
        if job.skip_layers and job.skip_start * job.steps < i < job.skip_stop * job.steps:
            skipped = c.family.denoise(c, run.latents, t, run.cond.half(batch), skip_layers=list(job.skip_layers))
            out = out + (out_cond - skipped) * job.skip_scale
    else:
        out_uncond, out_cond = None, out

    x_t = run.latents
    run.latents = run.scheduler.step(out, t, x_t, **run.step_kwargs, return_dict=False)[0]

    sigma = noise_level(run.scheduler, run.timesteps_cpu[i])
    run.sigmas.append(sigma)
    run.i += 1
    if observer is not None:
        x0 = predict_x0(x_t, out, sigma, run.sigma_space, run.prediction_type)
        observer(Step(job.observer_offset + i, job.observer_total or run.total, t, sigma, x_t, x0, out_cond,
                      out_uncond, out))


def finish(c: Components, run: Run) -> Denoised:
    """Step 8 of the loop: decode, in the VAE's own dtype (SDXL's is kept in fp32: it overflows in fp16); a base
    that hands off to a refiner returns its latents as they are."""
    images = c.family.decode(c, run.latents, generator=run.job.generators) if run.job.end >= 1 else None
    return Denoised(images=images, latents=run.latents, unet_calls=run.total, sigmas=run.sigmas,
                    sigma_space=run.sigma_space, prediction_type=run.prediction_type)


@torch.no_grad()
def denoise(
    c: Components,
    job: Job,
    observer: Observer | None = None,
    cancel: threading.Event | None = None,
    turn: ContextManager | None = None,
) -> Denoised:
    """Run the whole text-to-image loop for one batch and decode it. With `turn` (the device's, while jobs share
    it: playground.batching), each stage's model work holds it, so other jobs' steps come in between."""
    turn = turn if turn is not None else contextlib.nullcontext()
    # 1-6. A fresh scheduler, guidance, prompts, timesteps, latents and the ControlNet's input
    with turn:
        run = start(c, job)
    control = job.control

    # 7. Denoising loop
    while not run.done:
        i, t = run.i, run.timesteps[run.i]
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled at step {i} of {run.total}")
        with turn:
            x = model_input(run)
            residuals = None
            # a ControlNet is on for steps whose position lies inside [start, end] (diffusers' controlnet_keep)
            if (control is not None and control.scale != 0 and control.start <= i / run.total
                    and (i + 1) / run.total <= control.end):
                residuals = c.family.control(c, control.model, x, t, run.cond, run.control_image, control.scale)
            advance(c, run, c.family.denoise(c, x, t, run.cond, residuals), observer)

    # 8. Decode: (B, 3, H, W) in [-1, 1]
    with turn:
        return finish(c, run)
