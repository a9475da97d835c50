"""Walks: frames on the way from one picture to another, in one batch of our loop.

Between two prompts, every frame starts from the same seed's noise and is conditioned on a mix of the two
prompts' embeddings, (1 - t) A + t B (the negative prompt's as it is). Between two seeds, every frame has the
same prompt and starts from noise slerped between the two seeds' noise: spherical, because a straight line
through the middle of two Gaussian draws is too quiet, and a quiet start draws a blurred picture. Frames are
written as a strip and as a looping GIF (`playground.outputs.save_walk`).
"""

from __future__ import annotations

import threading

import torch
from diffusers.utils.torch_utils import randn_tensor

from playground import latents
from playground.engine import Engine, OnProgress, job_for, params_for, progress_observer
from playground.schema import WalkRequest, WalkResult
from playground.validation import validate_walk


def mixes(frames: int) -> list[float]:
    """Where each frame stands on the way: 0, 1/(n-1), ..., 1."""
    return [k / (frames - 1) for k in range(frames)]


def walk(engine: Engine, req: WalkRequest, on_progress: OnProgress | None = None,
         cancel: threading.Event | None = None) -> WalkResult:
    """The frames of a walk, one batch on the Engine's shared run step (memory guard, safety checker)."""
    # 1. Check every value; where each frame stands
    req = validate_walk(req, engine.limits)
    gen, mix = req.base, mixes(req.frames)
    job = job_for(gen, [gen.seed] * req.frames)

    # 2. Between prompts: the embeddings mixed. Between seeds: each frame's noise slerped between the two seeds'
    if req.between == "prompts":
        job.prompts_to, job.mix = [req.to_prompt] * req.frames, mix
    else:
        c, f = engine.components, engine.vae_factor
        shape = (1, c.family.latent_channels(c), gen.height // f, gen.width // f)
        a, b = (randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in (gen.seed, req.to_seed))
        job.noise = torch.cat([latents.slerp(a, b, t) for t in mix])

    # 3. One batch; each frame's PNG says where on the way it stands
    what = f"a walk of {req.frames} frames of {gen.width}x{gen.height}"
    ends = (("Walk to", req.to_prompt),) if req.between == "prompts" else (("Walk to seed", str(req.to_seed)),)
    params = [params_for(engine.model.name, gen, extra=(*ends, ("Walk position", f"{t:.3f}"))) for t in mix]
    made, out, seconds = engine.run(job, params, progress_observer(on_progress, f"walking: {what}"), cancel, what)
    return WalkResult(frames=made, request=req, mix=mix, unet_calls=out.unet_calls, seconds=seconds)
