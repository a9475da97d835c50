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
    native_size: int = 512  # the size a 0 width or height means
    multiple: int = 8  # width and height are multiples of the VAE's factor
    tokenizer: Any = None  # the first text encoder's: the attention endpoint's word lookup
    # (height, width) in pixels -> the attention layer choices the model has there ("all", "8x8", ...)
    attention_layers: Callable[[int, int], list[str]] = lambda height, width: ["all"]
    flow: bool = False  # a flow-matching model (SD3): its schedulers, and a shift
    family: str = "SD 1.x / 2.x"  # the model's family, as errors name it
    refiner: bool = False  # an SDXL refiner is loaded beside the base
    channels: int = 4  # the denoiser's latent channels (16 for SD3)
    blocks: int = 0  # an MMDiT's blocks (SD3), which skip-layer guidance may skip
    slg_layers: tuple[int, ...] = (7, 8, 9)  # the blocks SLG_LAYERS names

    @classmethod
    def of(cls, s: Settings, native_size: int, multiple: int = 8, tokenizer=None,
           attention_layers: Callable[[int, int], list[str]] | None = None, flow: bool = False,
           family: str = "SD 1.x / 2.x", refiner: bool = False, channels: int = 4, blocks: int = 0) -> "Limits":
        return cls(max_steps=s.max_steps, max_size=s.max_size, max_images=s.max_images,
                   max_grid_cells=s.max_grid_cells, max_cfg=s.max_cfg, max_prompt_chars=s.max_prompt_chars,
                   native_size=native_size, multiple=multiple, tokenizer=tokenizer, flow=flow, family=family,
                   refiner=refiner, channels=channels, blocks=blocks, slg_layers=tuple(s.slg_layers),
                   **({"attention_layers": attention_layers} if attention_layers else {}))

    @property
    def schedulers(self) -> list[str]:
        """The schedulers that fit the model (schedulers.FLOW_NAMES for a flow model, else NAMES)."""
        return schedulers.fitting(self.flow)
