"""The Engine owns the one loaded pipeline and runs every action on it.

It validates requests (raising `InvalidRequest`, a ValueError that names the bad value and the
allowed range), resolves seeds, makes a fresh scheduler per request and calls `sampling.denoise`.
It keeps no per-request state, so concurrent requests cannot leak into each other. It knows
nothing of gradio.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from PIL import Image

from playground import latents, schedulers, settings as settings_mod
from playground.loading import LoadedModel
from playground.metadata import Params
from playground.sampling import Components, Job, denoise, tokenize

MAX_PROMPT_CHARS = 20_000  # far past CLIP's 77 tokens; stops megabyte prompts before tokenizing
MAX_SEED = 2**32 - 1


class InvalidRequest(ValueError):
    """A request value out of range; the message names it and the allowed range."""


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1  # -1: pick one at random (the result says which)
    steps: int = 25
    cfg_scale: float = 7.5
    scheduler: str = "DPM++ 2M Karras"
    width: int = 0  # 0: the model's native size
    height: int = 0
    num_images: int = 1


@dataclass
class Generated:
    image: Image.Image
    params: Params  # everything needed to make this image again (its own seed)
    nsfw: bool = False  # blacked out by the model's safety checker


@dataclass
class GenerateResult:
    images: list[Generated]
    request: GenerateRequest  # validated, seed resolved
    unet_calls: int  # model evaluations per image
    seconds: float
    sigmas: list[float] = field(default_factory=list)


@dataclass
class Progress:
    step: int  # model evaluations done
    total: int
    preview: Image.Image | None  # cheap RGB view of the predicted clean image (first image)


@dataclass(frozen=True)
class TokenCount:
    used: int  # tokens the prompt takes, including CLIP's start and end tokens
    limit: int  # 77 for CLIP
    dropped: str  # the text CLIP will not see ("" when it fits)


def _integer(name: str, value, lo: int, hi: int) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value, ok = int(value), True
    if not ok or not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _number(name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def _text(name: str, value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return value


class Engine:
    MAX_CFG = 30.0

    def __init__(self, model: LoadedModel, settings: settings_mod.Settings):
        self.model = model
        self.settings = settings
        self.components = Components.from_pipeline(model.pipe)

    # -- facts the UI shows -------------------------------------------------------------------
    @property
    def scheduler_names(self) -> list[str]:
        return list(schedulers.NAMES)

    @property
    def native_size(self) -> int:
        return self.model.native_size

    def banner(self) -> str:
        """One line for the top of the page: which model, on what, and why."""
        m = self.model
        trained = "" if m.trained else " — UNTRAINED (random weights: images are noise-like; it shows the mechanics)"
        return f"Model: {m.name} on {m.device.type} ({str(m.dtype).removeprefix('torch.')}){trained}. Why: {m.reason}."

    def count_tokens(self, text: str) -> TokenCount:
        """How many of CLIP's tokens `text` uses, and what gets cut off past the limit."""
        text = _text("prompt", text)
        tok = self.components.tokenizer
        limit = tok.model_max_length
        ids = tokenize(tok, [text])["input_ids"][0]  # includes start and end tokens
        dropped = tok.decode(ids[limit - 1:-1]) if len(ids) > limit else ""
        return TokenCount(used=len(ids), limit=limit, dropped=dropped)

    # -- validation ---------------------------------------------------------------------------
    def validate(self, req: GenerateRequest) -> GenerateRequest:
        """A checked copy of `req` with the size filled in; raises InvalidRequest naming the value."""
        s = self.settings
        f = self.components.vae_scale_factor
        width = self.native_size if req.width in (0, None) else req.width
        height = self.native_size if req.height in (0, None) else req.height
        width, height = _integer("width", width, 64, s.max_size), _integer("height", height, 64, s.max_size)
        for name, v in (("width", width), ("height", height)):
            if v % f:
                raise InvalidRequest(f"{name} must be a multiple of {f}, got {v} (try {v - v % f} or {v - v % f + f})")
        if req.scheduler not in schedulers.REGISTRY:
            raise InvalidRequest(f"unknown scheduler {req.scheduler!r}; choose one of: {', '.join(schedulers.NAMES)}")
        return replace(
            req,
            prompt=_text("prompt", req.prompt),
            negative_prompt=_text("negative prompt", req.negative_prompt),
            seed=_integer("seed", req.seed, -1, MAX_SEED),
            steps=_integer("steps", req.steps, 1, s.max_steps),
            cfg_scale=_number("CFG scale", req.cfg_scale, 0.0, self.MAX_CFG),
            width=width,
            height=height,
            num_images=_integer("number of images", req.num_images, 1, s.max_images),
        )

    # -- actions ------------------------------------------------------------------------------
    def generate(
        self,
        req: GenerateRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerateResult:
        """Text to image: validate, resolve the seed, denoise with a fresh scheduler, decode, check."""
        # 1. Check inputs and resolve the seed (image i uses seed + i)
        req = self.validate(req)
        if req.seed == -1:
            req = replace(req, seed=secrets.randbelow(MAX_SEED + 1))
        n = req.num_images
        seeds = [req.seed + i for i in range(n)]

        # 2. A scheduler of our own, from the model's scheduler config
        pipe = self.model.pipe
        scheduler = schedulers.make(req.scheduler, pipe.scheduler.config)
        spec = schedulers.spec(req.scheduler)

        # 3. Observer: progress and a cheap preview of the predicted clean image
        observer = None
        if on_progress is not None:
            def observer(step):
                on_progress(Progress(step.index + 1, step.total, latents.preview(step.x0[0], self.components.vae_scale_factor)))

        # 4. Denoise
        job = Job(prompts=[req.prompt] * n, negative_prompts=[req.negative_prompt] * n, guidance=[req.cfg_scale] * n,
                  generators=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                  steps=req.steps, height=req.height, width=req.width)
        start = time.perf_counter()
        out = denoise(self.components, scheduler, job, observer=observer, cancel=cancel, sigma_space=spec.sigma_space)

        # 5. Safety checker (when the model has one), then to PIL
        images, nsfw = pipe.run_safety_checker(out.images, self.model.device, out.images.dtype)
        nsfw = list(nsfw) if nsfw is not None else [False] * n
        pil = pipe.image_processor.postprocess(images, output_type="pil", do_denormalize=[not x for x in nsfw])
        seconds = time.perf_counter() - start

        made = [
            Generated(image=im, nsfw=bool(flag), params=Params(
                prompt=req.prompt, negative_prompt=req.negative_prompt, steps=req.steps, sampler=req.scheduler,
                cfg_scale=req.cfg_scale, seed=seed, width=req.width, height=req.height, model=self.model.name))
            for im, flag, seed in zip(pil, nsfw, seeds)
        ]
        return GenerateResult(images=made, request=req, unet_calls=out.unet_calls, seconds=seconds, sigmas=out.sigmas)
