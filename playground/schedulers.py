"""Scheduler registry: display name (A1111's names) -> diffusers class + options.

Every request makes its own scheduler with `make(name, config)`; nothing shares scheduler state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SchedulerSpec:
    cls: type[SchedulerMixin]
    options: dict[str, Any] = field(default_factory=dict)
    # True for k-diffusion style schedulers whose latents are x0 + sigma * eps (Euler, Heun, LMS);
    # False for those that keep sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps (DDIM, PNDM, DPM, UniPC)
    sigma_space: bool = False
    about: str = ""


REGISTRY: dict[str, SchedulerSpec] = {
    "DDIM": SchedulerSpec(DDIMScheduler, about="deterministic, first order (Song et al. 2020)"),
    "PNDM": SchedulerSpec(PNDMScheduler, {"skip_prk_steps": True}, about="pseudo linear multistep; SD 1.5's default"),
    "Euler": SchedulerSpec(EulerDiscreteScheduler, sigma_space=True, about="first order ODE (Karras et al. 2022)"),
    "Euler a": SchedulerSpec(EulerAncestralDiscreteScheduler, sigma_space=True,
                             about="Euler with fresh noise each step: never converges, varied"),
    "Heun": SchedulerSpec(HeunDiscreteScheduler, sigma_space=True, about="second order: two model evaluations per step"),
    "LMS": SchedulerSpec(LMSDiscreteScheduler, sigma_space=True, about="linear multistep (k-diffusion)"),
    "DPM++ 2M": SchedulerSpec(DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2},
                              about="second order multistep, one evaluation per step"),
    "DPM++ 2M Karras": SchedulerSpec(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        about="DPM++ 2M on Karras' noise levels (more small steps near the end)",
    ),
    "DPM++ 2M SDE Karras": SchedulerSpec(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        about="stochastic DPM++ 2M on Karras sigmas",
    ),
    "UniPC": SchedulerSpec(UniPCMultistepScheduler, about="unified predictor-corrector (Zhao et al. 2023)"),
}

NAMES: list[str] = list(REGISTRY)


class UnknownScheduler(ValueError):
    pass


def spec(name: str) -> SchedulerSpec:
    """The registry entry for `name`, or an error that lists the known names."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownScheduler(f"unknown scheduler {name!r}; choose one of: {', '.join(NAMES)}") from None


def make(name: str, config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler `name` built from a model's scheduler config (never shared)."""
    s = spec(name)
    return s.cls.from_config(dict(config), **s.options)
