"""Resolve the model source and load its components once, with an explicit dtype.

Sources: "auto" (SD 1.5 in fp16 when CUDA is present, otherwise the bundled offline model),
"bundled", a Hugging Face model id, or a local diffusers directory. When the chosen weights cannot
be loaded (offline and not cached, a bad id), the bundled model is loaded instead and
`LoadedModel.reason` says why, for the UI's banner.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import diffusers
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline

from playground.components import denoiser_of
from playground.families import FAMILIES, REFINERS, StableDiffusion, of_pipeline
from playground.settings import BUNDLED_MMDIT, BUNDLED_MODEL, Settings

log = logging.getLogger(__name__)

# A JSON file beside model_index.json in the project's own models (the offline one and the random
# stand-ins): its name, whether it is trained, what it knows, its example prompts.
MARKER = "playground.json"

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class LoadedModel:
    pipe: StableDiffusionPipeline  # the one pipeline of this process; tabs borrow its components
    name: str  # written into PNG metadata as "Model"
    source: str  # hub id or directory it came from
    reason: str  # why this model is the one loaded (shown in the banner)
    trained: bool  # False for the random-weight stand-in
    device: torch.device
    dtype: torch.dtype
    compiled: str = ""  # the torch.compile backend, when --compile is on
    description: str = ""  # what the model knows, from the offline model's marker
    examples: tuple[str, ...] = ()  # prompts it understands, from the marker (the UI's gr.Examples)
    attention_example: str = ""  # the inspector's first prompt, from the marker: each object's words light that object
    vocabulary: frozenset[str] = frozenset()  # every word its captions used, from the marker (empty: any word)
    offline: bool = False  # one of the project's own models (it has a marker): it knows only its world
    refiner: object = None  # SDXL's refiner (a StableDiffusionXLImg2ImgPipeline on the base's encoder and VAE)
    cfg_scale: float | None = None  # the CFG the form starts at, from the marker (None: the app's default, 7.5)
    t5_tokens: int | None = None  # an SD3 trained without T5: the zero tokens in its place it learnt with (marker)
    variant: str = ""  # the files it was loaded from ("fp16": the half-precision ones); its hub ControlNets' too
    learning: str = ""  # what it has not learnt yet, from the marker (the Model menu and the Grid's rows say so)

    @property
    def family(self) -> StableDiffusion:
        """Its entry in playground.families: what differs between SD 1.x / 2.x and SDXL."""
        return of_pipeline(self.pipe)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The U-Net, or SD3's MMDiT (its pipeline calls it `transformer`)."""
        return denoiser_of(self.pipe)

    @property
    def native_size(self) -> int:
        """Pixels per side the denoiser was built for (512 for SD 1.5, 1024 for SDXL and SD3)."""
        return int(self.denoiser.config.sample_size) * self.pipe.vae_scale_factor


class ModelLoadError(RuntimeError):
    pass


def pick_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" -> float16 on cuda (SD's usual), float32 elsewhere (CPUs are slow or wrong in fp16)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {name!r}; choose one of: auto, {', '.join(DTYPES)}") from None


# model_index.json's _class_name -> the family it is; the ones this app runs (an entry each), and the ones it knows of
SUPPORTED = {cls: f.name for cls, f in FAMILIES.items()}
KNOWN = {"StableDiffusionXLImg2ImgPipeline": "SDXL (refiner)", "FluxPipeline": "FLUX", "PixArtAlphaPipeline": "PixArt-α",
         "StableCascadeDecoderPipeline": "Stable Cascade", "KandinskyV22Pipeline": "Kandinsky 2.2"}


class UnsupportedFamily(ValueError):
    """The model's family (from its model_index.json) is not one this app's loop runs."""


def family(source: str | Path) -> str:
    """The pipeline class named by the model's model_index.json (read alone: for a hub id only that file is
    fetched), when it is one this app runs; UnsupportedFamily, naming the supported ones, for any other."""
    config = StableDiffusionPipeline.load_config(str(source))
    name = config.get("_class_name", "?")
    if name in SUPPORTED:
        return name
    supported = ", ".join(f"{f} ({cls})" for cls, f in SUPPORTED.items())
    raise UnsupportedFamily(f"its model_index.json names {name} ({KNOWN.get(name, 'a family this app does not know')}); "
                            f"this app runs {supported} models")


def load_pipeline(source: str | Path, dtype: torch.dtype, safety_checker: bool = True,
                  t5: bool = True, variant: str = "") -> StableDiffusionPipeline:
    """The model's own pipeline class (StableDiffusion[XL|3]Pipeline).from_pretrained for a hub id or a directory,
    with an explicit dtype, once its model_index.json says it is a family this app runs. Components the
    model_index lists as absent (null) are passed as None, as diffusers needs; `t5=False` leaves SD3's T5 out;
    `variant` ("fp16") reads the model's half-precision files."""
    config = StableDiffusionPipeline.load_config(str(source))
    cls = getattr(diffusers, family(source))
    kwargs: dict = {"dtype": dtype}
    if variant:
        kwargs["variant"] = variant
    kwargs.update({name: None for name, value in config.items() if name not in cls._optional_components
                   and isinstance(value, list) and len(value) == 2 and value[1] is None})
    if not t5 and "text_encoder_3" in config:
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    if not safety_checker and cls is StableDiffusionPipeline:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(str(source), **kwargs)
    if pipe.vae.dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        pipe.vae.to(torch.float32)  # SDXL's VAE overflows in fp16 (diffusers upcasts it for each decode; once here)
    if safety_checker and getattr(pipe, "safety_checker", None) is not None:
        log.info("safety checker kept (%s)", type(pipe.safety_checker).__name__)
    elif not safety_checker:
        log.warning("safety checker disabled by --no-safety-checker")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _marker(source: str | Path) -> dict:
    path = Path(source) / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def _finish(pipe: StableDiffusionPipeline, source: str | Path, reason: str, device: torch.device,
            dtype: torch.dtype) -> LoadedModel:
    pipe.to(device)
    if device.type == "cuda":  # convolutions run faster on NHWC tensor cores
        if getattr(pipe, "unet", None) is not None:
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    marker = _marker(source)
    name = marker.get("name") or (Path(source).name if Path(source).is_dir() else str(source))
    return LoadedModel(pipe=pipe, name=name, source=str(source), reason=reason,
                       trained=bool(marker.get("trained", True)), device=device, dtype=dtype,
                       description=marker.get("description", "") if marker.get("trained") else "",
                       examples=tuple(marker.get("examples", ())), offline=bool(marker),
                       attention_example=marker.get("attention_example", "") if marker.get("trained") else "",
                       vocabulary=frozenset(marker.get("vocabulary", ()) if marker.get("trained") else ()),
                       cfg_scale=marker.get("cfg_scale") if marker.get("trained") else None,
                       t5_tokens=marker.get("t5_tokens"), learning=marker.get("learning", ""))


def load_refiner(source: str | Path, model: LoadedModel):
    """SDXL's refiner from a hub id or a folder (its model_index.json must name StableDiffusionXLImg2ImgPipeline),
    beside an SDXL base: the base's second text encoder and VAE are passed in, so they are loaded once and shared."""
    name = StableDiffusionPipeline.load_config(str(source)).get("_class_name", "?")
    if name not in REFINERS:
        raise UnsupportedFamily(f"its model_index.json names {name}; a refiner is one of: {', '.join(REFINERS)}")
    if model.family.refiner != name:
        takes = next((f"an {f.name} base takes a {f.refiner}" for f in FAMILIES.values() if f.refiner == name), "")
        raise UnsupportedFamily(f"a {name} refiner does not run beside a {model.family.name} base ({takes})")
    pipe = getattr(diffusers, name).from_pretrained(
        str(source), text_encoder_2=model.pipe.text_encoder_2, vae=model.pipe.vae, dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(model.device)


def no_paths(text: str) -> str:
    """`text` (an exception's line, for the banner) with every absolute path cut to its last two parts."""
    return re.sub(r"(?:/[\w.@+-]+){2,}/?", lambda m: "/".join(Path(m.group(0)).parts[-2:]), text)


def shown_source(source: str) -> str:
    """Where weights come from, as a page or a message may show it: a hub id as it is, a local folder by its
    last two parts (never a server path)."""
    path = Path(source)
    return "/".join(path.parts[-2:]) if path.is_absolute() or path.exists() else source


def controlnet_source(kind: str, settings: Settings, model: LoadedModel) -> str:
    """Where the `kind` ControlNet comes from: the setting, a controlnet-<kind> folder in the model, or the hub
    (its family entry's default: the SD 1.5 or the SDXL one)."""
    chosen = settings.controlnets.get(kind)
    if chosen:
        return chosen
    local = Path(model.source) / f"controlnet-{kind}"
    if local.is_dir():
        return str(local)
    return model.family.controlnets[kind]


def load_controlnet(source: str, model: LoadedModel) -> ControlNetModel:
    """A ControlNet of the base model's family (SD3's are SD3ControlNetModel) in its dtype, on its device
    (from_pretrained: hub id or folder; a hub id in the base model's variant)."""
    variant = {"variant": model.variant} if model.variant and not Path(source).is_dir() else {}
    net = getattr(diffusers, model.family.controlnet_class).from_pretrained(source, dtype=model.dtype, **variant)
    return net.to(model.device).eval()


def load_pose_detector(source: str, device: torch.device, download: bool = True):
    """controlnet_aux's OpenposeDetector (body, hand and face networks) from a folder or a hub repo in the
    lllyasviel/Annotators layout, on `device`. A hub repo comes from the local cache, or is downloaded
    (about 490 MB) when `download` is set and HF_HUB_OFFLINE is not."""
    from controlnet_aux import OpenposeDetector

    folder = Path(source).expanduser()
    if source.startswith(("/", ".", "~")) and not folder.is_dir():
        raise FileNotFoundError(f"there is no folder {source}")
    if not folder.is_dir() and "/" not in source:
        raise ValueError(f"{source!r} is neither a folder nor a hub repo id")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    detector = OpenposeDetector.from_pretrained(str(folder) if folder.is_dir() else source,
                                                local_files_only=offline or not download)
    return detector.to(device)


def compile_model(model: LoadedModel, backend: str = "inductor") -> None:
    """torch.compile the denoiser and the VAE decoder in place.

    On a GPU with dynamic shapes (fewer recompiles). On a CPU with inductor, the way inference runs fastest there
    (one U-Net call of the offline model on the CFG batch, 2 cores: 27.7 ms eager, 23.6 ms dynamic, 19.8 ms so):
    static shapes, the weights frozen into the graph as constants (oneDNN packs them once) and a C++ wrapper
    around the kernels instead of Python's; each new size or batch compiles once (about 35 s here)."""
    pipe = model.pipe
    cpu_inductor = backend == "inductor" and model.device.type == "cpu"
    if cpu_inductor:
        import torch._inductor.config as inductor  # noqa: PLC0415 (1 s to import: only where it compiles)

        inductor.freezing, inductor.cpp_wrapper = True, True
    dynamic = False if cpu_inductor else True
    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    setattr(pipe, name, torch.compile(getattr(pipe, name), backend=backend, dynamic=dynamic))
    pipe.vae.decoder = torch.compile(pipe.vae.decoder, backend=backend, dynamic=dynamic)
    model.compiled = backend


def load_model(settings: Settings, bundled: str | Path = BUNDLED_MODEL) -> LoadedModel:
    """Load the model the settings ask for, falling back to the bundled model with a reason."""
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    # the bundled model is small: fp32 unless a dtype was asked for explicitly
    bundled_dtype = dtype if settings.dtype != "auto" else torch.float32

    if settings.model == "bundled":
        wanted, why = None, "chosen with --model bundled"
    elif settings.model == "bundled-mmdit":
        wanted, why = str(BUNDLED_MMDIT), "chosen with --model bundled-mmdit"
    elif settings.model == "auto" and device.type != "cuda":
        wanted, why = None, f"no CUDA GPU found ({device.type}), so the bundled offline model is used"
    elif settings.model == "auto":
        wanted, why = settings.gpu_default_model, f"CUDA GPU found: {shown_source(settings.gpu_default_model)} in {dtype}"
    else:
        wanted, why = settings.model, f"chosen with --model {shown_source(settings.model)}"

    variant = settings.variant if dtype == torch.float16 else ""  # half-precision files for a half-precision load
    model = None
    if wanted is not None:
        try:
            model = _finish(load_pipeline(wanted, dtype, settings.safety_checker, settings.t5, variant), wanted, why,
                            device, dtype)
            model.variant = variant
        except Exception as exc:  # offline, not cached, bad id, broken directory: fall back, say why
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.warning("could not load %s (%s); falling back to the bundled model", wanted, first)
            why = (f"{shown_source(wanted)} could not be loaded ({type(exc).__name__}: {no_paths(first)}), so the "
                   "bundled offline model is used")
    if model is None:
        model = _finish(load_pipeline(bundled, bundled_dtype, settings.safety_checker), bundled, why, device,
                        bundled_dtype)
    if settings.refiner:
        try:
            model.refiner = load_refiner(settings.refiner, model)
            model.reason += f"; refiner: {shown_source(settings.refiner)}"
        except Exception as exc:  # the base still runs: say why the refiner did not load
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.warning("could not load the refiner %s (%s)", settings.refiner, first)
            model.reason += f"; the refiner {shown_source(settings.refiner)} could not be loaded ({no_paths(first)})"
    if settings.compile:  # in place, on the one pipeline: every request reads its modules from it
        compile_model(model, settings.compile_backend)
    return model


def load_models(settings: Settings) -> list[LoadedModel]:
    """Every model the settings ask for, each loaded once: the first as `load_model` loads it, then each of
    `more_models`; with no GPU and no --model ("auto"), both bundled models (the U-Net and the MMDiT). A model whose
    name is already loaded (a fallback to the bundled one, a --model given twice) is not loaded again: the first
    model's reason says so."""
    models = [load_model(settings)]
    more = list(settings.more_models)
    if settings.model == "auto" and not more and models[0].offline and BUNDLED_MMDIT.is_dir():
        more = ["bundled-mmdit"]
        models[0].reason += "; the offline diffusion transformer (MMDiT) is loaded beside it, to compare the two"
    for source in more:
        extra = load_model(replace(settings, model=source, more_models=(), refiner=""))
        if extra.name in {m.name for m in models}:
            models[0].reason += f"; --model {shown_source(source)} gave {extra.name} again ({extra.reason}): loaded once"
            continue
        models.append(extra)
    return models
