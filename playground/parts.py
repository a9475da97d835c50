"""Model anatomy: what a latent diffusion model is made of, and how that grew from SD 1.5 to SDXL to SD3.

For the three reference families the components are built from their published configs
(`assets/configs/families.json`, each naming the config.json it comes from) on PyTorch's meta device:
the modules exist with their shapes, but no weights are allocated or downloaded, so counting their
parameters is instant and exact. For the loaded model the same figures come from its own modules.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import lru_cache

import torch

from playground.settings import ASSETS, BUNDLED_MODEL

FAMILIES_FILE = ASSETS / "configs" / "families.json"
# the offline U-Net model's noise schedule, as it was trained: its scheduler config's trained_betas
OFFLINE_SCHEDULER = BUNDLED_MODEL / "scheduler" / "scheduler_config.json"
SD15_BETAS = (0.00085, 0.012)  # SD 1.x's (and SDXL's) scaled-linear schedule: beta_start, beta_end
LOADED = "the loaded model's own modules"  # the source of a loaded model's figures

# class name -> (module, config class or None when the model class takes the config's keys directly)
CLASSES = {
    "CLIPTextModel": ("transformers", "CLIPTextConfig"),
    "CLIPTextModelWithProjection": ("transformers", "CLIPTextConfig"),
    "T5EncoderModel": ("transformers", "T5Config"),
    "UNet2DConditionModel": ("diffusers", None),
    "SD3Transformer2DModel": ("diffusers", None),
    "AutoencoderKL": ("diffusers", None),
}


@dataclass(frozen=True)
class Part:
    name: str  # "text encoder: CLIP ViT-L/14", "denoiser: U-Net", "VAE", "ControlNet: canny"
    group: str  # "text encoders", "denoiser", "VAE" or "ControlNets": the bar chart's stacks
    params: int


@dataclass(frozen=True)
class Anatomy:
    name: str
    parts: tuple[Part, ...]
    native_size: int  # pixels per side
    latent: tuple[int, int, int]  # (channels, h, w) at the native size
    text: tuple[str, ...]  # each text encoder: "CLIP ViT-L/14: 768-d, 77 tokens"
    prediction_type: str
    schedule: str
    source: str  # where the figures come from

    @property
    def loaded(self) -> bool:
        """Counted from a loaded model (which can have ControlNets), not from a family's configs."""
        return self.source == LOADED

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    @property
    def ratio(self) -> float:
        """Numbers in the RGB image / numbers in its latent: 48 for 4 channels at 1/8 the size."""
        c, h, w = self.latent
        return 3 * self.native_size**2 / (c * h * w)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(class_name: str, config: dict) -> torch.nn.Module:
    """A diffusers or transformers model from its config keys, with every tensor on the meta device."""
    package, config_class = CLASSES[class_name]
    module = importlib.import_module(package)
    with torch.device("meta"):
        if config_class is None:
            return getattr(module, class_name)(**config)
        return getattr(module, class_name)(getattr(module, config_class)(**config))


def text_width(config: dict) -> int:
    return config.get("hidden_size") or config["d_model"]


@lru_cache(maxsize=1)
def families() -> dict[str, Anatomy]:
    """SD 1.5, SDXL and SD3 Medium, counted from their published configs on the meta device (cached)."""
    data = json.loads(FAMILIES_FILE.read_text())
    out = {}
    for name, fam in data.items():
        if name.startswith("_"):
            continue
        parts, text = [], []
        for part, spec in fam["components"].items():
            params = count(build_on_meta(spec["class"], spec["config"]))
            group = "text encoders" if part.startswith("text encoder") else "denoiser" if part.startswith("denoiser") \
                else "VAE"
            parts.append(Part(part, group, params))
            if group == "text encoders":
                text.append(f"{part.split(': ', 1)[1]}: {text_width(spec['config'])}-d, {spec['tokens']} tokens")
        vae = fam["components"]["VAE"]["config"]
        f = 2 ** (len(vae["block_out_channels"]) - 1)
        size = fam["native_size"]
        out[name] = Anatomy(name, tuple(parts), size, (vae["latent_channels"], size // f, size // f), tuple(text),
                            fam["prediction_type"], fam["schedule"],
                            f"https://huggingface.co/{fam['repo']} (configs, instantiated on the meta device)")
    return out


def of_pipeline(pipe, name: str, native_size: int, controlnets: dict[str, torch.nn.Module] | None = None,
                refiner=None) -> Anatomy:
    """The same figures for a loaded pipeline: its own modules counted, its configs read (an SDXL refiner's own
    U-Net too: its text encoder and VAE are the base's)."""
    parts, text = [], []
    for attr in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        encoder = getattr(pipe, attr, None)
        if encoder is None:
            continue
        tokenizer = getattr(pipe, attr.replace("text_encoder", "tokenizer"), None)
        label = f"{attr.replace('_', ' ')}: {type(encoder).__name__}"
        parts.append(Part(label, "text encoders", count(encoder)))
        limit = getattr(tokenizer, "model_max_length", "?")
        text.append(f"{type(encoder).__name__}: {text_width(encoder.config.to_dict())}-d, {limit} tokens")
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    parts.append(Part(f"denoiser: {type(denoiser).__name__}", "denoiser", count(denoiser)))
    if refiner is not None:
        parts.append(Part(f"refiner: {type(refiner.unet).__name__} (on the base's second text encoder and VAE)",
                          "denoiser", count(refiner.unet)))
    parts.append(Part("VAE", "VAE", count(pipe.vae)))
    for kind, net in (controlnets or {}).items():
        parts.append(Part(f"ControlNet: {kind}", "ControlNets", count(net)))
    f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    sched = pipe.scheduler.config
    flow = "shift" in sched  # a flow-matching scheduler (SD3's): no betas, a shift
    betas = (f"flow matching, shift {sched['shift']}" if flow else "own betas" if sched.get("trained_betas") is not None
             else f"{sched.get('beta_schedule', '?')}, beta {sched.get('beta_start', '?')} to {sched.get('beta_end', '?')}")
    schedule = f"{betas}, {sched.get('num_train_timesteps', '?')} steps" + ("; the last keeps 0% of the image" if flow else "")
    alpha_bar = getattr(pipe.scheduler, "alphas_cumprod", None)
    if alpha_bar is not None:  # how much of the image the noisiest step still shows (SD 1.5: 6.8%)
        schedule += f"; the last keeps {float(alpha_bar[-1]) ** 0.5:.1%} of the image"
    return Anatomy(name, tuple(parts), native_size,
                   (pipe.vae.config.latent_channels, native_size // f, native_size // f), tuple(text),
                   "flow (rectified flow: velocity)" if flow else sched.get("prediction_type", "epsilon"), schedule,
                   LOADED)


# ---------------------------------------------------------------- noise schedules, side by side

@dataclass(frozen=True)
class Schedule:
    """How much of the image a schedule leaves at each point of its way from clean (t = 0) to noise (t = 1)."""

    name: str
    t: tuple[float, ...]  # t / T
    alpha_bar: tuple[float, ...]  # the share of the signal's variance: x_t = sqrt(a) x0 + sqrt(1 - a) eps
    snr_db: tuple[float, ...]  # 10 log10(a / (1 - a))

    @property
    def crossing(self) -> float | None:
        """t / T where the SNR falls through 0 dB (signal and noise equal), interpolated; None if it never does."""
        for k in range(1, len(self.t)):
            a, b = self.snr_db[k - 1], self.snr_db[k]
            if a >= 0 > b:
                return self.t[k - 1] + (self.t[k] - self.t[k - 1]) * a / (a - b)
        return None


def vp_schedule(name: str, betas) -> Schedule:
    """A DDPM-style schedule from its betas: alpha_bar = prod(1 - beta)."""
    alpha_bar = torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), 0).clamp(1e-12, 1 - 1e-12)
    n = len(alpha_bar)
    return Schedule(name, tuple((k + 1) / n for k in range(n)), tuple(alpha_bar.tolist()),
                    tuple((10 * torch.log10(alpha_bar / (1 - alpha_bar))).tolist()))


def flow_schedule(name: str, shift: float, n: int = 1000) -> Schedule:
    """Rectified flow, x_t = (1 - sigma) x0 + sigma eps with sigma = shift t / (1 + (shift - 1) t), put on the
    same axes: its SNR is ((1 - sigma) / sigma)^2, and alpha_bar = SNR / (1 + SNR) is the share of the signal in
    the same latent scaled to unit variance."""
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    sigma = (shift * t / (1 + (shift - 1) * t)).clamp(1e-6, 1 - 1e-6)
    snr = ((1 - sigma) / sigma) ** 2
    return Schedule(name, tuple(t.tolist()), tuple((snr / (1 + snr)).tolist()), tuple((10 * torch.log10(snr)).tolist()))


def cosine_betas(n: int = 1000, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021's cosine schedule (betas clipped at 0.999, as they do)."""
    f = torch.cos((torch.arange(n + 1, dtype=torch.float64) / n + s) / (1 + s) * torch.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def schedules_of(model) -> list[Schedule]:
    """schedules() for a loaded model (loading.LoadedModel): its scheduler's config, its name, its schedulers' kind."""
    return schedules(dict(model.pipe.scheduler.config), model.name, model.family.schedulers == "flow")


def schedules(loaded_config: dict, loaded_name: str, flow: bool) -> list[Schedule]:
    """The loaded model's schedule beside DDPM's linear, the cosine one, SD's scaled-linear, the offline model's
    rescaled one (its last step keeps 2% of the image) and SD3's flow with shift 3."""
    from diffusers import DDPMScheduler

    n = int(loaded_config.get("num_train_timesteps", 1000))
    if flow:
        loaded = flow_schedule(f"loaded: {loaded_name}", float(loaded_config.get("shift", 1.0)), n)
    else:
        loaded = vp_schedule(f"loaded: {loaded_name}", DDPMScheduler.from_config(dict(loaded_config)).betas)
    start, end = SD15_BETAS
    offline = json.loads(OFFLINE_SCHEDULER.read_text())["trained_betas"]
    references = [vp_schedule("linear (DDPM)", torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)),
                  vp_schedule("cosine (improved DDPM)", cosine_betas()),
                  vp_schedule("scaled linear (SD 1.x-XL)",
                              torch.linspace(start ** 0.5, end ** 0.5, 1000, dtype=torch.float64) ** 2),
                  vp_schedule("offline model (rescaled)", torch.tensor(offline, dtype=torch.float64)),
                  flow_schedule("SD3 flow, shift 3", 3.0)]
    # a reference the loaded model follows is drawn once, as the loaded curve named after it (two curves on
    # top of each other read as one, with a legend that lists two)
    same = [r for r in references if len(r.alpha_bar) == len(loaded.alpha_bar)
            and max(abs(a - b) for a, b in zip(r.alpha_bar, loaded.alpha_bar)) < 1e-6]
    if same:
        loaded = Schedule(f"{loaded.name} = {same[0].name}", loaded.t, loaded.alpha_bar, loaded.snr_db)
    return [loaded, *(r for r in references if r not in same)]
