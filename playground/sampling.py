"""THE denoising loop: prompts -> latents -> images, with per-sample CFG and an observer.

It follows diffusers' `StableDiffusionPipeline.__call__` step for step, and for SDXL-shaped models
(two text encoders, text-time conditioning) `StableDiffusionXLPipeline.__call__` (tests check that both
give the same images for every registered scheduler), and adds what the playground needs:
a guidance scale per sample (shape [B]) so grid cells can share one batch, an observer that sees
every model evaluation (x_t, predicted x0, conditional / unconditional / guided model outputs),
cancellation, and an optional ControlNet whose residuals are added to the UNet.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from playground import schedulers


@dataclass(frozen=True)
class Components:
    """The loaded modules the loop runs on, read from the one cached pipeline for each request
    (so a module compiled in loading is the one used: no second handle can go stale)."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict  # the model's own: every request's scheduler is made from it
    tokenizer_2: CLIPTokenizer | None = None  # SDXL's second text encoder (OpenCLIP ViT-bigG), with projection
    text_encoder_2: CLIPTextModel | None = None
    force_zeros_for_empty_prompt: bool = False  # SDXL: an empty negative prompt is all zeros, not encoded ""

    @classmethod
    def from_pipeline(cls, pipe) -> "Components":
        return cls(pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae, dict(pipe.scheduler.config),
                   getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None),
                   bool(getattr(pipe, "config", {}).get("force_zeros_for_empty_prompt", False)))

    @property
    def text_time(self) -> bool:
        """SDXL's conditioning: two text encoders' hidden states, a pooled vector, and size / crop ids."""
        return self.text_encoder_2 is not None and self.unet.config.get("addition_embed_type") == "text_time"

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)  # 8 for SD


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
    control: Control | None = None
    eta: float = 0.0  # DDIM's eta (0 = deterministic), as diffusers' default


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
    images: torch.Tensor  # (B, 3, H, W) decoded, in [-1, 1]
    latents: torch.Tensor  # (B, 4, H/8, W/8) the final latents the VAE decoded (scaled, as the UNet sees them)
    unet_calls: int  # model evaluations per sample (a CFG call evaluates cond and uncond in one batch)
    sigmas: list[float]  # noise level at each evaluation
    sigma_space: bool  # the scheduler's latents are x0 + sigma * eps (Euler-like); see SchedulerSpec
    prediction_type: str  # what the model outputs: "epsilon", "v_prediction" or "sample"


class Cancelled(Exception):
    """Raised inside the loop when the caller's cancel event is set."""


# Fast tokenizers set padding/truncation on the shared Rust object before each call, so two
# threads tokenizing with different settings could see each other's: one lock for all calls.
_TOKENIZER_LOCK = threading.Lock()


def tokenize(tokenizer: CLIPTokenizer, texts: list[str], **kwargs):
    """tokenizer(texts, **kwargs), safe to call from several request threads at once."""
    with _TOKENIZER_LOCK:
        return tokenizer(texts, **kwargs)


def encode_prompts(c: Components, prompts: Sequence[str]) -> torch.Tensor:
    """(len(prompts), 77, D) CLIP hidden states; each distinct prompt is encoded once."""
    unique = list(dict.fromkeys(prompts))
    tokens = tokenize(c.tokenizer, unique, padding="max_length", max_length=c.tokenizer.model_max_length,
                      truncation=True, return_tensors="pt")
    mask = None
    if getattr(c.text_encoder.config, "use_attention_mask", False):
        mask = tokens.attention_mask.to(c.text_encoder.device)
    hidden = c.text_encoder(tokens.input_ids.to(c.text_encoder.device), attention_mask=mask)[0]
    hidden = hidden.to(dtype=c.text_encoder.dtype)
    index = torch.tensor([unique.index(p) for p in prompts], device=hidden.device)
    return hidden.index_select(0, index)


def encode_prompts_xl(c: Components, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL: ((B, 77, D1 + D2) the penultimate hidden states of both encoders side by side, (B, P) the second
    encoder's pooled, projected output), as StableDiffusionXLPipeline.encode_prompt makes them."""
    unique = list(dict.fromkeys(prompts))
    hidden, pooled = [], None
    for tokenizer, encoder in ((c.tokenizer, c.text_encoder), (c.tokenizer_2, c.text_encoder_2)):
        ids = tokenize(tokenizer, unique, padding="max_length", max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        if out[0].ndim == 2:  # the encoder with projection: its pooled output
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    index = torch.tensor([unique.index(p) for p in prompts], device=hidden[0].device)
    embeds = torch.cat(hidden, dim=-1).to(dtype=c.text_encoder_2.dtype).index_select(0, index)
    return embeds, pooled.index_select(0, index)


def encode(c: Components, job: "Job", use_cfg: bool) -> tuple[torch.Tensor, dict | None]:
    """The UNet's text conditioning for a job: (2B or B, 77, D) hidden states as [negative..., prompt...] with
    CFG, and for SDXL the added conditioning (pooled text embeddings and the size / crop time ids)."""
    if not c.text_time:
        cond = encode_prompts(c, job.prompts)
        return (torch.cat([encode_prompts(c, job.negative_prompts), cond]) if use_cfg else cond), None
    embeds, pooled = encode_prompts_xl(c, job.prompts)
    if use_cfg:
        neg_embeds, neg_pooled = encode_prompts_xl(c, job.negative_prompts)
        if c.force_zeros_for_empty_prompt:  # diffusers' default for a negative prompt left out
            empty = torch.tensor([not n for n in job.negative_prompts], device=embeds.device)
            neg_embeds = torch.where(empty[:, None, None], torch.zeros_like(neg_embeds), neg_embeds)
            neg_pooled = torch.where(empty[:, None], torch.zeros_like(neg_pooled), neg_pooled)
        embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])
    # (original size, crop top-left, target size): the whole image, uncropped, at the asked size
    time_ids = torch.tensor([[job.height, job.width, 0, 0, job.height, job.width]], dtype=embeds.dtype,
                            device=embeds.device).repeat(len(embeds), 1)
    return embeds, {"text_embeds": pooled.to(embeds.device), "time_ids": time_ids}


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
    """Clean-latent estimate from x_t and a model output (Karras et al. 2022, eq. 7 / Salimans & Ho 2022 for v)."""
    alpha = (1 + sigma**2) ** -0.5  # sqrt(alpha_bar)
    x_vp = x_t * alpha if sigma_space else x_t  # in the sqrt(a) x0 + sqrt(1-a) eps form
    if prediction_type == "epsilon":
        return x_vp / alpha - sigma * out
    if prediction_type == "v_prediction":
        return alpha * x_vp - (sigma * alpha) * out
    if prediction_type == "sample":
        return out
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def _step_kwargs(scheduler: SchedulerMixin, generators: list[torch.Generator], eta: float) -> dict:
    """eta and generator only for schedulers whose step() takes them (as diffusers does)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generators
    return kwargs


@torch.no_grad()
def denoise(
    c: Components,
    job: Job,
    observer: Observer | None = None,
    cancel: threading.Event | None = None,
) -> Denoised:
    """Run the whole text-to-image loop for one batch and decode it."""
    # 1. Check inputs; a fresh scheduler of the job's kind, and what its registry entry knows
    batch = len(job.prompts)
    if not (len(job.negative_prompts) == len(job.guidance) == len(job.generators) == batch):
        raise ValueError("prompts, negative_prompts, guidance and generators need one entry per sample")
    device, dtype = c.unet.device, c.unet.dtype
    scheduler = schedulers.make(job.scheduler, c.scheduler_config)
    sigma_space = schedulers.REGISTRY[job.scheduler].sigma_space
    prediction_type = scheduler.config.get("prediction_type", "epsilon")

    # 2. Guidance: one scale per sample, shape [B]; skip the unconditional pass when all are 1
    use_cfg = any(scale != 1.0 for scale in job.guidance)
    g = torch.tensor(job.guidance, dtype=torch.float32, device=device).to(dtype)[:, None, None, None]  # (B, 1, 1, 1)

    # 3. Encode prompts: (2B, 77, D) as [uncond..., cond...] with CFG, else (B, 77, D); SDXL's added conditioning
    embeds, added = encode(c, job, use_cfg)

    # 4. Prepare timesteps (plus a CPU copy for the noise-level maths: no device sync per step)
    scheduler.set_timesteps(job.steps, device=device)
    timesteps = scheduler.timesteps
    timesteps_cpu = timesteps.cpu()

    # 5. Prepare latents: (B, 4, H/8, W/8) ~ N(0, 1) from CPU generators, scaled for the scheduler
    f = c.vae_scale_factor
    shape = (batch, c.unet.config.in_channels, job.height // f, job.width // f)
    latents = randn_tensor(shape, generator=job.generators, device=device, dtype=embeds.dtype)
    latents = latents * scheduler.init_noise_sigma
    step_kwargs = _step_kwargs(scheduler, job.generators, job.eta)

    # 6. Prepare the ControlNet input: one map per sample (2B with CFG, like the latents)
    control = job.control
    if control is not None:
        control_image = control.image.to(device=device, dtype=dtype)
        control_image = control_image.expand((2 * batch if use_cfg else batch), -1, -1, -1)

    # 7. Denoising loop
    sigmas_seen: list[float] = []
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled at step {i} of {total}")
        model_input = torch.cat([latents] * 2) if use_cfg else latents
        model_input = scheduler.scale_model_input(model_input, t)

        down_res, mid_res = None, None
        if control is not None:
            # on for steps whose position lies inside [start, end] (diffusers' controlnet_keep)
            keep = not (i / total < control.start or (i + 1) / total > control.end)
            if keep and control.scale != 0:
                down_res, mid_res = control.model(model_input, t, encoder_hidden_states=embeds,
                                                  controlnet_cond=control_image, conditioning_scale=control.scale,
                                                  guess_mode=False, added_cond_kwargs=added, return_dict=False)

        out = c.unet(model_input, t, encoder_hidden_states=embeds, down_block_additional_residuals=down_res,
                     mid_block_additional_residual=mid_res, added_cond_kwargs=added, return_dict=False)[0]
        if use_cfg:
            out_uncond, out_cond = out.chunk(2)
            out = out_uncond + g * (out_cond - out_uncond)
        else:
            out_uncond, out_cond = None, out

        x_t = latents
        latents = scheduler.step(out, t, x_t, **step_kwargs, return_dict=False)[0]

        sigma = noise_level(scheduler, timesteps_cpu[i])
        sigmas_seen.append(sigma)
        if observer is not None:
            x0 = predict_x0(x_t, out, sigma, sigma_space, prediction_type)
            observer(Step(i, total, t, sigma, x_t, x0, out_cond, out_uncond, out))

    # 8. Decode: (B, 3, H, W) in [-1, 1], in the VAE's own dtype (SDXL's is kept in fp32: it overflows in fp16)
    images = c.vae.decode(latents.to(c.vae.dtype) / c.vae.config.scaling_factor, return_dict=False,
                          generator=job.generators)[0]
    return Denoised(images=images, latents=latents, unet_calls=total, sigmas=sigmas_seen, sigma_space=sigma_space,
                    prediction_type=prediction_type)
