"""The U-Net model's checkpoints as the fp16 diffusers folder the app loads (`export`), and such a folder back
into checkpoints to train further (`import_model`): `python -m playground.tiny.train export|import DIR`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from diffusers import ControlNetModel

from playground.loading import MARKER
from playground.settings import CONTROLNETS
from playground.tiny import stages, world
from playground.tiny.arch import scheduler_config
from playground.tiny.toolkit import Checkpoint

# the inspector's first prompt: two objects, so that clicking a colour word shows it lighting its own object
ATTENTION_EXAMPLE = "a red square on the left and a blue circle on the right on a black background"
# the CFG the app's forms start at for this model (its marker): measured on held-out prompts (docs/training.md)
CFG_SCALE = 3.0


def export(args) -> None:
    """Write the trained model as an fp16 diffusers folder the app loads with `from_pretrained`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out = Path(args.out)
    vae = stages.load_vae(args.run, "cpu")
    unet, text, tokenizer, scale = stages.load_unet(args.run, "cpu")
    vae.register_to_config(scaling_factor=scale)
    scheduler = DDIMScheduler.from_config(scheduler_config(stages.ARCH))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=torch.float16).save_pretrained(out, safe_serialization=True)
    steps = {}
    for kind in CONTROLNETS:
        state = Checkpoint(args.run, kind).load()
        if state is None:
            continue
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
        net.load_state_dict(state["model"])
        net.to(dtype=torch.float16).save_pretrained(out / f"controlnet-{kind}", safe_serialization=True)
        steps[kind] = state["step"]
    trained = {name: Checkpoint(args.run, name).load()["step"] for name in ("vae", "unet")} | steps
    marker = {
        "name": "playground-offline",
        "trained": True,
        "description": "a small latent diffusion model trained by the project on its procedural world of coloured "
                       "shapes and stick figures (see playground/tiny): it knows 8 colours, 6 shapes, 3 sizes, "
                       "9 places, 3 backgrounds and 6 poses",
        "native_size": stages.ARCH.image_size,
        "steps": trained,
        "architecture": dataclasses.asdict(stages.ARCH),
        "vocabulary": world.vocabulary(),  # the UI names any other word as one the model does not know
        "examples": [
            "a large red square at the top left on a black background",
            "a large yellow triangle on the right on a gray background",
            "a large orange cross at the bottom left on a black background",
            "a green person with arms raised on a white background",
            ATTENTION_EXAMPLE,
        ],
        "attention_example": ATTENTION_EXAMPLE,
        "cfg_scale": CFG_SCALE,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB), steps {trained}")


def import_model(args) -> None:
    """Turn an exported model folder back into checkpoints (no optimiser state), to train it further:
    the shipped weights are the starting point of a later run (`import assets/offline-model`)."""
    from diffusers import StableDiffusionPipeline

    src = Path(args.out)
    pipe = StableDiffusionPipeline.from_pretrained(src, dtype=torch.float32)
    steps = json.loads((src / MARKER).read_text()).get("steps", {})
    vae, unet, text = pipe.vae.state_dict(), pipe.unet.state_dict(), pipe.text_encoder.state_dict()
    Checkpoint(args.run, "vae").save({"model": vae, "step": steps.get("vae", 0)})
    Checkpoint(args.run, "unet").save({"unet": unet, "text": text, "ema_unet": unet, "ema_text": text,
                                       "step": steps.get("unet", 0), "scale": pipe.vae.config.scaling_factor})
    for kind in CONTROLNETS:
        if (src / f"controlnet-{kind}").is_dir():
            net = ControlNetModel.from_pretrained(src / f"controlnet-{kind}", dtype=torch.float32)
            Checkpoint(args.run, kind).save({"model": net.state_dict(), "step": steps.get(kind, 0)})
    print(f"imported {src} into {args.run}: steps {steps}")
