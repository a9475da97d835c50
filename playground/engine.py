"""The Engine owns the one loaded model and runs every action on it.

Every action (generate, grid, control, inspect, attention, walk, VAE round trip, the token count, the pose
tools) has one shape: one request type, one door and one numbered recipe. The door (`action`) checks the request
once against the model's `Limits` with the action's validator (`playground.validation`, which names a bad value;
the model choice is one of the values), and the recipe receives the checked request, builds a `Job` and hands it
to `run`, the one shared step that runs our loop under the memory guard and finishes the images. `ACTIONS` lists
every action with its validator. What differs between model families is asked of the model's entry
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

from playground import latents, parts, poses, preprocessors, schedulers, tokens, views, walks
from playground.annotators import Annotators
from playground.attention import capture
from playground.attention.sources import ATTENTION_OF
from playground.axes import AXES
from playground.batching import Batcher, Standing, shared
from playground.errors import InvalidRequest, OutOfMemory
from playground.limits import Limits
from playground.loading import LoadedModel
from playground.metadata import Params
from playground.sampling import Components, Control, Denoised, Job, Observer, cut_timesteps, denoise
from playground.schema import (
    ControlRequest, ControlResult, Generated, GenerateRequest, GenerateResult, GridCell, GridRequest, GridResult,
    InspectRequest, PoseRequest, Progress, RoundTripRequest, TokenCount, TokenRequest, Trajectory, WalkRequest,
    WalkResult,
)
from playground.settings import Settings
from playground.validation import (
    integer, validate_attention, validate_control, validate_detect_pose, validate_draw_pose, validate_generate,
    validate_grid, validate_inspect, validate_preprocess, validate_roundtrip, validate_tokens, validate_walk,
)

PREVIEW_INTERVAL = 0.2  # seconds between live previews (progress itself is reported every step); jobs sharing the
# denoiser's rounds each wait that times the jobs in the batch, so the server sends about five a second in all (each is
# made in the round, then encoded, written and sent: with sixteen jobs at five a second each, a room's previews alone
# took a large part of the server)

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
                      preview: Callable[[torch.Tensor], Image.Image] | None = None,
                      sharing: Callable[[], int] | None = None) -> Observer | None:
    """Progress after every model evaluation (`done` before this pass, of `total` in all); with `preview`,
    a cheap RGB view of the predicted x0 a few times a second (each one is a copy to the CPU), spaced by the number
    of jobs `sharing()` says share the denoiser now (the first and the last step always have one)."""
    if on_progress is None:
        return None
    last = -math.inf

    def observer(step):
        nonlocal last
        image = None
        if preview and (time.monotonic() - last >= PREVIEW_INTERVAL * max(1, sharing() if sharing else 1)
                        or step.index + 1 == step.total):
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


def attention_choices(family, c: Components, factor: int) -> Callable[[int, int], list[str]]:
    """(height, width) in pixels -> the attention layer choices there: 'all' and each resolution (a U-Net) or band of
    blocks (an MMDiT) the model attends at (read from its modules' configs)."""
    return lambda height, width: tokens.resolution_names(family.attention_grids(c, (height // factor, width // factor)))


Validator = Callable[[object, Limits], object]
ACTIONS: dict[str, Validator] = {}  # every Engine action by name, with the validator its request passes once


def action(validate: Validator) -> Callable[[Callable], Callable]:
    """Mark an Engine method as an action: its request is checked once, by `validate` against the Engine's Limits
    (the model choice included), at this door; the method, the action's recipe, receives the checked request."""
    def wrap(recipe):
        ACTIONS[recipe.__name__] = validate

        @functools.wraps(recipe)
        def door(self, req, *args, **kwargs):
            return recipe(self, validate(req, self.limits), *args, **kwargs)

        door.validate = validate
        return door

    return wrap


class Engine:
    def __init__(self, model: LoadedModel, settings: Settings, batcher: Batcher | None | bool = True):
        self.model, self.settings = model, settings
        self.batcher = shared(settings.batch_jobs) if batcher is True else (batcher or None)  # True: as BATCH_JOBS asks
        self.annotators = Annotators(model, settings)  # ControlNets and pose detectors, loaded once each
        # latent -> RGB for previews: published factors for SD's VAE, else fitted once, now (not in a request)
        self.rgb_map = latents.rgb_map_for(model.pipe.vae)
        # x0 -> a cheap RGB view, a few times a second during a run
        self.preview = functools.partial(latents.preview, scale=self.vae_factor, rgb=self.rgb_map)
        self.limits = Limits.of(settings, self.native_size, model=model.name, models=(model.name,),
                                tokenizer=model.pipe.tokenizer, refiner=model.refiner is not None,
                                attention_layers=attention_choices(model.family, self.components, self.vae_factor),
                                **model.family.facts(self.components))

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

    @action(validate_tokens)
    def count_tokens(self, req: TokenRequest) -> TokenCount:
        """How many of the text encoders' tokens the prompt uses, what gets cut off past the limit, and which words
        the model never saw (when it lists its vocabulary, as the offline model does)."""
        count = self.model.family.count_tokens(self.components, req.prompt)
        known = self.model.vocabulary
        words = dict.fromkeys(w for w in re.findall(r"[a-z]+(?:-[a-z]+)*", req.prompt.lower()) if w not in known)
        return replace(count, unknown=tuple(words) if known else ())

    def warm_up(self) -> float:
        """One short generation at the native size (with CFG), so compiling happens before users come."""
        start = time.perf_counter()
        self.generate(GenerateRequest(prompt="warm-up", steps=2, seed=0, scheduler=self.model.family.default_scheduler))
        return time.perf_counter() - start

    # -- actions ------------------------------------------------------------------------------
    @action(validate_generate)
    def generate(self, req: GenerateRequest, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        """Text to image."""
        # 1. The checked request's seeds: image i uses seed + i
        seeds = [req.seed + i for i in range(req.num_images)]

        # 2. Denoise and finish, with progress every step and a live preview a few times a second (shared: run_job)
        observer = progress_observer(on_progress, "denoising", preview=self.preview,
                                     sharing=(lambda: self.batcher.counts()[1]) if self.batcher is not None else None)
        made, out, seconds = self.run(job_for(req, seeds), [params_for(self.model.name, req, seed=s) for s in seeds],
                                       observer, cancel, f"{len(seeds)} image(s) of {req.width}x{req.height}",
                                       waiting_note(on_progress, self.model, req))
        return GenerateResult(images=made, request=req, unet_calls=out.unet_calls, seconds=seconds)

    @action(validate_grid)
    def grid(self, req: GridRequest, on_progress: OnProgress | None = None,
             cancel: threading.Event | None = None) -> GridResult:
        """Schedulers x the values of a grid axis, every cell from the same seed's noise: a batched axis (CFG)
        runs each row as one pass, another (steps) each cell alone and compares it with a long reference run."""
        # 1. Every cell was checked at the door, before any work; one seed for all of them
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
            made, sigmas[name] = (self._scales_row(row, values, progress, cancel) if axis.batched else
                                  self._passes_row(row, axis, values, reference, progress, cancel))
            cells.append(made)
            done += calls[name]
        return GridResult(request=req, cells=cells, sigmas=sigmas, seconds=time.perf_counter() - start,
                          reference=reference,
                          flow_sigmas=self.model.family.prediction == "flow_prediction")

    @action(validate_grid)
    def grid_evaluations(self, req: GridRequest) -> dict[str, int]:
        """Model evaluations each row of a grid would make (its reference runs included): its cost, before it runs."""
        return self._evaluations(req)

    @action(validate_control)
    def control(self, req: ControlRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None) -> ControlResult:
        """Text to image steered by a ControlNet, on the shared denoiser, VAE and text encoders."""
        # 1. Make the map (opened and fitted once, at the generation size), get the ControlNet
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

    @action(validate_inspect)
    def inspect(self, req: InspectRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None) -> Trajectory:
        """Generate one image while recording every step of the trajectory, and (unless attention is "off")
        the cross-attention maps of the prompt's (or the negative prompt's) tokens."""
        return self._record(req, on_progress, cancel)

    @action(validate_attention)
    def attention(self, req: InspectRequest, on_progress: OnProgress | None = None,
                  cancel: threading.Event | None = None) -> tuple[Trajectory, views.AttentionView]:
        """A recorded generation and the attention pictures of the request's word (all its token pieces;
        "" = the first word) at its last step, every value checked before the run."""
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
            backdrop = self.preview(traj.tensors["x0"][integer("step", index, 0, traj.steps - 1)])
        return views.attention_view(traj, index, chosen, resolution, backdrop)

    @torch.no_grad()
    def decode_x0(self, traj: Trajectory, index: int) -> Image.Image:
        """The predicted clean latent of step `index` through the VAE decoder (cached per trajectory)."""
        index = integer("step", index, 0, traj.steps - 1)
        if index not in traj.decoded:
            image = self.model.family.decode(self.components, traj.tensors["x0"][index: index + 1])
            traj.decoded[index] = self.model.pipe.image_processor.postprocess(image.float(), output_type="pil")[0]
        return traj.decoded[index]

    @action(validate_walk)
    def walk(self, req: WalkRequest, on_progress: OnProgress | None = None,
             cancel: threading.Event | None = None) -> WalkResult:
        """The frames of a walk between two prompts or two seeds, one batch of our loop (`playground.walks`)."""
        # 1. Where each frame stands
        gen, mix = req.base, walks.mixes(req.frames)
        job = job_for(gen, [gen.seed] * req.frames)

        # 2. Between prompts: the embeddings mixed. Between seeds: each frame's noise slerped between the two seeds'
        if req.between == "prompts":
            job.prompts_to, job.mix = [req.to_prompt] * req.frames, mix
        else:
            c, f = self.components, self.vae_factor
            job.noise = walks.slerped_noise((1, c.family.latent_channels(c), gen.height // f, gen.width // f),
                                            gen.seed, req.to_seed, mix)

        # 3. One batch; each frame's PNG says where on the way it stands
        what = f"a walk of {req.frames} frames of {gen.width}x{gen.height}"
        ends = (("Walk to", req.to_prompt),) if req.between == "prompts" else (("Walk to seed", str(req.to_seed)),)
        params = [params_for(self.model.name, gen, extra=(*ends, ("Walk position", f"{t:.3f}"))) for t in mix]
        made, out, seconds = self.run(job, params, progress_observer(on_progress, f"walking: {what}"), cancel, what)
        return WalkResult(frames=made, request=req, mix=mix, unet_calls=out.unet_calls, seconds=seconds)

    @action(validate_roundtrip)
    @torch.no_grad()
    def roundtrip(self, req: RoundTripRequest) -> views.RoundTrip:
        """Encode an image with the VAE, show its latent channels, decode it back, measure the loss."""
        # 1. Read and fit: RGB, at most MAX_SIZE per side, each side a multiple of the VAE's factor
        image, f = self._open(req.image), self.vae_factor
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

    @action(validate_preprocess)
    def preprocess(self, req: ControlRequest) -> Image.Image:
        """The control map for `req`: the image opened, fitted to the generation size, preprocessed."""
        return self._control_map(req)

    @action(validate_detect_pose)
    def detect_pose(self, req: ControlRequest) -> poses.Detection:
        """The people in the request's photo (fitted to the generation size) as keypoints and a control map."""
        image = preprocessors.fit(self._open(req.image), req.base.width, req.base.height, req.resize)
        return self.annotators.detect(image, req.openpose)

    @action(validate_draw_pose)
    def draw_pose(self, req: PoseRequest) -> tuple[Image.Image, str]:
        """A pose (OpenPose JSON) drawn at the generation size, mirrored left-right on request; (map, JSON)."""
        pose = poses.from_json(req.pose)
        pose = poses.mirror(pose) if req.mirror else pose
        return poses.draw(pose, req.width, req.height), poses.to_json(pose)

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

    def _scales_row(self, row: GenerateRequest, scales: list[float], progress: tuple, cancel: threading.Event | None
                    ) -> tuple[list[GridCell], list[float]]:
        """A grid row of a batched axis in one pass: batch = scales, guidance per sample, identical noise; (cells,
        the noise level at each model evaluation)."""
        made, out, seconds = self.run(job_for(row, [row.seed] * len(scales), guidance=scales),
                                      [params_for(self.model.name, row, cfg_scale=g) for g in scales],
                                      progress_observer(*progress), cancel,
                                      f"a row of {len(scales)} cells of {row.width}x{row.height}")
        return [GridCell(row.scheduler, g, m, out.unet_calls, seconds / len(scales)) for g, m in zip(scales, made)], \
            out.sigmas

    def _passes_row(self, row: GenerateRequest, axis, values: list[float], reference: float | None, progress: tuple,
                    cancel: threading.Event | None) -> tuple[list[GridCell], list[float]]:
        """A grid row of an unbatched axis (see axes.Axis): one pass per column setting its field to its value; with
        `reference`, a last run with that value (a long run of the steps axis, the CFG stop axis's guided to the end),
        and each cell's distance to it."""
        on_progress, label, done, total = progress
        passes = []
        for v in [*values, reference] if reference is not None else values:
            cell = replace(row, **{axis.field: axis.cast(v)})
            passes.append(self.run(job_for(cell, [row.seed]), [params_for(self.model.name, cell)],
                                   progress_observer(on_progress, label, done, total), cancel,
                                   f"a {cell.steps}-step cell of {row.width}x{row.height}"))
            done += passes[-1][1].unet_calls
        ref = passes.pop() if reference is not None else None
        cells = [GridCell(row.scheduler, v, made, out.unet_calls, seconds,
                          **({} if ref is None else {"psnr": latents.psnr(made.array, ref[0][0].array, peak=1.0),
                              "latent_rms": float((out.latents - ref[1].latents).float().pow(2).mean().sqrt())}))
                 for v, ((made,), out, seconds) in zip(values, passes)]
        return cells, max((out for _, out, _ in passes), key=lambda o: o.unet_calls).sigmas

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

    def _open(self, image: Image.Image | str | Path | None) -> Image.Image:
        return preprocessors.open_upload(image, self.settings.max_size, self.settings.max_upload_pixels)

    def _control_map(self, req: ControlRequest) -> Image.Image:
        """A validated request's map, made by its preprocessor entry (the upload opened and fitted only if read)."""
        w, h = req.base.width, req.base.height
        image = functools.cache(lambda: preprocessors.fit(self._open(req.image), w, h, req.resize))
        inputs = preprocessors.MapInputs(image, req.pose, (w, h), req.canny, req.openpose, self.annotators.detect)
        return preprocessors.PREPROCESSORS[req.mode].make_map(inputs)
