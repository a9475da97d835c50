"""Train the offline model on the procedural world, one component at a time, top to bottom.

    python -m playground.tiny.train vae       --minutes 10   # 1. the autoencoder (f=8, 4 channels)
    python -m playground.tiny.train vae --decoder-only ...  #    later: sharpen the decoder, latents unchanged
    python -m playground.tiny.train unet      --minutes 50   # 2. the UNet and the text encoder, jointly
    torchrun --nproc_per_node 2 -m playground.tiny.train unet --threads 1 ...   # the same, data-parallel
    python -m playground.tiny.train canny     --minutes 12   # 3. a ControlNet on Canny edges
    python -m playground.tiny.train openpose  --minutes 12   # 4. a ControlNet on OpenPose maps
    python -m playground.tiny.train export assets/offline-model   # 5. fp16 diffusers folder for the app
    python -m playground.tiny.train import assets/offline-model   # later: go on training the shipped model

This module is the command line; the stages are in `stages.py`, the export and import in `export.py`,
and what they share with the MMDiT's training (`mmdit.py`) in `toolkit.py`. Every stage is resumable: it
keeps `<run>/<stage>.pt` (weights, optimiser, step, EMA) and carries on from it, so a long run can be
done in chunks (`--minutes` or `--steps`), on CPU or CUDA. Data is drawn afresh from `world.sample(seed)`
with seeds that follow the step, so a resumed run sees new scenes, and two runs with the same arguments
see the same ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from playground.settings import CONTROLNETS
from playground.tiny import export, stages, world
from playground.tiny.toolkit import CFG_DROPOUT

RUN = Path("runs/offline-model")


def mix_shares(text: str) -> dict[str, float]:
    """`--mix 0.35,0.5,0.15` -> the shares of one-shape, two-shape and person scenes."""
    try:
        shares = [float(x) for x in text.split(",")]
    except ValueError:
        shares = []
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise argparse.ArgumentTypeError(f"--mix takes three shares, such as 0.35,0.5,0.15; got {text!r}")
    return dict(zip(("shape", "two", "person"), shares))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["vae", "unet", *CONTROLNETS, "export", "import"])
    parser.add_argument("out", nargs="?", default="assets/offline-model",
                        help="export: the folder to write; import: the folder to read")
    parser.add_argument("--ckpt-dir", dest="run", type=Path, default=RUN, help="checkpoint folder (resumed from)")
    parser.add_argument("--minutes", type=float, help="stop after this long (a chunk)")
    parser.add_argument("--steps", type=int, help="stop after this many steps (a chunk)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--noisy-share", type=float, default=0.0,
                        help="unet, ControlNets: the share of timesteps drawn from the noisiest 15%% (default 0: uniform)")
    parser.add_argument("--ground", type=float, default=0.0,
                        help="unet: weight of the grounding loss (each object's words attend to it; 0 = off)")
    parser.add_argument("--agree", type=float, default=0.0,
                        help="unet: weight of the agreement loss (the unconditional prediction pulled onto the "
                        "conditional one on the least noisy 40%% of steps, where CFG's push only does harm; 0 = off)")
    parser.add_argument("--mix", type=mix_shares, default=None, metavar="SHAPE,TWO,PERSON",
                        help="vae, unet: the shares of one-shape, two-shape and person scenes (default "
                        f"{','.join(f'{world.MIX[k]:g}' for k in ('shape', 'two', 'person'))})")
    parser.add_argument("--caption-dropout", type=float, default=CFG_DROPOUT,
                        help="unet: the share of empty captions, the unconditional half of classifier-free guidance "
                        f"(default {CFG_DROPOUT:g})")
    parser.add_argument("--decoder-only", action="store_true", help="vae: train the decoder alone (encoder frozen)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.stage in ("export", "import"):
        return (export.export if args.stage == "export" else export.import_model)(args)
    args.batch = args.batch or {"vae": 16, "unet": 32}.get(args.stage, 32)
    {"vae": stages.train_vae, "unet": stages.train_unet}.get(args.stage, stages.train_controlnet)(args)


if __name__ == "__main__":
    main()
