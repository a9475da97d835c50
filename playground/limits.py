"""What every request is checked against: the settings' limits and the loaded model's facts, built once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from playground import schedulers
from playground.settings import Settings


@dataclass(frozen=True)
class Limits:
    """What every validator checks against: the settings' limits and the loaded model's facts, built once."""

    max_steps: int = 100
    max_size: int = 1024  # pixels per side
    max_images: int = 4
    max_grid_cells: int = 24
    max_cfg: float = 30.0
    max_prompt_chars: int = 20_000
    model: str = ""  # the name of the model these limits are of: a checked request names it
    models: tuple[str, ...] = ()  # every loaded model's name: what a request's `model` may name
    native_size: int = 512  # the size a 0 width or height means
    multiple: int = 8  # width and height are multiples of the VAE's factor
    tokenizer: Any = None  # the first text encoder's: the attention endpoint's word lookup
    # (height, width) in pixels -> the attention layer choices the model has there ("all", "8x8", ...)
    attention_layers: Callable[[int, int], list[str]] = lambda height, width: ["all"]
    # the family's capabilities (playground.families): which schedulers fit, whether they take a shift, joint
    # attention, the denoiser's latent channels and the blocks skip-layer guidance may skip (none: no SLG)
    family: str = "SD 1.x / 2.x"  # the model's family, as errors name it
    summary: str = "U-Net"  # what kind of model it is, as the Model menu says beside its name
    scheduler_kind: str = "noise"  # schedulers.fitting's kind: "noise" (eps or v) or "flow" (rectified flow)
    shift: bool = False  # its schedulers take a timestep shift
    joint_attention: bool = False  # an MMDiT's joint attention rather than a U-Net's cross-attention
    refiner: bool = False  # an SDXL refiner is loaded beside the base
    channels: int = 4  # the denoiser's latent channels (16 for SD3)
    blocks: int = 0  # the denoiser's blocks that skip-layer guidance may skip (0: a U-Net, no skip-layer guidance)
    skip_layers: tuple[int, ...] = ()  # the blocks it skips: SLG_LAYERS, else the family's own for this model

    @classmethod
    def of(cls, s: Settings, native_size: int, multiple: int = 8, tokenizer=None,
           attention_layers: Callable[[int, int], list[str]] | None = None, refiner: bool = False,
           skip_layers: tuple[int, ...] = (), **capabilities) -> "Limits":
        """The settings' limits with the model's facts (`capabilities`: the family entry's `facts`)."""
        return cls(max_steps=s.max_steps, max_size=s.max_size, max_images=s.max_images,
                   max_grid_cells=s.max_grid_cells, max_cfg=s.max_cfg, max_prompt_chars=s.max_prompt_chars,
                   native_size=native_size, multiple=multiple, tokenizer=tokenizer, refiner=refiner,
                   skip_layers=tuple(s.slg_layers) or tuple(skip_layers), **capabilities,
                   **({"attention_layers": attention_layers} if attention_layers else {}))

    @property
    def schedulers(self) -> list[str]:
        """The schedulers that fit the model, in registry order."""
        return schedulers.fitting(self.scheduler_kind)
