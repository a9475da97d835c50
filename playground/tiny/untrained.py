"""Write a random-weight, Stable-Diffusion-shaped pipeline in the diffusers layout.

The tests build their tiny models with this (`arch.TEST`: 64 px, 8x8 latents), save them with
`save_pretrained` and load them back through the app's loader. The shipped offline model is trained
instead (`python -m playground.tiny.train`); `arch.BUNDLED` is the untrained stand-in of its first version.

    python -m playground.tiny.untrained /tmp/random-model
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import ControlNetModel, PNDMScheduler, StableDiffusionPipeline

from playground.loading import MARKER
from playground.settings import CONTROLNETS
from playground.tiny.arch import BUNDLED, SD15_SCHEDULER, Arch, new_text_encoder, new_unet, new_vae
from playground.tiny.vocab import build_tokenizer

def build(arch: Arch, seed: int = 0) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline with random weights, shaped like SD (f=8, 4 latent channels)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder, vae, unet = new_text_encoder(arch, tokenizer), new_vae(arch), new_unet(arch)
    scheduler = PNDMScheduler.from_config({**SD15_SCHEDULER, "prediction_type": arch.prediction_type})
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def write(out_dir: str | Path, arch: Arch = BUNDLED, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Save a random-weight pipeline (and the banner marker) to `out_dir`."""
    out = Path(out_dir)
    pipe = build(arch, seed).to(dtype=dtype)
    pipe.save_pretrained(out, safe_serialization=True)
    # Fresh ControlNets, as training starts them: the encoder copied from the UNet, zero convolutions
    # zero, so they change nothing yet (Zhang et al. 2023). Found by the app as controlnet-<kind>.
    for kind in CONTROLNETS:
        net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
        net.to(dtype=dtype).save_pretrained(out / f"controlnet-{kind}", safe_serialization=True)
    marker = {
        "name": "playground-offline-untrained",
        "trained": False,
        "description": "random weights (untrained): it shows how the pipeline works, not what a trained model draws; "
                       "its ControlNets are freshly initialised (zero convolutions), so they change nothing yet",
        "native_size": arch.image_size,
        "architecture": asdict(arch),
        "seed": seed,
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where to write (the shipped assets/offline-model is the trained model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = write(args.out_dir, BUNDLED, args.seed)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
