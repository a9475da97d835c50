"""The frozen VAE's latents of the procedural world's scenes, encoded once and kept on disk, so that training the
MMDiT (playground/tiny/mmdit.py) spends its core-hours on the transformer rather than on the encoder.

    python -m playground.tiny.latents ~/.cache/playground-runs/latents --scenes 16384 --threads 1   # resumable
    python -m playground.tiny.mmdit train --latents ~/.cache/playground-runs/latents ...

The encoder is frozen, so a scene's posterior (diffusers' DiagonalGaussianDistribution: a mean and a standard
deviation per latent) is the same every time the scene is drawn. The cache keeps both, and training samples
mean + std * noise afresh, as `latent_dist.sample` does: the same distribution of training latents as encoding
each batch, at none of the encoder's cost. Scene i is `world.sample(FIRST_SEED + i)` (seeds no other stage
draws); shards of SHARD scenes, each written atomically, so a build stopped anywhere goes on from its last whole
shard, and a larger `--scenes` later adds shards. The cache names the VAE it was made with (a hash of its weights)
and refuses to be read with another.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from playground.tiny import world
from playground.tiny.toolkit import to_tensor

FIRST_SEED = 3_000_000_000  # far from the U-Net's, the MMDiT's own and the evaluation's seeds
SHARD = 1024  # scenes a shard
VAE = Path("assets/offline-model/vae")  # the U-Net model's, which the MMDiT shares


def load_vae(device: str, path: Path = VAE) -> AutoencoderKL:
    """The frozen VAE the cache encodes with (and the MMDiT decodes with), in float32."""
    return AutoencoderKL.from_pretrained(path, dtype=torch.float32).to(device).eval().requires_grad_(False)


def vae_fingerprint(path: Path) -> str:
    """A short hash of the VAE's weights: a cache is only valid for the encoder that made it."""
    digest = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def encode(vae, scenes, device: str = "cpu", batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's posterior for `scenes`, each (N, 4, H/8, W/8), unscaled, float32."""
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(scenes), batch):
            dist = vae.encode(to_tensor(s.image for s in scenes[i:i + batch]).to(device)).latent_dist
            means.append(dist.mean.float().cpu()), stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def build(folder: Path, scenes: int, vae_path: Path = VAE, device: str = "cpu", shard: int = SHARD) -> None:
    """Encode scenes FIRST_SEED ... FIRST_SEED + scenes - 1 into `folder`, shard by shard, skipping shards there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path, fingerprint = folder / "meta.json", vae_fingerprint(vae_path)
    meta = {"vae": str(vae_path), "fingerprint": fingerprint, "first_seed": FIRST_SEED, "shard": shard}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if (old["fingerprint"], old["first_seed"], old["shard"]) != (fingerprint, FIRST_SEED, shard):
            raise ValueError(f"{folder} was made with another VAE or layout ({old}); build a new cache elsewhere")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    vae = load_vae(device, vae_path)
    for k in range(scenes // shard):
        path = folder / f"shard-{k:05d}.pt"
        if path.exists():
            continue
        started = time.monotonic()
        drawn = [world.sample(FIRST_SEED + k * shard + i) for i in range(shard)]
        mean, std = encode(vae, drawn, device)
        tmp = path.with_suffix(".tmp")
        torch.save({"mean": mean, "std": std, "captions": [s.caption for s in drawn],
                    "objects": [s.objects for s in drawn], "backgrounds": [s.background for s in drawn]}, tmp)
        tmp.replace(path)
        print(f"[latents] shard {k} ({shard} scenes) in {time.monotonic() - started:.0f} s", flush=True)


class LatentCache:
    """Every whole shard of a cache in memory; `draw` gives a training batch of it."""

    def __init__(self, folder: Path, vae_path: Path = VAE):
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta["fingerprint"] != vae_fingerprint(vae_path):
            raise ValueError(f"{folder} holds another VAE's latents ({meta['vae']}), not {vae_path}'s")
        shards = [torch.load(p, weights_only=False) for p in sorted(folder.glob("shard-*.pt"))]
        if not shards:
            raise ValueError(f"{folder} has no shards yet: python -m playground.tiny.latents {folder} --scenes N")
        self.mean = torch.cat([s["mean"] for s in shards])  # (N, 4, h, w)
        self.std = torch.cat([s["std"] for s in shards])
        self.scenes = [world.Scene(c, None, objects=o, background=b) for s in shards
                       for c, o, b in zip(s["captions"], s["objects"], s["backgrounds"])]
        self._epoch, self._order = -1, None

    def __len__(self) -> int:
        return len(self.scenes)

    def indices(self, step: int, size: int) -> list[int]:
        """Batch `step`'s scenes: epochs of one shuffled pass each, so every scene comes once an epoch and a
        resumed run goes on where it stopped."""
        out = []
        for k in range(step * size, (step + 1) * size):
            epoch = k // len(self)
            if epoch != self._epoch:
                self._epoch = epoch
                self._order = torch.randperm(len(self), generator=torch.Generator().manual_seed(FIRST_SEED + epoch))
            out.append(int(self._order[k % len(self)]))
        return out

    def draw(self, step: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, list[world.Scene]]:
        """(latents (size, 4, h, w) sampled from the cached posteriors, unscaled; their scenes, without images)."""
        idx = self.indices(step, size)
        noise = torch.randn((size, *self.mean.shape[1:]), generator=gen)
        return self.mean[idx] + self.std[idx] * noise, [self.scenes[i] for i in idx]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the cache (made, or added to)")
    parser.add_argument("--scenes", type=int, default=16 * SHARD, help=f"scenes in all (whole shards of {SHARD})")
    parser.add_argument("--vae", type=Path, default=VAE)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    build(args.folder, args.scenes, args.vae, args.device)


if __name__ == "__main__":
    main()
