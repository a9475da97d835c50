"""The Engine owns the one loaded model and runs every action on it.

Each action (generate, grid, control, inspect, VAE round trip) is a short numbered recipe: check the
request (`playground.requests`, which names a bad value), build a `Job`, and hand it to `_run`, the
one shared step that runs our loop under the memory guard and finishes the images. The Engine keeps
no per-request state, so concurrent requests cannot leak into each other; it knows nothing of gradio,
and writes neither files (`playground.outputs`) nor prose for the UI (`playground.ui`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import ControlNetModel
from PIL import Image

from playground import anatomy as anatomy_mod, attention, control as control_mod, inspect, latents, poses, schedulers
from playground.loading import LoadedModel, controlnet_source, load_controlnet, load_pose_detector
from playground.metadata import Params
from playground.requests import (
    ControlNetUnavailable,
    ControlRequest,
    ControlResult,
    Generated,
    GenerateRequest,
    GenerateResult,
    GridCell,
    GridRequest,
    GridResult,
    InvalidRequest,
    OutOfMemory,
    Progress,
    TokenCount,
    Trajectory,
    integer,
    text,
    validate_attention,
    validate_control,
    validate_generate,
    validate_grid,
    validate_preprocess,
)
from playground.sampling import Components, Control, Denoised, Job, Observer, denoise, tokenize
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


class Engine:
    def __init__(self, model: LoadedModel, settings: Settings):
        self.model = model
        self.settings = settings
        self._controlnets: dict[str, tuple[ControlNetModel, str]] = {}  # kind -> (weights, source), once each
        self._controlnet_lock = threading.Lock()
        self._pose_detector_state: tuple[object | None, str, bool] | None = None  # see _pose_detector
        self._pose_lock = threading.Lock()
        # latent -> RGB for previews: published factors for SD's VAE, else fitted once, now (not in a request)
        self.rgb_map = latents.rgb_map_for(model.pipe.vae)

    # -- facts --------------------------------------------------------------------------------
    @property
    def components(self) -> Components:
        """The modules of the one pipeline, read afresh (compiled ones included): never a stale handle."""
        return Components.from_pipeline(self.model.pipe)

    @property
    def native_size(self) -> int:
        return self.model.native_size

    @property
    def vae_factor(self) -> int:
        return self.model.pipe.vae_scale_factor  # 8 for SD: latents are H/8 x W/8

    def count_tokens(self, prompt: str) -> TokenCount:
        """How many of CLIP's tokens `prompt` uses, and what gets cut off past the limit (SDXL: the larger
        count of its two tokenizers, which split the same way)."""
        prompt = text("prompt", prompt, self.settings.max_prompt_chars)
        pipe = self.model.pipe
        counts = []
        for tok in (t for t in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if t is not None):
            ids = tokenize(tok, [prompt])["input_ids"][0]  # includes start and end tokens
            limit = tok.model_max_length
            counts.append(TokenCount(used=len(ids), limit=limit,
                                     dropped=tok.decode(ids[limit - 1:-1]) if len(ids) > limit else ""))
        worst = max(counts, key=lambda c: c.used - c.limit)
        return replace(worst, encoders=len(counts))

    def warm_up(self) -> float:
        """One short generation at the native size (with CFG), so compiling happens before users come."""
        start = time.perf_counter()
        self.generate(GenerateRequest(prompt="warm-up", steps=2, seed=0))
        return time.perf_counter() - start

    def validate(self, req: GenerateRequest) -> GenerateRequest:
        """requests.validate_generate with this model's native size and VAE factor."""
        return validate_generate(req, self.settings, self.native_size, self.vae_factor)

    # -- actions ------------------------------------------------------------------------------
    def generate(self, req: GenerateRequest, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        """Text to image."""
        # 1. Check inputs (the seed resolved); image i uses seed + i
        req = self.validate(req)
        seeds = [req.seed + i for i in range(req.num_images)]

        # 2. Denoise and finish, with progress every step and a live preview a few times a second
        observer = self._observer(on_progress, "denoising", preview=True)
        made, out, seconds = self._run(self._job(req, seeds), [self._params(req, seed=s) for s in seeds], observer,
                                       cancel, f"{len(seeds)} image(s) of {req.width}x{req.height}")
        return GenerateResult(images=made, request=req, unet_calls=out.unet_calls, seconds=seconds)

    def grid(self, req: GridRequest, on_progress: OnProgress | None = None,
             cancel: threading.Event | None = None) -> GridResult:
        """Schedulers x CFG scales (each row one batched pass) or x step counts (each cell compared with
        a long reference run of its scheduler), every cell from the same seed's noise."""
        # 1. Check every cell before any work; one seed for all of them
        req = validate_grid(req, self.settings, self.native_size, self.vae_factor)
        base, values, by_steps = req.base, list(req.columns), req.axis == "steps"
        reference = self.settings.grid_reference_steps if by_steps else None

        # 2. How many model evaluations the whole grid takes, for one progress bar over all of it
        config = self.model.pipe.scheduler.config
        passes = [*values, reference] if by_steps else [base.steps]
        calls = {name: sum(schedulers.evaluations(name, config, n) for n in passes) for name in req.schedulers}
        total, done = sum(calls.values()), 0

        # 3. Row by row: the scales in one batch, or each step count and then the reference alone
        cells, sigmas, start = [], {}, time.perf_counter()
        for r, name in enumerate(req.schedulers):
            label = f"{name}: cells {r * len(values) + 1}-{(r + 1) * len(values)} of {len(req.schedulers) * len(values)}"
            row, progress = replace(base, scheduler=name), (on_progress, label, done, total)
            made, sigmas[name] = (self._steps_row(row, values, reference, progress, cancel) if by_steps
                                  else self._scales_row(row, values, progress, cancel))
            cells.append(made)
            done += calls[name]
        return GridResult(request=req, cells=cells, sigmas=sigmas, seconds=time.perf_counter() - start,
                          reference_steps=reference)

    def control(self, req: ControlRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None) -> ControlResult:
        """Text to image steered by a ControlNet, on the shared UNet, VAE and text encoder."""
        # 1. Check inputs, make the map (opened and fitted once, at the generation size), get the ControlNet
        req = validate_control(req, self.settings, self.native_size, self.vae_factor)
        gen = req.base
        control_map = self._control_map(req)
        net, source = self._controlnet(req.controlnet)

        # 2. The map as (1, 3, H, W) in [0, 1]; the loop moves it to the device once, for every image
        pixels = torch.from_numpy(np.asarray(control_map, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        steer = Control(model=net, image=pixels, scale=req.conditioning_scale, start=req.guidance_start,
                        end=req.guidance_end)

        # 3. Denoise with the ControlNet's residuals added to the shared UNet
        seeds = [gen.seed + i for i in range(gen.num_images)]
        extra = (("ControlNet", req.controlnet), ("Control mode", req.mode),
                 ("Control weight", f"{req.conditioning_scale:g}"), ("Guidance start", f"{req.guidance_start:g}"),
                 ("Guidance end", f"{req.guidance_end:g}"))
        made, out, seconds = self._run(
            self._job(gen, seeds, control=steer), [replace(self._params(gen, seed=s), extra=extra) for s in seeds],
            self._observer(on_progress, f"denoising with the {req.controlnet} ControlNet"), cancel,
            f"{len(seeds)} controlled image(s) of {gen.width}x{gen.height}")
        return ControlResult(control_map=control_map, images=made, request=req, controlnet=source,
                             unet_calls=out.unet_calls, seconds=seconds)

    def inspect(self, req: GenerateRequest, on_progress: OnProgress | None = None,
                cancel: threading.Event | None = None, attention_of: str = "prompt") -> Trajectory:
        """Generate one image while recording every step of the trajectory, and (unless `attention_of` is
        "off") the cross-attention maps of the prompt's (or the negative prompt's) tokens."""
        # 1. Check inputs: one image; whose attention to record
        req = self.validate(replace(req, num_images=1))
        of = validate_attention(attention_of, req)

        # 2. Observers: the recorders, plus progress (previews come from the recording itself)
        recorder = latents.Recorder()
        progress = self._observer(on_progress, "denoising (recording every step)")
        tokens, maps = None, contextlib.nullcontext()
        if of != "off":
            tokens = attention.split_prompt(self.model.pipe.tokenizer,
                                            req.prompt if of == "prompt" else req.negative_prompt)
            # the UNet's batch is [negative, prompt] with CFG, [prompt] without
            sample = 1 if (of == "prompt" and req.cfg_scale != 1) else 0
            f = self.vae_factor
            maps = attention.recording(self.components.unet, attention.AttentionRecorder(
                sample, len(attention.kept(tokens)), (req.height // f, req.width // f)))

        # 3. Denoise and finish; the trajectory keeps what the loop reports of its scheduler
        with maps as attn:
            def observer(step):
                recorder(step)
                if attn is not None:
                    attn.end_step(step.index, step.total)
                if progress is not None:
                    progress(step)

            made, out, seconds = self._run(self._job(req, [req.seed]), [self._params(req)], observer, cancel,
                                           f"a recorded {req.width}x{req.height} image")
        return Trajectory(request=req, params=made[0].params, image=made[0].image, tensors=recorder.tensors(),
                          sigma_space=out.sigma_space, prediction_type=out.prediction_type, seconds=seconds,
                          attention=attn.maps(tokens, of) if attn is not None else None)

    def attention(self, req: GenerateRequest, attention_of: str = "prompt", word: str = "", resolution: str = "all",
                  on_progress: OnProgress | None = None, cancel: threading.Event | None = None
                  ) -> tuple[Trajectory, inspect.AttentionView]:
        """A recorded generation and the attention pictures of `word` (all its token pieces; "" = the first
        word), every value checked before the run."""
        # 1. Check inputs: the request, whose tokens, the word among them, the layer resolution at this size
        checked = attention.validate(req, attention_of, word, resolution, self.settings, self.native_size,
                                     self.vae_factor, self.model.pipe.tokenizer, self.model.pipe.unet.config)

        # 2. Record, then the pictures of the last step
        traj = self.inspect(checked.request, on_progress, cancel, attention_of=checked.of)
        return traj, self.attention_view(traj, traj.steps - 1, checked.tokens, checked.resolution)

    def find_word(self, traj: Trajectory, word: str) -> list[int]:
        """The indices of `word`'s token pieces among a recorded trajectory's attention maps."""
        if traj.attention is None:
            raise InvalidRequest("this trajectory was recorded without attention maps")
        return attention.find_word(traj.attention.tokens, text("word", word, 200), self.model.pipe.tokenizer)

    def step_view(self, traj: Trajectory, index: int) -> inspect.StepView:
        """The inspector's pictures of step `index`, with this model's latent -> RGB map."""
        return inspect.step_view(traj, index, self.rgb_map, self.vae_factor)

    def attention_view(self, traj: Trajectory, index: int, token: int | str | list[int] = 0,
                       resolution: str | None = "all") -> inspect.AttentionView:
        """Cross-attention pictures of step `index` for one kept token (an index, indices, or a word: all its
        pieces), over the step's decoded x0 when it has been decoded, else over its linear RGB preview."""
        if traj.attention is None:
            raise InvalidRequest("this trajectory was recorded without attention maps")
        tokens = self.find_word(traj, token) if isinstance(token, str) else list(token) if isinstance(token, list) \
            else [token]
        backdrop = traj.decoded.get(index)
        if backdrop is None:
            index = integer("step", index, 0, traj.steps - 1)
            backdrop = latents.preview(traj.tensors["x0"][index], self.vae_factor, self.rgb_map)
        return inspect.attention_view(traj, index, tokens, resolution, backdrop)

    @torch.no_grad()
    def decode_x0(self, traj: Trajectory, index: int) -> Image.Image:
        """The predicted clean latent of step `index` through the VAE decoder (cached per trajectory)."""
        index = integer("step", index, 0, traj.steps - 1)
        if index not in traj.decoded:
            vae = self.model.pipe.vae
            x0 = traj.tensors["x0"][index: index + 1].to(device=vae.device, dtype=vae.dtype)
            image = vae.decode(x0 / vae.config.scaling_factor, return_dict=False)[0]
            traj.decoded[index] = self.model.pipe.image_processor.postprocess(image.float(), output_type="pil")[0]
        return traj.decoded[index]

    @torch.no_grad()
    def roundtrip(self, image: Image.Image | str | Path) -> inspect.RoundTrip:
        """Encode an image with the VAE, show its latent channels, decode it back, measure the loss."""
        # 1. Read and fit: RGB, at most MAX_SIZE per side, each side a multiple of the VAE's factor
        image = self._open(image)
        f = self.vae_factor
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

        # 3. The figures: the latent's channels, the sizes, the PSNR
        return inspect.round_trip(image, proc.postprocess(back.float(), output_type="pil")[0], z[0].float().cpu())

    def preprocess(self, req: ControlRequest) -> Image.Image:
        """The control map for `req`: the image opened, fitted to the generation size, preprocessed."""
        return self._control_map(validate_preprocess(req, self.settings, self.native_size, self.vae_factor))

    def detect_pose(self, req: ControlRequest) -> poses.Detection:
        """The people in the request's photo (fitted to the generation size) as keypoints and a control map."""
        # 1. Check inputs: an "OpenPose from the photo" request; the photo opened and fitted
        req = validate_preprocess(replace(req, mode="openpose", controlnet="openpose"), self.settings,
                                  self.native_size, self.vae_factor)
        w, h = req.base.width, req.base.height
        image = control_mod.fit(self._open(req.image), w, h, req.resize)
        return self._detect(image, req.params)

    def draw_pose(self, pose_json: str, width: int = 0, height: int = 0, mirror: bool = False
                  ) -> tuple[Image.Image, str]:
        """A pose (OpenPose JSON) drawn at the generation size, mirrored left-right on request; (map, JSON)."""
        size = self.validate(GenerateRequest(width=width, height=height))
        pose = poses.from_json(text("pose JSON", pose_json, self.settings.max_prompt_chars))
        if mirror:
            pose = poses.mirror(pose)
        return poses.draw(pose, size.width, size.height), poses.to_json(pose)

    def anatomy(self) -> anatomy_mod.Anatomy:
        """The loaded model's parts (with the ControlNets loaded so far), counted from its own modules."""
        with self._controlnet_lock:
            nets = {kind: net for kind, (net, _) in self._controlnets.items()}
        return anatomy_mod.of_pipeline(self.model.pipe, f"loaded: {self.model.name}", self.native_size, nets)

    def families(self) -> dict[str, anatomy_mod.Anatomy]:
        """SD 1.5, SDXL and SD3 Medium from their published configs, on the meta device (counted once)."""
        return anatomy_mod.families()

    def controlnet_source(self, kind: str) -> str:
        """Where the `kind` ControlNet is (or would be) loaded from."""
        return controlnet_source(kind, self.settings, self.model)

    # -- grid rows: (cells, the noise level at each model evaluation) ---------------------------
    def _scales_row(self, row: GenerateRequest, scales: list[float], progress: tuple,
                    cancel: threading.Event | None) -> tuple[list[GridCell], list[float]]:
        """One batched pass: batch = scales, guidance per sample, identical noise."""
        made, out, seconds = self._run(self._job(row, [row.seed] * len(scales), guidance=scales),
                                       [self._params(row, cfg_scale=g) for g in scales], self._observer(*progress),
                                       cancel, f"a row of {len(scales)} cells of {row.width}x{row.height}")
        return [GridCell(row.scheduler, g, m, out.unet_calls, seconds / len(scales)) for g, m in zip(scales, made)], \
            out.sigmas

    def _steps_row(self, row: GenerateRequest, counts: list[int], reference: int, progress: tuple,
                   cancel: threading.Event | None) -> tuple[list[GridCell], list[float]]:
        """One pass per step count, then the reference run; each cell's distance to the reference."""
        on_progress, label, done, total = progress
        passes = []
        for n in [*counts, reference]:
            cell = replace(row, steps=n)
            passes.append(self._run(self._job(cell, [row.seed]), [self._params(cell)],
                                    self._observer(on_progress, label, done, total), cancel,
                                    f"a {n}-step cell of {row.width}x{row.height}"))
            done += passes[-1][1].unet_calls
        (ref,), ref_out, _ = passes.pop()
        cells = [GridCell(row.scheduler, n, made, out.unet_calls, seconds,
                          psnr=latents.psnr(made.array, ref.array, peak=1.0),
                          latent_rms=float((out.latents - ref_out.latents).float().pow(2).mean().sqrt()))
                 for n, ((made,), out, seconds) in zip(counts, passes)]
        return cells, max((out for _, out, _ in passes), key=lambda o: o.unet_calls).sigmas

    # -- shared steps -------------------------------------------------------------------------
    def _job(self, req: GenerateRequest, seeds: list[int], guidance: list[float] | None = None,
             control: Control | None = None) -> Job:
        """One batched pass of the loop for a validated request: one sample per seed (and guidance scale)."""
        n = len(seeds)
        return Job(scheduler=req.scheduler, prompts=[req.prompt] * n, negative_prompts=[req.negative_prompt] * n,
                   guidance=list(guidance) if guidance is not None else [req.cfg_scale] * n,
                   generators=[torch.Generator("cpu").manual_seed(s) for s in seeds], steps=req.steps,
                   height=req.height, width=req.width, control=control)

    def _run(self, job: Job, params: list[Params], observer: Observer | None, cancel: threading.Event | None,
             what: str) -> tuple[list[Generated], Denoised, float]:
        """Denoise `job` under the memory guard, then finish its images; (images, loop result, seconds)."""
        start = time.perf_counter()
        with memory_guard(what):
            out = denoise(self.components, job, observer=observer, cancel=cancel)
        made = self._finish(out.images, params)
        return made, out, time.perf_counter() - start

    def _observer(self, on_progress: OnProgress | None, label: str, done: int = 0, total: int | None = None,
                  preview: bool = False) -> Observer | None:
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
                image = latents.preview(step.x0[0], self.vae_factor, self.rgb_map)
            on_progress(Progress(done + step.index + 1, total or step.total, image, label))

        return observer

    def _params(self, req: GenerateRequest, seed: int | None = None, cfg_scale: float | None = None) -> Params:
        """The settings of one image made for `req` (its own seed, a grid cell's scale), as its PNG carries them."""
        return Params(prompt=req.prompt, negative_prompt=req.negative_prompt, steps=req.steps, sampler=req.scheduler,
                      cfg_scale=req.cfg_scale if cfg_scale is None else cfg_scale,
                      seed=req.seed if seed is None else seed, width=req.width, height=req.height,
                      model=self.model.name)

    def _finish(self, images: torch.Tensor, params: list[Params]) -> list[Generated]:
        """(B, 3, H, W) in [-1, 1] -> safety checker (when the model has one) -> PIL + float pixels."""
        pipe = self.model.pipe
        nsfw = None
        if hasattr(pipe, "run_safety_checker"):  # SD 1.x / 2.x pipelines; SDXL's has no checker
            images, nsfw = pipe.run_safety_checker(images, self.model.device, images.dtype)
        nsfw = [bool(x) for x in nsfw] if nsfw is not None else [False] * len(params)
        arrays = pipe.image_processor.postprocess(images, output_type="np", do_denormalize=[not x for x in nsfw])
        pil = pipe.image_processor.numpy_to_pil(arrays)
        return [Generated(image=im, params=p, nsfw=flag, array=a) for im, p, flag, a in zip(pil, params, nsfw, arrays)]

    def _open(self, image: Image.Image | str | Path | None) -> Image.Image:
        return control_mod.open_upload(image, self.settings.max_size, self.settings.max_upload_pixels)

    def _control_map(self, req: ControlRequest) -> Image.Image:
        """A validated request's map: a pose drawn at the generation size, or the upload opened, fitted to
        the generation size and preprocessed (a pose detector's with its cached weights)."""
        pre = control_mod.PREPROCESSORS[req.mode]
        w, h = req.base.width, req.base.height
        if pre.reads == "pose":
            return poses.draw(poses.from_json(req.pose), w, h)
        image = control_mod.fit(self._open(req.image), w, h, req.resize)
        if pre.detector:
            return self._detect(image, req.params).control_map
        return pre.fn(image, **req.params)

    def _pose_detector(self, download: bool) -> tuple[object | None, str]:
        """controlnet_aux's OpenposeDetector from PLAYGROUND_ANNOTATORS, loaded on first use and kept; or None
        and why not. Without `download` a hub repo is read from the local cache only (auto never waits on a
        network); a failure is remembered, so it is not retried on every request, except that a download
        is still tried once when one is asked for."""
        with self._pose_lock:
            state = self._pose_detector_state  # (detector or None, note, whether a download was allowed)
            if state is None or (state[0] is None and download and not state[2]):
                source = self.settings.annotators
                try:
                    state = (load_pose_detector(source, self.model.device, download=download), source, download)
                except Exception as exc:  # not cached, offline, a bad folder, a broken file
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200].rstrip(".")
                    hub = "/" in source and not source.startswith(("/", ".", "~"))
                    if not download and hub and not Path(source).expanduser().is_dir():
                        first = ("not in this machine's cache, and auto never downloads (pick the openpose "
                                 "detector to download them, about 490 MB)")
                    state = (None, f"OpenPose's weights ({source}) could not be loaded: {first}", download)
                self._pose_detector_state = state
            return state[0], state[1]

    def _pick_detector(self, choice: str, hands: bool, face: bool) -> tuple[str, object | None, str]:
        """(which detector runs, its weights for openpose, why): auto takes OpenPose's where they are on the
        machine, else MediaPipe; a detector asked for by name must be there."""
        note = ""
        if choice != "mediapipe":
            detector, note = self._pose_detector(download=choice == "openpose")
            if detector is not None:
                return "openpose", detector, ("asked for" if choice == "openpose" else f"chosen by auto: weights "
                                                                                         f"from {note}")
            if choice == "openpose":
                raise InvalidRequest(f"{note}. Set PLAYGROUND_ANNOTATORS to a folder with body_pose_model.pth, "
                                     "hand_pose_model.pth and facenet.pth, or choose the mediapipe detector")
        missing = poses.mediapipe_available()
        if missing is not None:
            raise InvalidRequest(missing + (f"; and {note}" if note else ""))
        why = "asked for" if choice == "mediapipe" else f"chosen by auto: {note}"
        if hands or face:
            why += "; MediaPipe draws the body only (hands and face need OpenPose's weights)"
        return "mediapipe", None, why

    def _detect(self, image: Image.Image, params: dict) -> poses.Detection:
        """Run the chosen pose detector on a fitted image; "no person found" is an error, never a black map."""
        hands, face = params.get("hands", False), params.get("face", False)
        used, detector, why = self._pick_detector(params.get("detector", "auto"), hands, face)
        start = time.perf_counter()
        pose = poses.detect_mediapipe(image) if used == "mediapipe" else \
            poses.detect_openpose(detector, image, hands=hands, face=face)
        seconds = time.perf_counter() - start
        if not pose.people:
            raise InvalidRequest(f"no person found in the photo by the {used} detector; try a photo with a person "
                                 "in full view, the other detector, or a pose preset")
        return poses.Detection(pose, poses.draw(pose, *image.size), used, why, seconds)

    def _controlnet(self, kind: str) -> tuple[ControlNetModel, str]:
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
