"""Scheduler registry: display name (A1111's names) -> diffusers class + options.

Every request makes its own scheduler with `make(name, config)`; nothing shares scheduler state.
Adding a scheduler is adding an entry: the UI's dropdowns and the validators read NAMES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SchedulerSpec:
    cls: str  # the diffusers class, by name: this module imports no torch until a scheduler is made
    options: dict[str, Any] = field(default_factory=dict)
    # True for k-diffusion style schedulers whose latents are x0 + sigma * eps (Euler, Heun, LMS);
    # False for those that keep sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps (DDIM, PNDM, DPM, UniPC)
    sigma_space: bool = False
    # True for ancestral / SDE samplers that add fresh noise at every step: two runs with different step counts
    # never meet, so a grid's distance to a long reference run measures that noise, not the sampler's error
    stochastic: bool = False


REGISTRY: dict[str, SchedulerSpec] = {
    "DDIM": SchedulerSpec("DDIMScheduler"),
    "PNDM": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}),
    "Euler": SchedulerSpec("EulerDiscreteScheduler", sigma_space=True),
    "Euler a": SchedulerSpec("EulerAncestralDiscreteScheduler", sigma_space=True, stochastic=True),
    "Heun": SchedulerSpec("HeunDiscreteScheduler", sigma_space=True),
    "LMS": SchedulerSpec("LMSDiscreteScheduler", sigma_space=True),
    "DPM++ 2M": SchedulerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DPM++ 2M SDE Karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, stochastic=True,
    ),
    "UniPC": SchedulerSpec("UniPCMultistepScheduler"),
}

NAMES: list[str] = list(REGISTRY)


def make(name: str, config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler `name` (a validated REGISTRY key) from a model's scheduler config (never shared)."""
    import diffusers

    s = REGISTRY[name]
    return getattr(diffusers, s.cls).from_config(dict(config), **s.options)


def evaluations(name: str, config: dict[str, Any], steps: int) -> int:
    """Model evaluations `name` makes in `steps` steps (Heun: two per step but the last)."""
    probe = make(name, config)
    probe.set_timesteps(steps)
    return len(probe.timesteps)
