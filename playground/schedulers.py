"""Scheduler registry: display name (A1111's names) -> diffusers class + options, and which models it fits.

Every request makes its own scheduler with `make(name, config)`; nothing shares scheduler state.
Adding a scheduler is adding an entry: the UI's dropdowns and the validators read `fitting(kind)` (a family's kind).

Two kinds of model need two kinds of sampler. SD 1.x / 2.x and SDXL were trained on DDPM's noise schedule
and predict the noise (or v): NAMES. SD3 was trained with rectified flow, x_t = (1 - sigma) x0 + sigma eps,
and predicts the velocity eps - x0: FLOW_NAMES, diffusers' flow-matching Euler and Heun plus the multistep
solvers run on flow sigmas. A flow scheduler's `shift` (SD3: 3.0) spends more of the steps at high noise;
a request may set its own.
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
    # True for the samplers of flow-matching models (SD3); every other entry runs the noise-prediction ones
    flow: bool = False


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
    # flow matching (SD3): the model's own FlowMatchEuler, Heun, and the multistep solvers on flow sigmas
    "Flow Euler": SchedulerSpec("FlowMatchEulerDiscreteScheduler", flow=True),
    "Flow Heun": SchedulerSpec("FlowMatchHeunDiscreteScheduler", flow=True),
    "DPM++ 2M (flow)": SchedulerSpec("DPMSolverMultistepScheduler", {
        "algorithm_type": "dpmsolver++", "solver_order": 2, "use_flow_sigmas": True,
        "prediction_type": "flow_prediction"}, flow=True),
    "UniPC (flow)": SchedulerSpec("UniPCMultistepScheduler", {
        "use_flow_sigmas": True, "prediction_type": "flow_prediction"}, flow=True),
}


def fitting(kind: str) -> list[str]:
    """The schedulers of one kind, in registry order: "flow" (a flow-matching model's) or "noise" (every other)."""
    if kind not in ("noise", "flow"):
        raise ValueError(f"scheduler kind must be 'noise' or 'flow', got {kind!r}")
    return [name for name, spec in REGISTRY.items() if spec.flow == (kind == "flow")]


NAMES: list[str] = fitting("noise")  # SD 1.x / 2.x, SDXL
FLOW_NAMES: list[str] = fitting("flow")  # SD3


def make(name: str, config: dict[str, Any], shift: float | None = None) -> SchedulerMixin:
    """A fresh scheduler `name` (a validated REGISTRY key) from a model's scheduler config (never shared); for a
    flow scheduler, `shift` replaces the model's own (the multistep solvers call it flow_shift)."""
    import diffusers

    s = REGISTRY[name]
    options = dict(s.options)
    if s.flow:
        shift = float(shift if shift else config.get("shift", 1.0))
        options["flow_shift" if options.get("use_flow_sigmas") else "shift"] = shift
    return getattr(diffusers, s.cls).from_config(dict(config), **options)


def evaluations(name: str, config: dict[str, Any], steps: int) -> int:
    """Model evaluations `name` makes in `steps` steps (Heun: two per step but the last)."""
    probe = make(name, config)
    if probe.config.get("use_dynamic_shifting"):  # its sigmas wait for mu; their count does not depend on it
        probe.set_timesteps(steps, mu=0.0)
        return len(probe.timesteps)
    probe.set_timesteps(steps)
    return len(probe.timesteps)
