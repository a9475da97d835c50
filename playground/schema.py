"""The request and result types of every action: plain data, no torch (validated by `playground.validation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from playground.metadata import Params
from playground.preprocessors import CannyOptions, PoseOptions

if TYPE_CHECKING:  # the tensors a trajectory holds; this module itself never imports torch
    import numpy as np
    import torch


# ---------------------------------------------------------------- requests

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
    shift: float = 0.0  # a flow model's (SD3) scheduler shift; 0: the model's own (3.0)
    refiner_start: float = 0.0  # SDXL: the fraction of the way at which the refiner takes over (0: no refiner)
    skip_layer_guidance: float = 0.0  # SD3.5: skip-layer guidance scale (0: off; 2.8 is diffusers' default)
    skip_layers: tuple[int, ...] = ()  # the blocks it skips: filled in from the settings when it is on
    model: str = ""  # which loaded model runs it, by name ("": the first loaded; see playground.models)
    # the fraction of the steps after which CFG stops (1: guided to the end): the rest see the prompt alone
    cfg_stop: float = 1.0


@dataclass(frozen=True)
class GridRequest:
    # prompt, negative prompt, seed (one for every cell), steps, CFG scale and size; the rows replace its
    # scheduler, the columns the field their axis names (number of images: one per cell)
    base: GenerateRequest = GenerateRequest(steps=20)
    schedulers: tuple[str, ...] = ("Euler a", "DPM++ 2M Karras")  # rows
    columns: str | tuple[float, ...] = "1, 3, 7.5, 12"  # a list, or text like "2-12 (+2)"
    axis: str = "cfg"  # what the columns vary: a key (or label) of axes.AXES
    # rows from several loaded models, by name (each with the rows' schedulers that fit it, else its default);
    # empty: the base's model alone
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlRequest:
    image: Image.Image | str | Path | None = None  # the photo, or a ready control map
    mode: str = "canny"  # a key or label of preprocessors.PREPROCESSORS
    controlnet: str = "canny"  # a key of settings.CONTROLNETS
    canny: CannyOptions = CannyOptions()  # the Canny thresholds (checked whatever the mode)
    openpose: PoseOptions = PoseOptions()  # the pose detector, hands, face (checked whatever the mode)
    pose: str = ""  # a pose as OpenPose JSON, for the "pose" mode
    resize: str = "crop"  # how the image is fitted to width x height: see preprocessors.RESIZE_MODES
    conditioning_scale: float = 1.0  # 0..2: how hard the map steers
    guidance_start: float = 0.0  # fraction of the steps before the ControlNet starts
    guidance_end: float = 1.0  # fraction after which it stops
    base: GenerateRequest = GenerateRequest()  # prompt, seed, steps, CFG, scheduler, size, images


@dataclass(frozen=True)
class InspectRequest:
    base: GenerateRequest = GenerateRequest()  # one image
    attention_of: str = "prompt"  # whose tokens' attention is recorded: a key (or label) of ATTENTION_OF
    word: str = ""  # the `attention` call's word ("" = the first word worth a map)
    resolution: str = "all"  # the `attention` call's layer choice
    tokens: tuple[int, ...] = ()  # validated: the word's pieces among the kept tokens


@dataclass(frozen=True)
class TokenRequest:
    """How many of the text encoders' tokens a prompt uses."""

    prompt: str = ""
    model: str = ""  # which loaded model's tokenizers count ("": the first loaded)


@dataclass(frozen=True)
class RoundTripRequest:
    """An image through the VAE and back."""

    image: Image.Image | str | Path | None = None  # a picture, or the path of an upload
    model: str = ""  # whose VAE ("": the first loaded model's)


@dataclass(frozen=True)
class PoseRequest:
    """A pose (OpenPose JSON) drawn as a control map, mirrored left-right on request."""

    pose: str = ""  # OpenPose JSON: one person or several
    width: int = 0  # the map's size; 0: the model's native size
    height: int = 0
    mirror: bool = False
    model: str = ""  # whose native size a 0 means ("": the first loaded model's)


WALKS = {"prompts": "two prompts (their embeddings mixed, one seed)",
         "seeds": "two seeds (their noise slerped, one prompt)"}
MAX_WALK_FRAMES = 16


@dataclass(frozen=True)
class WalkRequest:
    """Frames on the way from one picture to another: between two prompts or two seeds."""

    base: GenerateRequest = GenerateRequest(steps=12)  # where it starts: its prompt and seed, and every setting
    between: str = "prompts"  # a key (or label) of WALKS
    to_prompt: str = ""  # where a walk between prompts ends
    to_seed: int = -1  # where a walk between seeds ends (-1: a random one)
    frames: int = 8  # 2 .. MAX_WALK_FRAMES, both ends included


# ---------------------------------------------------------------- results

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


@dataclass
class GridCell:
    scheduler: str
    value: float  # the column's value: a CFG scale, a step count or a flow shift
    generated: Generated
    unet_calls: int  # model evaluations for this cell
    seconds: float  # its own pass, or its share of its row's batched pass
    psnr: float | None = None  # steps axis: dB between this image and the reference run's (inf when equal)
    latent_rms: float | None = None  # steps axis: RMS between this cell's final latents and the reference's
    model: str = ""  # the model that made it, when a grid's rows come from several models

    @property
    def row(self) -> str:
        """Its row's name: the scheduler, after the model where the rows come from several models."""
        return f"{self.model} · {self.scheduler}" if self.model else self.scheduler


@dataclass
class GridResult:
    request: GridRequest  # validated: seed resolved, scales as a tuple of floats, size filled in
    cells: list[list[GridCell]]  # rows (schedulers) x columns (CFG scales or step counts)
    sigmas: dict[str, list[float]]  # noise level at each model evaluation, per scheduler (its first column's)
    seconds: float
    # an axis with a reference run (steps, CFG stop): the axis value of the run of each scheduler every cell is
    # compared with (a step count; CFG stop 1)
    reference: float | None = None
    flow_sigmas: bool = False  # the sigmas are a flow model's: x_t = (1 - sigma) x0 + sigma eps
    flow_rows: frozenset[str] = frozenset()  # rows from several models: the `sigmas` keys that are a flow model's


@dataclass(frozen=True)
class TokenCount:
    used: int  # tokens the prompt takes, including CLIP's start and end tokens
    limit: int  # 77 for CLIP
    dropped: str  # the text CLIP will not see ("" when it fits)
    encoders: int = 1  # text encoders reading the prompt, each through its own tokenizer (SDXL: 2, same count)
    unknown: tuple[str, ...] = ()  # words the model never saw in training (a model that lists its vocabulary)
    t5: "TokenCount | None" = None  # SD3: T5's own count against its longer window (256 or 512 tokens)


@dataclass
class WalkResult:
    frames: list[Generated]
    request: WalkRequest  # validated: seeds resolved
    mix: list[float]  # where each frame stands on the way, 0 .. 1
    unet_calls: int  # model evaluations (each on the batch of every frame)
    seconds: float


@dataclass
class ControlResult:
    control_map: Image.Image  # what the ControlNet saw, at the generation size
    images: list[Generated]
    request: ControlRequest  # validated, seed resolved
    controlnet: str  # where the ControlNet weights came from
    unet_calls: int
    seconds: float


@dataclass
class Trajectory:
    """One recorded generation: every model evaluation of the denoising loop (per-session state)."""

    request: GenerateRequest  # validated, seed resolved
    params: Params
    image: Image.Image  # the final picture
    tensors: dict[str, torch.Tensor]  # x_t, x0, out_cond, [out_uncond], out: (N, 4, h, w) fp16; timesteps, sigmas
    sigma_space: bool  # latents are x0 + sigma * eps (Euler-like) rather than sqrt(a) x0 + sqrt(1-a) eps
    prediction_type: str  # what the model outputs: "epsilon", "v_prediction" or "flow_prediction" (SD3's v = eps - x0)
    seconds: float
    decoded: dict[int, Image.Image] = field(default_factory=dict)  # VAE decodes of x0, made on demand
    handoff: int | None = None  # SDXL with its refiner: the first model evaluation the refiner made
    attention: Any = None  # attention.capture.AttentionMaps when cross-attention was recorded, else None

    @property
    def flow(self) -> bool:
        """Made by a flow model: its sigmas mean x_t = (1 - sigma) x0 + sigma eps."""
        return self.prediction_type == "flow_prediction"

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
