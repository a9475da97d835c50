"""The Engine owns the one loaded model and runs every action on it.

Each action (generate, grid, control, inspect, attention, VAE round trip) is a short numbered recipe:
check the request once against the model's `Limits` (`playground.requests`, which names a bad value),
build a `Job`, and hand it to `run`, the one shared step that runs our loop under the memory guard
and finishes the images. What differs between model families is asked of the model's entry
(`playground.families`); ControlNets and pose detectors come from the `Annotators` shelf. The Engine
keeps no per-request state, so concurrent requests cannot leak into each other; it knows nothing of
gradio, and writes neither files (`playground.outputs`) nor prose for the UI (`playground.ui`). Generate jobs may
share the denoiser with other visitors' (`playground.batching`, when a Batcher is on): each keeps its own scheduler,
seeds, progress, Stop and picture.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from playground import latents, parts, poses, preprocessors, schedulers, tokens, views
from playground.attention import capture
from playground.annotators import Annotators
from playground.batching import Batcher, Standing, shared
from playground.errors import InvalidRequest, OutOfMemory
from playground.axes import AXES
from playground.loading import LoadedModel
from playground.metadata import Params
from playground.attention.sources import ATTENTION_OF
from playground.limits import Limits
from playground.schema import (
    ControlRequest, ControlResult, GenerateRequest, GenerateResult, Generated, GridCell, GridRequest, GridResult, InspectRequest, Progress, TokenCount, Trajectory,
)
from playground.validation import (
    integer, text, validate_attention, validate_control, validate_draw_pose, validate_generate, validate_grid, validate_inspect, validate_preprocess,
)
from playground.sampling import Components, Control, Denoised, Job, Observer, cut_timesteps, denoise
from playground.settings import Settings

PREVIEW_INTERVAL = 0.2  # seconds between live previews (progress itself is reported every step)

OnProgress = Callable[[Progress], None]


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


def job_for(req: GenerateRequest, seeds: list[int], guidance: list[float] | None = None,
            control: Control | None = None) -> Job:
    """One batched pass of the loop for a validated request: one sample per seed (and guidance scale)."""
    n = len(seeds)
    return Job(scheduler=req.scheduler, prompts=[req.prompt] * n, negative_prompts=[req.negative_prompt] * n,
               guidance=list(guidance) if guidance is not None else [req.cfg_scale] * n,
               generators=[torch.Generator("cpu").manual_seed(s) for s in seeds], steps=req.steps,
               height=req.height, width=req.width, control=control, shift=req.shift or None,
               end=req.refiner_start or 1.0, skip_layers=tuple(req.skip_layers),
               skip_scale=req.skip_layer_guidance or 2.8, cfg_stop=req.cfg_stop)


def params_for(model: str, req: GenerateRequest, **changes) -> Params:
    """The settings of one image made for `req` (its own seed, a grid cell's scale), as its PNG carries them."""
    p = Params(prompt=req.prompt, negative_prompt=req.negative_prompt, steps=req.steps, sampler=req.scheduler,
               cfg_scale=req.cfg_scale, seed=req.seed, width=req.width, height=req.height, model=model,
               shift=req.shift, refiner_start=req.refiner_start, skip_layer_guidance=req.skip_layer_guidance,
               cfg_stop=req.cfg_stop)
    return replace(p, **changes)


def progress_observer(on_progress: OnProgress | None, label: str, done: int = 0, total: int | None = None,
                      preview: Callable[[torch.Tensor], Image.Image] | None = None) -> Observer | None:
    """Progress after every model evaluation (`done` before this pass, of `total` in all); with `preview`,
    a cheap RGB view of the predicted x0 a few times a second (each one is a copy to the CPU)."""
    if on_progress is None:
        return None
    last = -math.inf

    def observer(step):
        nonlocal last
        image = None
        if preview and (time.monotonic() - last >= PREVIEW_INTERVAL or step.index + 1 == step.total):
            last = time.monotonic()
            image = preview(step.x0[0])
        on_progress(Progress(done + step.index + 1, total or step.total, image, label))

    return observer


def run_job(model: LoadedModel, c: Components, job: Job, observer: Observer | None,
            cancel: threading.Event | None, batcher: Batcher | None = None,
            waiting: Callable[[Standing], None] | None = None) -> Denoised:
    """Our loop on the model; for a hand-off (job.end < 1) the base's pass, then its refiner's, on one progress bar.
    With a `batcher`, a job given `waiting` (a generate's: it hears where it stands while the batch is full) that fits
    runs in the batcher's rounds beside other visitors' jobs, and any other takes the device's turn step by step."""
    if waiting is not None and batcher is not None and batcher.fits(job):
        return batcher.denoise(c, job, observer, cancel, waiting)
    turn = batcher.turn if batcher is not None else None
    if job.end >= 1:
        return denoise(c, job, observer=observer, cancel=cancel, turn=turn)
    job = replace(job, observer_total=sum(pass_evaluations(job.scheduler, dict(p.scheduler.config), job.steps, *span)
                                          for p, span in ((model.pipe, (0.0, job.end)), (model.refiner, (job.end, 1.0)))))
    return hand_off(model.refiner, job, denoise(c, job, observer=observer, cancel=cancel, turn=turn), observer, cancel,
                    turn)


def hand_off(refiner, job: Job, first: Denoised, observer: Observer | None, cancel: threading.Event | None,
             turn=None) -> Denoised:
    """SDXL's second stage: the refiner goes on from the base's latents at `job.end` with the base's generators
    where it left them (as the same generators passed to diffusers' base, then to its refiner: a stochastic
    sampler's noise goes on, never repeats the start), without a ControlNet, its steps numbered after the base's."""
    second = denoise(Components.from_pipeline(refiner), replace(
        job, start=job.end, end=1.0, init_latents=first.latents, observer_offset=first.unet_calls, control=None),
        observer=observer, cancel=cancel, turn=turn)
    return replace(second, unet_calls=first.unet_calls + second.unet_calls, sigmas=first.sigmas + second.sigmas,
                   handoff=first.unet_calls)


def pass_evaluations(name: str, config: dict, steps: int, start: float = 0.0, end: float = 1.0) -> int:
    """Model evaluations one pass from `start` to `end` of a `steps`-step run makes (the base's or the refiner's)."""
    probe = schedulers.make(name, config)
    probe.set_timesteps(steps)
    return len(cut_timesteps(probe, start, end))


def finish(model: LoadedModel, images: torch.Tensor, params: list[Params]) -> list[Generated]:
    """(B, 3, H, W) in [-1, 1] -> safety checker (when the model has one) -> PIL + float pixels."""
    pipe, nsfw = model.pipe, None
    if hasattr(pipe, "run_safety_checker"):  # SD 1.x / 2.x pipelines; SDXL's has no checker
        images, nsfw = pipe.run_safety_checker(images, model.device, images.dtype)
    nsfw = [bool(x) for x in nsfw] if nsfw is not None else [False] * len(params)
    arrays = pipe.image_processor.postprocess(images, output_type="np", do_denormalize=[not x for x in nsfw])
    pil = pipe.image_processor.numpy_to_pil(arrays)
    return [Generated(image=im, params=p, nsfw=flag, array=a) for im, p, flag, a in zip(pil, params, nsfw, arrays)]


# -- grid rows: (cells, the noise level at each model evaluation); `run` is the Engine's run --------------------
def scales_row(run: Callable, model: str, row: GenerateRequest, scales: list[float], progress: tuple,
               cancel: threading.Event | None) -> tuple[list[GridCell], list[float]]:
    """One batched pass: batch = scales, guidance per sample, identical noise."""
    made, out, seconds = run(job_for(row, [row.seed] * len(scales), guidance=scales),
                             [params_for(model, row, cfg_scale=g) for g in scales], progress_observer(*progress),
                             cancel, f"a row of {len(scales)} cells of {row.width}x{row.height}")
    return [GridCell(row.scheduler, g, m, out.unet_calls, seconds / len(scales)) for g, m in zip(scales, made)], \
        out.sigmas


def passes_row(run: Callable, model: str, row: GenerateRequest, axis, values: list[float],
               reference: float | None, progress: tuple, cancel: threading.Event | None
               ) -> tuple[list[GridCell], list[float]]:
    """One pass per column (an unbatched axis: see grid.Axis) setting its field to its value; with `reference`,
    a last run with that value (a long run of the steps axis, the CFG stop axis's guided to the end), and each
    cell's distance to it."""
    on_progress, label, done, total = progress
    passes = []
    for v in [*values, reference] if reference is not None else values:
        cell = replace(row, **{axis.field: axis.cast(v)})
        passes.append(run(job_for(cell, [row.seed]), [params_for(model, cell)],
                          progress_observer(on_progress, label, done, total), cancel,
                          f"a {cell.steps}-step cell of {row.width}x{row.height}"))
        done += passes[-1][1].unet_calls
    ref = passes.pop() if reference is not None else None
    cells = [GridCell(row.scheduler, v, made, out.unet_calls, seconds,
                      **({} if ref is None else {"psnr": latents.psnr(made.array, ref[0][0].array, peak=1.0),
                          "latent_rms": float((out.latents - ref[1].latents).float().pow(2).mean().sqrt())}))
             for v, ((made,), out, seconds) in zip(values, passes)]
    return cells, max((out for _, out, _ in passes), key=lambda o: o.unet_calls).sigmas


def waiting_note(on_progress: OnProgress | None, model: LoadedModel, req: GenerateRequest
                 ) -> Callable[[Standing], None]:
    """Progress at step 0 while a job waits for a place in the shared batch, its label saying where it stands."""
    if on_progress is None:
        return lambda s: None
    total = schedulers.evaluations(req.scheduler, dict(model.pipe.scheduler.config), req.steps)

    def note(s: Standing):
        wait = "" if s.seconds is None else f", about {math.ceil(s.seconds)} s"
        on_progress(Progress(0, total, None, f"waiting: {s.ahead} job{'s' * (s.ahead != 1)} ahead{wait}"))

    return note


class Engine:
    def __init__(self, model: LoadedModel, settings: Settings, batcher: Batcher | None | bool = True):
        self.model, self.settings = model, settings
        self.batcher = shared(settings.batch_jobs) if batcher is True else (batcher or None)  # True: as BATCH_JOBS asks
        self.annotators = Annotators(model, settings)  # ControlNets and pose detectors, loaded once each
        # latent -> RGB for previews: published factors for SD's VAE, else fitted once, now (not in a request)
        self.rgb_map = latents.rgb_map_for(model.pipe.vae)
        self.limits = Limits.of(settings, self.native_size, tokenizer=model.pipe.tokenizer, refiner=model.refiner is not None,
                                attention_layers=self._attention_layers, **model.family.facts(self.components))

    # -- facts --------------------------------------------------------------------------------
    @property
    def components(self) -> Components:
        """The modules of the one pipeline, read afresh (compiled ones included): never a stale handle."""
        return Components.from_pipeline(self.model.pipe, self.model.t5_tokens or self.settings.t5_tokens)

    @property
    def native_size(self) -> int:
        return self.model.native_size

    @property
    def vae_factor(self) -> int:
        return self.model.pipe.vae_scale_factor  # 8 for SD: latents are H/8 x W/8

    def _attention_layers(self, height: int, width: int) -> list[str]:
        """The attention layer choices at a size: 'all' and each resolution the model cross-attends at."""
        f = self.vae_factor
        return tokens.resolution_names(self.model.family.attention_grids(self.components, (height // f, width // f)))

    def count_tokens(self, prompt: str) -> TokenCount:
        """How many of the text encoders' tokens `prompt` uses, what gets cut off past the limit, and which words
        the model never saw (when it lists its vocabulary, as the offline model does)."""
        count = self.model.family.count_tokens(self.components, text("prompt", prompt, self.limits.max_prompt_chars))
        known = self.model.vocabulary
        words = dict.fromkeys(w for w in re.findall(r"[a-z]+(?:-[a-z]+)*", prompt.lower()) if w not in known)
        return replace(count, unknown=tuple(words) if known else ())

    def warm_up(self) -> float:
        """One short generation at the native size (with CFG), so compiling happens before users come."""
        start = time.perf_counter()
        self.generate(GenerateRequest(prompt="warm-up", steps=2, seed=0, scheduler=self.model.family.default_scheduler))
        return time.perf_counter() - start

    # -- actions ------------------------------------------------------------------------------
    def generate(self, req: GenerateRequest, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        """Text to image."""
        # 1. Check inputs (the seed resolved); image i uses seed + i
        req = validate_generate(req, self.limits)
        seeds = [req.seed + i for i in range(req.num_images)]

        # 2. Denoise and finish, with progress every step and a live preview a few times a second (shared: run_job)
        observer = progress_observer(on_progress, "denoising", preview=self._preview)
        made, out, seconds = self.run(job_for(req, seeds), [params_for(self.model.name, req, seed=s) for s in seeds],
                                       observer, cancel, f"{len(seeds)} image(s) of {req.width}x{req.height}",
                                       waiting_note(on_progress, self.model, req))
        return GenerateResult(images=made, request=req, unet_calls=out.unet_calls, seconds=seconds)

    def grid(self, req: GridRequest, on_progress: OnProgress | None = None,
             cancel: threading.Event | None = None) -> GridResult:
        """Schedulers x the values of a grid axis, every cell from the same seed's noise: a batched axis (CFG)
        runs each row as one pass, another (steps) each cell alone and compares it with a long reference run."""
        # 1. Check every cell before any work; one seed for all of them
        req = validate_grid(req, self.limits)
        axis, values = AXES[req.axis], list(req.columns)
        reference = axis.reference(self.settings.grid_reference_steps) if axis.reference else None

        # 2. How many model evaluations the whole grid takes, for one progress bar over all of it
        calls = self._evaluations(req)
        total, done = sum(calls.values()), 0

        # 3. Row by row
        cells, sigmas, start = [], {}, time.perf_counter()
        for r, name in enumerate(req.schedulers):
            label = f"{name}: cells {r * len(values) + 1}-{(r + 1) * len(values)} of {len(req.schedulers) * len(values)}"
            row, progress = replace(req.base, scheduler=name), (on_progress, label, done, total)
            made, sigmas[name] = (
                scales_row(self.run, self.model.name, row, values, progress, cancel) if axis.batched else
                passes_row(self.run, self.model.name, row, axis, values, reference, progress, cancel))
            cells.append(made)
            done += calls[name]
        return GridResult(request=req, cells=cells, sigmas=sigmas, seconds=time.perf_counter() - start,
                          reference=reference, flow=self.model.family.flow)

    def grid_evaluations(self, req: GridRequest) -> dict[str, int]:
        """Model evaluations each row of a grid would make (its reference runs included): its cost, before it runs."""
        return self._evaluations(validate_grid(req, self.limits))

    def control(self, req: ControlRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None) -> ControlResult:
        """Text to image steered by a ControlNet, on the shared denoiser, VAE and text encoders."""
        # 1. Check inputs, make the map (opened and fitted once, at the generation size), get the ControlNet
        req = validate_control(req, self.limits)
        gen, control_map = req.base, self._control_map(req)
        net, source = self.annotators.controlnet(req.controlnet)

        # 2. The map as (1, 3, H, W) in [0, 1]; the loop moves it to the device once, for every image
        pixels = torch.from_numpy(np.asarray(control_map, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        steer = Control(model=net, image=pixels, scale=req.conditioning_scale, start=req.guidance_start,
                        end=req.guidance_end)

        # 3. Denoise with the ControlNet's residuals added to the shared denoiser
        seeds = [gen.seed + i for i in range(gen.num_images)]
        extra = (("ControlNet", req.controlnet), ("Control mode", req.mode),
                 ("Control weight", f"{req.conditioning_scale:g}"), ("Guidance start", f"{req.guidance_start:g}"),
                 ("Guidance end", f"{req.guidance_end:g}"))
        made, out, seconds = self.run(
            job_for(gen, seeds, control=steer), [params_for(self.model.name, gen, seed=s, extra=extra) for s in seeds],
            progress_observer(on_progress, f"denoising with the {req.controlnet} ControlNet"), cancel,
            f"{len(seeds)} controlled image(s) of {gen.width}x{gen.height}")
        return ControlResult(control_map=control_map, images=made, request=req, controlnet=source,
                             unet_calls=out.unet_calls, seconds=seconds)

    def inspect(self, req: InspectRequest | GenerateRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None) -> Trajectory:
        """Generate one image while recording every step of the trajectory, and (unless attention is "off")
        the cross-attention maps of the prompt's (or the negative prompt's) tokens."""
        req = InspectRequest(base=req) if isinstance(req, GenerateRequest) else req
        return self._record(validate_inspect(req, self.limits), on_progress, cancel)

    def attention(self, req: InspectRequest, on_progress: OnProgress | None = None,
                  cancel: threading.Event | None = None) -> tuple[Trajectory, views.AttentionView]:
        """A recorded generation and the attention pictures of the request's word (all its token pieces;
        "" = the first word) at its last step, every value checked before the run."""
        req = validate_attention(req, self.limits)
        traj = self._record(req, on_progress, cancel)
        return traj, self.attention_view(traj, traj.steps - 1, list(req.tokens), req.resolution)

    def step_view(self, traj: Trajectory, index: int) -> views.StepView:
        """The inspector's pictures of step `index`, with this model's latent -> RGB map."""
        return views.step_view(traj, index, self.rgb_map, self.vae_factor)

    def attention_view(self, traj: Trajectory, index: int, token: int | str | list[int] = 0,
                       resolution: str | None = "all") -> views.AttentionView:
        """Cross-attention pictures of step `index` for one kept token (an index, indices, or a word: all its
        pieces), over the step's decoded x0 when it has been decoded, else over its linear RGB preview."""
        chosen = views.chosen_tokens(traj, token, self.model.pipe.tokenizer)  # names a bad word before any work
        backdrop = traj.decoded.get(index)
        if backdrop is None:
            backdrop = self._preview(traj.tensors["x0"][integer("step", index, 0, traj.steps - 1)])
        return views.attention_view(traj, index, chosen, resolution, backdrop)

    @torch.no_grad()
    def decode_x0(self, traj: Trajectory, index: int) -> Image.Image:
        """The predicted clean latent of step `index` through the VAE decoder (cached per trajectory)."""
        index = integer("step", index, 0, traj.steps - 1)
        if index not in traj.decoded:
            image = self.model.family.decode(self.components, traj.tensors["x0"][index: index + 1])
            traj.decoded[index] = self.model.pipe.image_processor.postprocess(image.float(), output_type="pil")[0]
        return traj.decoded[index]

    @torch.no_grad()
    def roundtrip(self, image: Image.Image | str | Path) -> views.RoundTrip:
        """Encode an image with the VAE, show its latent channels, decode it back, measure the loss."""
        # 1. Read and fit: RGB, at most MAX_SIZE per side, each side a multiple of the VAE's factor
        image, f = self._open(image), self.vae_factor
        w, h = (image.width // f) * f, (image.height // f) * f
        if w < f or h < f:
            raise InvalidRequest(f"image is {image.width}x{image.height}; it must be at least {f}x{f} pixels")
        image = image.crop((0, 0, w, h))

        # 2. Encode (the distribution's mode: deterministic) and decode
        c, proc = self.components, self.model.pipe.image_processor
        with memory_guard(f"a {w}x{h} round trip"):
            z = c.family.encode_image(c, proc.preprocess(image))  # (1, 4, H/8, W/8) from (1, 3, H, W) in [-1, 1]
            back = c.family.decode(c, z)

        # 3. The figures: the latent's channels, the sizes, the PSNR
        return views.round_trip(image, proc.postprocess(back.float(), output_type="pil")[0], z[0].float().cpu())

    def preprocess(self, req: ControlRequest) -> Image.Image:
        """The control map for `req`: the image opened, fitted to the generation size, preprocessed."""
        return self._control_map(validate_preprocess(req, self.limits))

    def detect_pose(self, req: ControlRequest) -> poses.Detection:
        """The people in the request's photo (fitted to the generation size) as keypoints and a control map."""
        req = validate_preprocess(replace(req, mode="openpose", controlnet="openpose"), self.limits)
        image = preprocessors.fit(self._open(req.image), req.base.width, req.base.height, req.resize)
        return self.annotators.detect(image, req.openpose)

    def draw_pose(self, pose_json: str, width: int = 0, height: int = 0, mirror: bool = False
                  ) -> tuple[Image.Image, str]:
        """A pose (OpenPose JSON) drawn at the generation size, mirrored left-right on request; (map, JSON)."""
        pose, width, height = validate_draw_pose(pose_json, width, height, self.limits)
        pose = poses.mirror(pose) if mirror else pose
        return poses.draw(pose, width, height), poses.to_json(pose)

    def anatomy(self) -> parts.Anatomy:
        """The loaded model's parts (with the ControlNets loaded so far), counted from its own modules."""
        return parts.of_pipeline(self.model.pipe, f"loaded: {self.model.name}", self.native_size,
                                       self.annotators.loaded_controlnets(), self.model.refiner)

    # -- shared steps -------------------------------------------------------------------------
    def _record(self, req: InspectRequest, on_progress: OnProgress | None, cancel: threading.Event | None
                ) -> Trajectory:
        """A validated inspect request, recorded: every step, and its attention source's maps."""
        # 1. Observers: the recorders, plus progress (previews come from the recording itself)
        gen, source, c = req.base, ATTENTION_OF[req.attention_of], self.components
        recorder, progress = latents.Recorder(), progress_observer(on_progress, "denoising (recording every step)")
        split, maps = None, contextlib.nullcontext()
        if source.records:
            split, f = c.family.split_prompt(c, source.text(gen)), self.vae_factor
            # the refiner's layers too, when one is loaded (the same list for every recording on this model)
            layers = c.family.attention_layers(c) + (capture.cross_attention_layers(self.model.refiner.unet)
                                                     if self.model.refiner is not None else [])
            maps = capture.recording(layers, capture.AttentionRecorder(
                source.sample(gen), [t.position for t in tokens.kept(split)], (gen.height // f, gen.width // f)))

        # 2. Denoise and finish; the trajectory keeps what the loop reports of its scheduler
        with maps as attn:
            def observer(step):
                recorder(step)
                if attn is not None:
                    attn.end_step(step.index, step.total)
                if progress is not None:
                    progress(step)

            made, out, seconds = self.run(job_for(gen, [gen.seed]), [params_for(self.model.name, gen)], observer, cancel,
                                           f"a recorded {gen.width}x{gen.height} image")
        return Trajectory(request=gen, params=made[0].params, image=made[0].image, tensors=recorder.tensors(),
                          sigma_space=out.sigma_space, prediction_type=out.prediction_type, seconds=seconds,
                          handoff=out.handoff,
                          attention=attn.maps(split, req.attention_of) if attn is not None else None)

    def _evaluations(self, req: GridRequest) -> dict[str, int]:
        """A validated grid's model evaluations per row (scheduler)."""
        counts = AXES[req.axis].step_counts(list(req.columns), req.base.steps, self.settings.grid_reference_steps)
        config = self.model.pipe.scheduler.config
        return {name: sum(schedulers.evaluations(name, config, n) for n in counts) for name in req.schedulers}

    def run(self, job: Job, params: list[Params], observer: Observer | None, cancel: threading.Event | None,
             what: str, waiting: Callable[[Standing], None] | None = None) -> tuple[list[Generated], Denoised, float]:
        """Denoise `job` under the memory guard, then finish its images; (images, loop result, seconds)."""
        start = time.perf_counter()
        with memory_guard(what):
            out = run_job(self.model, self.components, job, observer, cancel, self.batcher, waiting)
        return finish(self.model, out.images, params), out, time.perf_counter() - start

    def _preview(self, x0: torch.Tensor) -> Image.Image:
        return latents.preview(x0, self.vae_factor, self.rgb_map)

    def _open(self, image: Image.Image | str | Path | None) -> Image.Image:
        return preprocessors.open_upload(image, self.settings.max_size, self.settings.max_upload_pixels)

    def _control_map(self, req: ControlRequest) -> Image.Image:
        """A validated request's map, made by its preprocessor entry (the upload opened and fitted only if read)."""
        w, h = req.base.width, req.base.height
        image = functools.cache(lambda: preprocessors.fit(self._open(req.image), w, h, req.resize))
        inputs = preprocessors.MapInputs(image, req.pose, (w, h), req.canny, req.openpose, self.annotators.detect)
        return preprocessors.PREPROCESSORS[req.mode].make_map(inputs)
