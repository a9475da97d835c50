"""Write a random-weight, Stable-Diffusion-shaped pipeline in the diffusers layout.

The tests build their tiny models with this (the `TEST` preset: 64 px, 8x8 latents), save them with
`save_pretrained` and load them back through the app's loader. The shipped offline model is trained
instead (`playground/tiny/train.py`); `BUNDLED` is the untrained stand-in of its first version.

    python -m playground.tiny.untrained /tmp/random-model
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from playground.tiny.vocab import build_tokenizer

# SD 1.5's published scheduler config, so the offline model samples on the same noise schedule.
SD15_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    clip_sample=False,
)


@dataclass(frozen=True)
class Preset:
    image_size: int  # native resolution in pixels; latents are image_size / 8 (4 VAE blocks)
    vae_channels: tuple[int, int, int, int]
    unet_channels: tuple[int, int]
    text_width: int  # CLIP hidden size == UNet cross-attention dim
    text_layers: int
    groups: int  # GroupNorm groups, must divide every channel count
    prediction_type: str = "epsilon"


BUNDLED = Preset(image_size=128, vae_channels=(32, 32, 64, 64), unet_channels=(64, 128), text_width=64,
                 text_layers=2, groups=32)
TEST = Preset(image_size=64, vae_channels=(8, 8, 8, 8), unet_channels=(8, 16), text_width=16,
              text_layers=1, groups=4)

MARKER = "playground.json"  # describes the offline model for the UI banner


def build(preset: Preset, seed: int = 0) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline with random weights, shaped like SD (f=8, 4 latent channels)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=preset.text_width,
            intermediate_size=preset.text_width * 4,
            num_hidden_layers=preset.text_layers,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=preset.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=preset.groups,
        sample_size=preset.image_size,
        scaling_factor=0.18215,  # SD 1.x's VAE scaling factor
    )
    unet = UNet2DConditionModel(
        sample_size=preset.image_size // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=preset.unet_channels,
        layers_per_block=1,
        cross_attention_dim=preset.text_width,
        attention_head_dim=8,
        norm_num_groups=preset.groups,
    )
    scheduler = PNDMScheduler.from_config({**SD15_SCHEDULER, "prediction_type": preset.prediction_type})
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write(out_dir: str | Path, preset: Preset = BUNDLED, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    """Save a random-weight pipeline (and the banner marker) to `out_dir`."""
    out = Path(out_dir)
    pipe = build(preset, seed).to(dtype=dtype)
    pipe.save_pretrained(out, safe_serialization=True)
    # Fresh ControlNets, as training starts them: the encoder copied from the UNet, zero convolutions
    # zero, so they change nothing yet (Zhang et al. 2023). Found by the app as controlnet-<kind>.
    for kind in ("canny", "openpose"):
        net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
        net.to(dtype=dtype).save_pretrained(out / f"controlnet-{kind}", safe_serialization=True)
    marker = {
        "name": "playground-offline-untrained",
        "trained": False,
        "description": "random weights (untrained): it shows how the pipeline works, not what a trained model draws; "
                       "its ControlNets are freshly initialised (zero convolutions), so they change nothing yet",
        "native_size": preset.image_size,
        "preset": asdict(preset),
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
