"""Model families: one entry each, in its own file, asked for everything that differs between them.

An entry says what its family has in named capabilities (what its denoiser predicts, which schedulers fit it,
whether they take a shift, cross or joint attention, the blocks skip-layer guidance skips, its text encoders and
their token limits, its default ControlNets) and implements the steps the loop asks of it: how its prompt is
encoded, which added conditioning the denoiser takes, how the denoiser and its ControlNet are called, where its
attention is recorded and at which resolutions, its latent channels, scale and shift. `sampling.denoise`, the
Engine and the UI ask the entry (through `Limits` and the model facts), never its class or name. Adding a family
is a file here with its entry (extending `StableDiffusion`, the base), one line in FAMILIES, its ControlNet table
in settings, and its test: see docs/architecture.md.
"""

from __future__ import annotations

from playground.families.sd import StableDiffusion
from playground.families.sd3 import StableDiffusion3
from playground.families.sdxl import StableDiffusionXL, StableDiffusionXLRefiner

FAMILIES: dict[str, StableDiffusion] = {f.pipeline: f for f in (StableDiffusion(), StableDiffusionXL(),
                                                                 StableDiffusion3())}


# the second stages, each run only beside a base of its family (not a model the app loads alone)
REFINERS: dict[str, StableDiffusion] = {f.pipeline: f for f in (StableDiffusionXLRefiner(),)}


def of_pipeline(pipe) -> StableDiffusion:
    """The family entry of a loaded pipeline (or refiner), by its class; ValueError naming it for one with no entry."""
    name = type(pipe).__name__
    if name not in FAMILIES and name not in REFINERS:
        raise ValueError(f"{name} is not a family this app runs; it runs {', '.join(FAMILIES)}")
    return FAMILIES.get(name) or REFINERS[name]
