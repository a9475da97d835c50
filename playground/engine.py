"""The Engine owns the one loaded pipeline and runs every action on it.

It validates requests (raising `InvalidRequest`, a ValueError that names the bad value and the
allowed range), resolves seeds, makes a fresh scheduler per request and calls `sampling.denoise`.
It keeps no per-request state, so concurrent requests cannot leak into each other. It knows
nothing of gradio.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from playground import control as control_mod, latents, schedulers, settings as settings_mod
from playground.grid import parse_scales
from playground.loading import LoadedModel, compile_model, controlnet_source, load_controlnet
from playground.metadata import Params, format_parameters
from playground.sampling import Components, Control, Job, denoise, tokenize

PREVIEW_INTERVAL = 0.2  # seconds between live previews (progress itself is reported every step)
MAX_PROMPT_CHARS = 20_000  # far past CLIP's 77 tokens; stops megabyte prompts before tokenizing
MAX_SEED = 2**32 - 1


MAX_UPLOAD_PIXELS = 100_000_000  # larger uploads are refused before decoding (PIL's bomb guard is ~179 MP)


# prompts for a general text-to-image model (SD 1.5 and friends)
SD_EXAMPLES = (
    "a watercolor painting of a lighthouse on a cliff at sunset",
    "a photo of a red fox in a snowy forest, detailed, high quality",
    "a cosy cottage on a hill, sunny day, cartoon style",
)


class InvalidRequest(ValueError):
    """A request value out of range; the message names it and the allowed range."""


class OutOfMemory(InvalidRequest):
    """The device ran out of memory; the message suggests what to make smaller."""


@contextlib.contextmanager
def memory_guard(what: str):
    """Turn an out-of-memory error into OutOfMemory, after releasing what the failed request held."""
    failed = False
    try:
        yield
    except torch.OutOfMemoryError:
        failed = True  # leave the except block first: its traceback still references the tensors
    if failed:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of GPU memory while making {what}; try a smaller width and height, "
                          "fewer images or grid cells")


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
    array: np.ndarray | None = None  # (H, W, 3) float32 in [0, 1], before 8-bit rounding


@dataclass
class GenerateResult:
    images: list[Generated]
    request: GenerateRequest  # validated, seed resolved
    unet_calls: int  # model evaluations per image
    seconds: float


@dataclass
class Progress:
    step: int  # model evaluations done
    total: int
    preview: Image.Image | None  # cheap RGB view of the predicted x0 (first image); None between previews
    label: str = "denoising"  # what is running, e.g. "Euler a: cells 5-8 of 16"


@dataclass(frozen=True)
class GridRequest:
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1  # resolved once; every cell starts from this seed's noise
    steps: int = 20
    schedulers: tuple[str, ...] = ("Euler a", "DPM++ 2M Karras")  # rows
    cfg_scales: str | tuple[float, ...] = "1, 3, 7.5, 12"  # columns: a list or text like "2-12 (+2)"
    width: int = 0  # 0: the model's native size
    height: int = 0


@dataclass
class GridCell:
    scheduler: str
    cfg_scale: float
    generated: Generated
    unet_calls: int  # model evaluations for this cell
    seconds: float  # its share of its row's batched pass


@dataclass
class GridResult:
    request: GridRequest  # validated: seed resolved, scales as a tuple of floats, size filled in
    cells: list[list[GridCell]]  # rows (schedulers) x columns (CFG scales)
    sigmas: dict[str, list[float]]  # noise level at each model evaluation, per scheduler
    seconds: float


@dataclass(frozen=True)
class TokenCount:
    used: int  # tokens the prompt takes, including CLIP's start and end tokens
    limit: int  # 77 for CLIP
    dropped: str  # the text CLIP will not see ("" when it fits)


@dataclass(frozen=True)
class ControlRequest:
    image: Image.Image | str | Path | None = None  # the photo, or a ready control map
    mode: str = "canny"  # a preprocessor: "canny" (edges from the photo) or "image" (it is the map already)
    controlnet: str = "canny"  # which ControlNet reads the map: "canny" or "openpose"
    low: int = 100  # Canny thresholds, 0..255
    high: int = 200
    resize: str = "crop"  # how the image is fitted to width x height: see control.RESIZE_MODES
    conditioning_scale: float = 1.0  # 0..2: how hard the map steers
    guidance_start: float = 0.0  # fraction of the steps before the ControlNet starts
    guidance_end: float = 1.0  # fraction after which it stops
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 25
    cfg_scale: float = 7.5
    scheduler: str = "DPM++ 2M Karras"
    width: int = 0
    height: int = 0
    num_images: int = 1


@dataclass
class ControlResult:
    control_map: Image.Image  # what the ControlNet saw, at the generation size
    images: list[Generated]
    request: GenerateRequest  # the generation settings, validated, seed resolved
    controlnet: str  # where the ControlNet weights came from
    unet_calls: int
    seconds: float


class ControlNetUnavailable(InvalidRequest):
    """The ControlNet's weights could not be loaded (offline, not cached, bad id)."""


@dataclass
class Trajectory:
    """One recorded generation: every model evaluation of the denoising loop (per-session state)."""

    request: GenerateRequest  # validated, seed resolved
    params: Params
    image: Image.Image  # the final picture
    tensors: dict[str, torch.Tensor]  # x_t, x0, out_cond, [out_uncond], out: (N, 4, h, w) fp16; timesteps, sigmas
    sigma_space: bool  # latents are x0 + sigma * eps (Euler-like) rather than sqrt(a) x0 + sqrt(1-a) eps
    seconds: float
    decoded: dict[int, Image.Image] = field(default_factory=dict)  # VAE decodes of x0, made on demand

    @property
    def steps(self) -> int:
        return int(self.tensors["x_t"].shape[0])

    @property
    def sigmas(self) -> list[float]:
        """Noise level at each recorded model evaluation."""
        return [float(x) for x in self.tensors["sigmas"]]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


@dataclass
class StepView:
    """What the inspector shows for one step of a trajectory."""

    index: int
    total: int
    timestep: float
    sigma: float
    snr_db: float
    channels: list[Image.Image]  # the 4 channels of x_t, diverging colours, one shared scale
    stats: list[latents.ChannelStats]
    scale: float  # the shared colour scale: +-scale saturates
    rgb_x_t: Image.Image  # linear RGB approximation of x_t (brought back to unit scale)
    rgb_x0: Image.Image  # linear RGB approximation of the predicted x0
    guidance: list[tuple[str, Image.Image]]  # (caption, image): cond, uncond, their difference (with CFG)


@dataclass
class RoundTrip:
    original: Image.Image  # the input fitted to the VAE (multiple of 8, at most MAX_SIZE)
    reconstruction: Image.Image
    channels: list[Image.Image]
    stats: list[latents.ChannelStats]
    latent_shape: tuple[int, int, int]  # (4, h, w)
    ratio: float  # numbers in the image / numbers in the latent: 48 for SD
    psnr: float  # dB


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
        if settings.compile and not model.compiled:
            compile_model(model, settings.compile_backend)
        self.components = Components.from_pipeline(model.pipe)
        self._controlnets: dict[str, tuple] = {}  # kind -> (ControlNetModel, source): weights, loaded once each
        self._controlnet_lock = threading.Lock()
        self.rgb_map  # fit (or pick) the latent -> RGB map now, not inside a request

    @functools.cached_property
    def rgb_map(self) -> latents.RGBMap:
        """Latent -> RGB linear map for this model's VAE (published for SD, else fitted once)."""
        return latents.rgb_map_for(self.model.pipe.vae)

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
        compiled = (f" Compiled with torch.compile ({m.compiled}): a new size or batch compiles once, "
                    "so its first request takes longer." if m.compiled else "")
        knows = f" It is {m.description}." if m.description else ""
        return (f"Model: {m.name} on {m.device.type} ({str(m.dtype).removeprefix('torch.')}){trained}. "
                f"Why: {m.reason}.{knows}{compiled}")

    @property
    def examples(self) -> list[str]:
        """Example prompts for the tabs: the model's own (the offline model's marker lists what it knows)."""
        return list(self.model.examples) or list(SD_EXAMPLES)

    def warm_up(self) -> float:
        """One short generation at the native size (with CFG), so compiling happens before users come."""
        start = time.perf_counter()
        self.generate(GenerateRequest(prompt="warm-up", steps=2, seed=0))
        return time.perf_counter() - start

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

        # 3. Observer: progress every step; a cheap preview of the predicted clean image a few times a
        #    second (each one copies to the CPU, a device sync; an eye needs no more)
        observer = None
        if on_progress is not None:
            last_preview = -math.inf

            def observer(step):
                nonlocal last_preview
                preview = None
                if time.monotonic() - last_preview >= PREVIEW_INTERVAL or step.index + 1 == step.total:
                    last_preview = time.monotonic()
                    preview = latents.preview(step.x0[0], self.components.vae_scale_factor, self.rgb_map)
                on_progress(Progress(step.index + 1, step.total, preview))

        # 4. Denoise
        job = Job(prompts=[req.prompt] * n, negative_prompts=[req.negative_prompt] * n, guidance=[req.cfg_scale] * n,
                  generators=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                  steps=req.steps, height=req.height, width=req.width)
        start = time.perf_counter()
        with memory_guard(f"{n} image(s) of {req.width}x{req.height}"):
            out = denoise(self.components, scheduler, job, observer=observer, cancel=cancel,
                          sigma_space=spec.sigma_space)


        # 5. Safety checker (when the model has one), then to PIL
        made = self._finish(out.images, [self._params(req, req.scheduler, req.cfg_scale, seed) for seed in seeds])
        seconds = time.perf_counter() - start
        return GenerateResult(images=made, request=req, unet_calls=out.unet_calls, seconds=seconds)

    def grid(
        self,
        req: GridRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GridResult:
        """Schedulers x CFG scales from one seed: all scales of a scheduler in one batched pass."""
        # 1. Check inputs (everything, before any work) and resolve the seed once
        req = self.validate_grid(req)
        rows, scales = list(req.schedulers), list(req.cfg_scales)
        pipe = self.model.pipe

        # 2. How many model evaluations the whole grid takes, for one progress bar over all of it
        calls = {}
        for name in rows:
            probe = schedulers.make(name, pipe.scheduler.config)
            probe.set_timesteps(req.steps)
            calls[name] = len(probe.timesteps)
        total, done = sum(calls.values()), 0

        # 3. One batched pass per scheduler: batch = scales, guidance per sample, identical noise
        cells, sigmas, start = [], {}, time.perf_counter()
        for r, name in enumerate(rows):
            label = f"{name}: cells {r * len(scales) + 1}-{(r + 1) * len(scales)} of {len(rows) * len(scales)}"
            observer = None
            if on_progress is not None:
                def observer(step, done=done, label=label):
                    on_progress(Progress(done + step.index + 1, total, None, label))
            job = Job(prompts=[req.prompt] * len(scales), negative_prompts=[req.negative_prompt] * len(scales),
                      guidance=scales, generators=[torch.Generator("cpu").manual_seed(req.seed) for _ in scales],
                      steps=req.steps, height=req.height, width=req.width)
            row_start = time.perf_counter()
            with memory_guard(f"a row of {len(scales)} cells of {req.width}x{req.height}"):
                out = denoise(self.components, schedulers.make(name, pipe.scheduler.config), job, observer=observer,
                              cancel=cancel, sigma_space=schedulers.spec(name).sigma_space)
            made = self._finish(out.images, [self._params(req, name, g, req.seed) for g in scales])
            share = (time.perf_counter() - row_start) / len(scales)
            cells.append([GridCell(name, g, m, out.unet_calls, share) for g, m in zip(scales, made)])
            sigmas[name] = out.sigmas
            done += calls[name]
        return GridResult(request=req, cells=cells, sigmas=sigmas, seconds=time.perf_counter() - start)

    def validate_grid(self, req: GridRequest) -> GridRequest:
        """A checked copy of a grid request (seed resolved, scales parsed); InvalidRequest otherwise."""
        raw = req.cfg_scales
        try:
            if raw is None or isinstance(raw, str):
                scales = parse_scales(raw or "")
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                scales = [raw]  # one number: one column
            elif isinstance(raw, (list, tuple)):
                scales = list(raw)  # each value is checked below like the Prompt tab's CFG scale
            else:
                raise ValueError(f"CFG scales must be text such as '1, 3, 7.5' or a list of numbers, got {raw!r}")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        names = [req.schedulers] if isinstance(req.schedulers, str) else list(req.schedulers or [])
        names = list(dict.fromkeys(names))  # a scheduler picked twice is one row
        if not names:
            raise InvalidRequest("pick at least one scheduler for the grid's rows")
        if not scales:
            raise InvalidRequest("give at least one CFG scale for the grid's columns")
        cells, limit = len(names) * len(scales), self.settings.max_grid_cells
        if cells > limit:
            raise InvalidRequest(f"{len(names)} schedulers x {len(scales)} CFG scales = {cells} cells; "
                                 f"the limit is {limit} (MAX_GRID_CELLS)")
        first = None
        for name in names:
            for g in scales:  # the Prompt tab's checks, cell by cell, with the cell's own values
                checked = self.validate(GenerateRequest(prompt=req.prompt, negative_prompt=req.negative_prompt,
                                                        seed=req.seed, steps=req.steps, cfg_scale=g, scheduler=name,
                                                        width=req.width, height=req.height))
                first = first or checked
        seed = first.seed if first.seed != -1 else secrets.randbelow(MAX_SEED + 1)
        return replace(req, prompt=first.prompt, negative_prompt=first.negative_prompt, seed=seed, steps=first.steps,
                       schedulers=tuple(names), cfg_scales=tuple(float(g) for g in scales), width=first.width,
                       height=first.height)

    def inspect(
        self,
        req: GenerateRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Trajectory:
        """Generate one image while recording every step of the trajectory."""
        # 1. Check inputs: one image, its seed resolved
        req = self.validate(replace(req, num_images=1))
        if req.seed == -1:
            req = replace(req, seed=secrets.randbelow(MAX_SEED + 1))
        spec = schedulers.spec(req.scheduler)

        # 2. Observers: the recorder, plus progress (previews come from the recording itself)
        recorder = latents.Recorder()

        def observer(step):
            recorder(step)
            if on_progress is not None:
                on_progress(Progress(step.index + 1, step.total, None, "denoising (recording every step)"))

        # 3. Denoise
        job = Job(prompts=[req.prompt], negative_prompts=[req.negative_prompt], guidance=[req.cfg_scale],
                  generators=[torch.Generator("cpu").manual_seed(req.seed)], steps=req.steps, height=req.height,
                  width=req.width)
        start = time.perf_counter()
        with memory_guard(f"a recorded {req.width}x{req.height} image"):
            out = denoise(self.components, schedulers.make(req.scheduler, self.model.pipe.scheduler.config), job,
                          observer=observer, cancel=cancel, sigma_space=spec.sigma_space)
        params = self._params(req, req.scheduler, req.cfg_scale, req.seed)
        made = self._finish(out.images, [params])[0]
        return Trajectory(request=req, params=params, image=made.image, tensors=recorder.tensors(),
                          sigma_space=spec.sigma_space, seconds=time.perf_counter() - start)

    def step_view(self, traj: Trajectory, index: int) -> StepView:
        """Channel images, statistics and RGB approximations for step `index` of a trajectory."""
        index = _integer("step", index, 0, traj.steps - 1)
        t = traj.tensors
        x_t = t["x_t"][index].float()  # (4, h, w)
        sigma = float(t["sigmas"][index])
        scale = float(x_t.abs().max())
        channels = [self._channel_image(c, scale) for c in x_t.numpy()]
        # Euler-like latents carry sqrt(1 + sigma^2) times the unit scale the RGB map expects
        unit = x_t / math.sqrt(1 + sigma**2) if traj.sigma_space else x_t
        f = self.components.vae_scale_factor
        guidance = []
        if "out_uncond" in t:
            cond, uncond = t["out_cond"][index].float(), t["out_uncond"][index].float()
            s = float(torch.maximum(cond.abs().max(), uncond.abs().max()))
            diff = cond - uncond
            for caption, x, sc in (("prompt (conditional)", cond, s), ("negative / empty prompt (unconditional)",
                                                                         uncond, s),
                                   ("difference: what CFG multiplies", diff, float(diff.abs().max()))):
                guidance.append((f"{caption}, ±{sc:.2f}", self._strip(x, sc)))
        return StepView(index=index, total=traj.steps, timestep=float(t["timesteps"][index]), sigma=sigma,
                        snr_db=latents.snr_db(sigma), channels=channels, stats=latents.channel_stats(x_t.numpy()),
                        scale=scale, rgb_x_t=latents.preview(unit, f, self.rgb_map),
                        rgb_x0=latents.preview(t["x0"][index], f, self.rgb_map), guidance=guidance)

    @torch.no_grad()
    def decode_x0(self, traj: Trajectory, index: int) -> Image.Image:
        """The predicted clean latent of step `index` through the VAE decoder (cached per trajectory)."""
        index = _integer("step", index, 0, traj.steps - 1)
        if index not in traj.decoded:
            vae = self.model.pipe.vae
            x0 = traj.tensors["x0"][index : index + 1].to(device=vae.device, dtype=vae.dtype)
            image = vae.decode(x0 / vae.config.scaling_factor, return_dict=False)[0]
            traj.decoded[index] = self.model.pipe.image_processor.postprocess(image.float(), output_type="pil")[0]
        return traj.decoded[index]

    def save_trajectory(self, traj: Trajectory, path: str | Path) -> Path:
        """All recorded tensors as one .safetensors file, the generation parameters in its metadata."""
        from safetensors.torch import save_file

        meta = {"parameters": format_parameters(traj.params), "sigma_space": str(traj.sigma_space),
                "model": self.model.name, "layout": "x_t, x0, out_*: (steps, 4, H/8, W/8) float16, sample 0",
                "prediction_type": str(self.model.pipe.scheduler.config.get("prediction_type", "epsilon"))}
        save_file({k: v.contiguous() for k, v in traj.tensors.items()}, str(path), metadata=meta)
        return Path(path)

    @torch.no_grad()
    def roundtrip(self, image: Image.Image | str | Path) -> RoundTrip:
        """Encode an image with the VAE, show its latent channels, decode it back, measure the loss."""
        # 1. Read and fit: RGB, at most MAX_SIZE per side, each side a multiple of the VAE's factor
        image = self._open_image(image)
        f = self.components.vae_scale_factor
        w, h = (image.width // f) * f, (image.height // f) * f
        if w < f or h < f:
            raise InvalidRequest(f"image is {image.width}x{image.height}; it must be at least {f}x{f} pixels")
        image = image.crop((0, 0, w, h))

        # 2. Encode (the distribution's mode: deterministic) and decode
        vae, proc = self.model.pipe.vae, self.model.pipe.image_processor
        with memory_guard(f"a {w}x{h} round trip"):
            x = proc.preprocess(image).to(device=vae.device, dtype=vae.dtype)  # (1, 3, H, W) in [-1, 1]
            z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor  # (1, 4, H/8, W/8)
            back = vae.decode(z / vae.config.scaling_factor, return_dict=False)[0]
        recon = proc.postprocess(back.float(), output_type="pil")[0]

        # 3. What it cost: sizes and PSNR
        zc = z[0].float().cpu()
        scale = float(zc.abs().max())
        return RoundTrip(original=image, reconstruction=recon,
                         channels=[self._channel_image(c, scale) for c in zc.numpy()],
                         stats=latents.channel_stats(zc.numpy()), latent_shape=tuple(zc.shape),
                         ratio=(3 * w * h) / zc.numel(),
                         psnr=latents.psnr(np.asarray(image), np.asarray(recon)))

    def preprocess(self, req: ControlRequest) -> Image.Image:
        """The control map for `req`: the image opened, fitted to the generation size, preprocessed."""
        if req.mode not in control_mod.PREPROCESSORS:
            raise InvalidRequest(f"unknown control mode {req.mode!r}; choose one of: "
                                 f"{', '.join(control_mod.PREPROCESSORS)}")
        if req.controlnet not in settings_mod.CONTROLNETS:
            raise InvalidRequest(f"unknown ControlNet {req.controlnet!r}; choose one of: "
                                 f"{', '.join(settings_mod.CONTROLNETS)}")
        if req.mode == "canny" and req.controlnet != "canny":
            raise InvalidRequest("Canny edges need the canny ControlNet; pick 'canny', or give a ready map")
        if req.resize not in control_mod.RESIZE_MODES:
            raise InvalidRequest(f"unknown resize mode {req.resize!r}; choose one of: "
                                 f"{', '.join(control_mod.RESIZE_MODES)}")
        params = {}
        if req.mode == "canny":
            low = _integer("Canny low threshold", req.low, 0, 255)
            high = _integer("Canny high threshold", req.high, 0, 255)
            if low > high:
                raise InvalidRequest(f"Canny low threshold ({low}) must not be above the high one ({high})")
            params = {"low": low, "high": high}
        size = self.validate(GenerateRequest(width=req.width, height=req.height))
        image = control_mod.fit(self._open_image(req.image), size.width, size.height, req.resize)
        return control_mod.PREPROCESSORS[req.mode](image, **params)

    def control(
        self,
        req: ControlRequest,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ControlResult:
        """Text to image steered by a ControlNet, on the shared UNet, VAE and text encoder."""
        # 1. Check inputs: the generation settings, the ControlNet's, then the map itself
        gen = self.validate(GenerateRequest(prompt=req.prompt, negative_prompt=req.negative_prompt, seed=req.seed,
                                            steps=req.steps, cfg_scale=req.cfg_scale, scheduler=req.scheduler,
                                            width=req.width, height=req.height, num_images=req.num_images))
        scale = _number("conditioning scale", req.conditioning_scale, 0.0, 2.0)
        start = _number("guidance start", req.guidance_start, 0.0, 1.0)
        end = _number("guidance end", req.guidance_end, 0.0, 1.0)
        if start >= end:
            raise InvalidRequest(f"guidance start ({start:g}) must be below guidance end ({end:g})")
        control_map = self.preprocess(replace(req, width=gen.width, height=gen.height))
        if gen.seed == -1:
            gen = replace(gen, seed=secrets.randbelow(MAX_SEED + 1))
        net, source = self._controlnet(req.controlnet)

        # 2. The map as (B, 3, H, W) in [0, 1], one per image
        n = gen.num_images
        pixels = torch.from_numpy(np.asarray(control_map, dtype=np.float32) / 255.0).permute(2, 0, 1)
        image = pixels[None].expand(n, -1, -1, -1).to(device=self.model.device, dtype=self.model.dtype)

        # 3. Denoise with the ControlNet's residuals added to the shared UNet
        observer = None
        if on_progress is not None:
            def observer(step):
                on_progress(Progress(step.index + 1, step.total, None, f"denoising with the {req.controlnet} ControlNet"))
        seeds = [gen.seed + i for i in range(n)]
        job = Job(prompts=[gen.prompt] * n, negative_prompts=[gen.negative_prompt] * n, guidance=[gen.cfg_scale] * n,
                  generators=[torch.Generator("cpu").manual_seed(s) for s in seeds], steps=gen.steps,
                  height=gen.height, width=gen.width,
                  control=Control(model=net, image=image, scale=scale, start=start, end=end))
        started = time.perf_counter()
        with memory_guard(f"{n} controlled image(s) of {gen.width}x{gen.height}"):
            out = denoise(self.components, schedulers.make(gen.scheduler, self.model.pipe.scheduler.config), job,
                          observer=observer, cancel=cancel, sigma_space=schedulers.spec(gen.scheduler).sigma_space)
        extra = (("ControlNet", req.controlnet), ("Control mode", req.mode), ("Control weight", f"{scale:g}"),
                 ("Guidance start", f"{start:g}"), ("Guidance end", f"{end:g}"))
        made = self._finish(out.images, [replace(self._params(gen, gen.scheduler, gen.cfg_scale, s), extra=extra)
                                         for s in seeds])
        return ControlResult(control_map=control_map, images=made, request=gen, controlnet=source,
                             unet_calls=out.unet_calls, seconds=time.perf_counter() - started)

    def controlnet_source(self, kind: str) -> str:
        """Where the `kind` ControlNet is (or would be) loaded from."""
        return controlnet_source(kind, self.settings, self.model)

    def _controlnet(self, kind: str):
        """The `kind` ControlNet, loaded on first use and kept (weights only: no per-request state)."""
        with self._controlnet_lock:
            if kind not in self._controlnets:
                source = self.controlnet_source(kind)
                try:
                    self._controlnets[kind] = (load_controlnet(source, self.model), source)
                except Exception as exc:  # offline and not cached, a bad id or folder
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    raise ControlNetUnavailable(
                        f"the {kind} ControlNet ({source}) could not be loaded: {first}. Without a download, set "
                        f"PLAYGROUND_CONTROLNET_{kind.upper()} to a local folder") from None
            return self._controlnets[kind]

    # -- shared steps -------------------------------------------------------------------------
    def _open_image(self, image: Image.Image | str | Path | None) -> Image.Image:
        """An upload as RGB, refused over MAX_UPLOAD_PIXELS, at most MAX_SIZE on its longer side."""
        if image is None or image == "":
            raise InvalidRequest("no image given; upload one first")
        if not isinstance(image, Image.Image):
            name = Path(str(image)).name
            try:
                with Image.open(image) as im:
                    if im.width * im.height > MAX_UPLOAD_PIXELS:  # from the header, before decoding
                        raise InvalidRequest(f"{name} is {im.width}x{im.height} = {im.width * im.height / 1e6:.0f} "
                                             f"megapixels; the limit is {MAX_UPLOAD_PIXELS / 1e6:.0f}")
                    im.draft("RGB", (self.settings.max_size, self.settings.max_size))  # cheap JPEG downscale
                    image = im.convert("RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                if isinstance(exc, InvalidRequest):
                    raise
                raise InvalidRequest(f"{name} is not a readable image ({exc})") from None
        return control_mod.downscale(image.convert("RGB"), self.settings.max_size)

    def _params(self, req: GenerateRequest | GridRequest, sampler: str, cfg_scale: float, seed: int) -> Params:
        """The settings of one image made for `req`, as its PNG will carry them."""
        return Params(prompt=req.prompt, negative_prompt=req.negative_prompt, steps=req.steps, sampler=sampler,
                      cfg_scale=cfg_scale, seed=seed, width=req.width, height=req.height, model=self.model.name)

    def _channel_image(self, channel: np.ndarray, scale: float) -> Image.Image:
        """One latent channel in diverging colours, upscaled (nearest) so each latent pixel shows."""
        im = Image.fromarray(latents.diverging(channel, scale))
        k = max(1, 256 // max(im.size))
        return im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST)

    def _strip(self, x: torch.Tensor, scale: float) -> Image.Image:
        """The 4 channels of (4, h, w) side by side, one shared diverging scale."""
        parts = [self._channel_image(c, scale) for c in x.numpy()]
        strip = Image.new("RGB", (sum(p.width for p in parts) + 4 * (len(parts) - 1), parts[0].height), "white")
        for k, p in enumerate(parts):
            strip.paste(p, (k * (p.width + 4), 0))
        return strip

    def _finish(self, images: torch.Tensor, params: list[Params]) -> list[Generated]:
        """(B, 3, H, W) in [-1, 1] -> safety checker (when the model has one) -> PIL + float pixels."""
        pipe = self.model.pipe
        images, nsfw = pipe.run_safety_checker(images, self.model.device, images.dtype)
        nsfw = [bool(x) for x in nsfw] if nsfw is not None else [False] * len(params)
        arrays = pipe.image_processor.postprocess(images, output_type="np", do_denormalize=[not x for x in nsfw])
        pil = pipe.image_processor.numpy_to_pil(arrays)
        return [Generated(image=im, params=p, nsfw=flag, array=a) for im, p, flag, a in zip(pil, params, nsfw, arrays)]
