"""All configuration in one place: environment variables, overridden by command-line flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_MODEL = ASSETS / "offline-model"  # the offline U-Net model ("bundled")
BUNDLED_MMDIT = ASSETS / "offline-mmdit"  # the offline diffusion transformer ("bundled-mmdit")
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# the ControlNet kinds, each with the SD 1.5 ControlNet it loads when neither a setting nor the model names one
ANNOTATORS = "lllyasviel/Annotators"  # controlnet_aux's OpenposeDetector weights (body, hand, face) on the hub
CONTROLNETS = {"canny": "lllyasviel/control_v11p_sd15_canny", "openpose": "lllyasviel/control_v11p_sd15_openpose"}
# the same kinds for SDXL-shaped models (a ControlNet must match its base model's family)
CONTROLNETS_XL = {"canny": "diffusers/controlnet-canny-sdxl-1.0", "openpose": "thibaud/controlnet-openpose-sdxl-1.0"}
# SD3 Medium's, by InstantX (SD3ControlNetModel; the control image goes through the VAE)
CONTROLNETS_SD3 = {"canny": "InstantX/SD3-Controlnet-Canny", "openpose": "InstantX/SD3-Controlnet-Pose"}


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int)


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float)


def _env_number(name: str, default, cast):
    """`cast` of the environment variable `name` (unset or empty: `default`); a bad value stops the app, named."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}") from None


def _env_ints(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A comma-separated list of whole numbers from the environment ("7,8,9"); a bad one stops the app, named."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a comma-separated list of whole numbers") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    # which weights: "auto" (SD 1.5 on CUDA, else both bundled models), "bundled" (the offline U-Net model),
    # "bundled-mmdit" (the offline MMDiT), a hub id or a directory
    model: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_MODEL", "auto"))
    # more models loaded beside it (--model given more than once), each chosen per request by its name
    more_models: tuple[str, ...] = ()
    # the hub id "auto" tries when CUDA is present
    gpu_default_model: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_GPU_MODEL", SD15))
    # ControlNets, loaded on first use: "" = a controlnet-<kind> folder inside a local model, else the SD 1.5 one
    # (kind -> hub id or folder, from PLAYGROUND_CONTROLNET_<KIND>; a kind left out uses that default)
    controlnets: dict[str, str] = field(default_factory=lambda: {
        kind: os.environ[f"PLAYGROUND_CONTROLNET_{kind.upper()}"] for kind in CONTROLNETS
        if os.environ.get(f"PLAYGROUND_CONTROLNET_{kind.upper()}")})
    # "auto" (cuda if available, else cpu), "cuda", "cpu", "mps"
    # OpenposeDetector's weights: a folder with body_pose_model.pth, hand_pose_model.pth and facenet.pth, or a hub
    # repo in that layout; loaded on first use. Without them, pose detection uses MediaPipe (offline).
    annotators: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_ANNOTATORS", ANNOTATORS))
    device: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_DEVICE", "auto"))
    # "auto" (float16 on cuda, float32 elsewhere), "float16", "bfloat16", "float32"
    dtype: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_DTYPE", "auto"))
    # which files of a hub model and its ControlNets to load: "" (the full-precision ones), or "fp16" (the
    # half-precision copies SD 1.5 and its ControlNets publish: half the download; with a float16 dtype only)
    variant: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_VARIANT", ""))
    # torch.compile the UNet and VAE decoder, warming the native size up at start (slow to start, faster after)
    compile: bool = field(default_factory=lambda: _env_bool("PLAYGROUND_COMPILE", False))
    compile_backend: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_COMPILE_BACKEND", "inductor"))
    # SDXL's refiner (a StableDiffusionXLImg2ImgPipeline folder or hub id; "" = none): loaded beside an SDXL base,
    # sharing its second text encoder and VAE; a request's refiner_start hands the last steps to it
    refiner: str = field(default_factory=lambda: os.environ.get("PLAYGROUND_REFINER", ""))
    # SD3: load its T5-XXL text encoder (about 9 GB in fp16; off: zeros in its place, as diffusers does without
    # it), and how many T5 tokens a prompt gets (diffusers' max_sequence_length: 256, at most 512)
    t5: bool = field(default_factory=lambda: not _env_bool("PLAYGROUND_NO_T5", False))
    t5_tokens: int = field(default_factory=lambda: _env_int("T5_TOKENS", 256))
    # SD3.5's skip-layer guidance: the MMDiT blocks it skips; empty: the model's own (the blocks 30-40% of the way
    # down: SD3.5 Medium's recommended 7, 8, 9 of 24)
    slg_layers: tuple[int, ...] = field(default_factory=lambda: _env_ints("SLG_LAYERS", ()))
    # keep the model's safety checker when it ships one
    safety_checker: bool = field(default_factory=lambda: not _env_bool("PLAYGROUND_NO_SAFETY_CHECKER", False))
    # request limits (a public Space wants these small)
    max_steps: int = field(default_factory=lambda: _env_int("MAX_STEPS", 100))
    max_size: int = field(default_factory=lambda: _env_int("MAX_SIZE", 1024))  # pixels, per side
    max_images: int = field(default_factory=lambda: _env_int("MAX_IMAGES", 4))
    max_grid_cells: int = field(default_factory=lambda: _env_int("MAX_GRID_CELLS", 24))
    max_cfg: float = field(default_factory=lambda: _env_float("MAX_CFG", 30.0))  # the CFG scale sliders' top
    # a grid with a steps axis compares every cell with a run of this many steps of its scheduler
    grid_reference_steps: int = field(default_factory=lambda: _env_int("GRID_REFERENCE_STEPS", 200))
    # far past CLIP's 77 tokens; stops megabyte prompts before tokenizing
    max_prompt_chars: int = field(default_factory=lambda: _env_int("MAX_PROMPT_CHARS", 20_000))
    # larger uploads are refused from their header, before decoding (PIL's own bomb guard is ~179 MP)
    max_upload_pixels: int = field(default_factory=lambda: _env_int("MAX_UPLOAD_PIXELS", 100_000_000))
    # serving
    host: str = field(default_factory=lambda: os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env_int("GRADIO_SERVER_PORT", 7860))
    gpu_concurrency: int = field(default_factory=lambda: _env_int("GPU_CONCURRENCY", 1))  # jobs on the model at once
    # visitors' generate jobs that share one denoiser call, as images (0: off; off on ZeroGPU, where each call is
    # its own GPU lease); the GPU group then lets that many jobs in at once, so that they can meet (batching.py)
    batch_jobs: int = field(default_factory=lambda: _env_int("BATCH_JOBS", 0))
    # ZeroGPU: each action asks for a GPU for LEASE_FLOOR seconds plus this many per model evaluation at 512x512
    # (SD 1.5 on ZeroGPU's share of an H200: about 0.03 s; the rest is margin), and never more than the ceiling
    gpu_step_seconds: float = field(default_factory=lambda: _env_float("GPU_STEP_SECONDS", 0.1))
    max_gpu_seconds: int = field(default_factory=lambda: _env_int("MAX_GPU_SECONDS", 120))
    queue_size: int = field(default_factory=lambda: _env_int("QUEUE_SIZE", 64))  # waiting jobs before "busy"
    # model jobs one browser session (or API client) may have waiting or running at once (0 = no limit)
    session_jobs: int = field(default_factory=lambda: _env_int("SESSION_JOBS", 3))
    # browser sessions whose inspector recordings are kept in memory (the oldest session's go first), and for how
    # long after their last recording (a closed tab's go an hour after it closed, or sooner)
    session_states: int = field(default_factory=lambda: _env_int("SESSION_STATES", 100))
    state_minutes: float = field(default_factory=lambda: _env_float("STATE_MINUTES", 60.0))
    max_upload_mb: int = field(default_factory=lambda: _env_int("MAX_UPLOAD_MB", 25))  # per uploaded file
    share: bool = False
    # where generated PNGs are written before the browser fetches them
    output_dir: Path = field(default_factory=lambda: Path(os.environ.get("PLAYGROUND_OUTPUT_DIR", "outputs")))
    # what the output folder may hold, in MB: past it the oldest files are deleted first (0 = no limit)
    max_output_mb: float = field(default_factory=lambda: _env_float("MAX_OUTPUT_MB", 500.0))
    # gradio's cache of uploads and results: files older than this are deleted (checked every half hour; 0: kept
    # until the server stops)
    cache_hours: float = field(default_factory=lambda: _env_float("CACHE_HOURS", 6.0))


def parse_args(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, then from flags (flags win)."""
    s = Settings()
    p = argparse.ArgumentParser(description="Diffusion Playground")
    p.add_argument("--model", action="append", default=None,
                   help="auto | bundled | bundled-mmdit | HUB_ID | DIR (env PLAYGROUND_MODEL); give it again to load "
                        "more models beside the first, each chosen per request")
    p.add_argument("--device", default=s.device, help="auto | cuda | cpu | mps (env PLAYGROUND_DEVICE)")
    p.add_argument("--dtype", default=s.dtype, help="auto | float16 | bfloat16 | float32 (env PLAYGROUND_DTYPE)")
    p.add_argument("--variant", default=s.variant, choices=["", "fp16"],
                   help="fp16: a hub model's half-precision files (env PLAYGROUND_VARIANT)")
    p.add_argument("--compile", action="store_true", default=s.compile,
                   help="torch.compile the UNet and VAE decoder (env PLAYGROUND_COMPILE=1)")
    p.add_argument("--no-safety-checker", action="store_true", default=not s.safety_checker,
                   help="drop the model's safety checker (env PLAYGROUND_NO_SAFETY_CHECKER=1)")
    p.add_argument("--refiner", default=s.refiner,
                   help="SDXL: a refiner to load beside the base, HUB_ID or DIR (env PLAYGROUND_REFINER)")
    p.add_argument("--no-t5", action="store_true", default=not s.t5,
                   help="SD3: leave its T5 text encoder out (env PLAYGROUND_NO_T5=1)")
    p.add_argument("--t5-tokens", type=int, default=s.t5_tokens, help="SD3: T5 tokens per prompt, 1-512 (env T5_TOKENS)")
    p.add_argument("--host", default=s.host, help="address to listen on (env GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=s.port, help="port (env GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true", help="make a public gradio.live link")
    p.add_argument("--output-dir", type=Path, default=s.output_dir, help="where PNGs are written")
    a = p.parse_args(argv)
    if a.model:
        s.model, s.more_models = a.model[0], tuple(a.model[1:])
    s.device, s.dtype, s.variant = a.device, a.dtype, a.variant
    s.safety_checker = not a.no_safety_checker
    s.t5 = not a.no_t5
    s.refiner = a.refiner
    if not 1 <= a.t5_tokens <= 512:
        raise SystemExit(f"--t5-tokens {a.t5_tokens}: T5 takes 1 to 512 tokens (SD3's default is 256)")
    s.t5_tokens = a.t5_tokens
    s.compile = a.compile
    s.host, s.port, s.share, s.output_dir = a.host, a.port, a.share, a.output_dir
    return s
