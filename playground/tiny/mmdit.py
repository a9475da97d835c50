"""The second offline model: SD3's layout, small. A diffusion transformer (MMDiT) and two CLIP text encoders,
trained by the project on the same world and captions as the U-Net model, with rectified flow.

    python -m playground.tiny.mmdit train --minutes 30 --threads 1     # resumable: runs/offline-mmdit/mmdit.pt
    python -m playground.tiny.latents runs/latents --threads 1         # the VAE's latents of 16,384 scenes, once
    python -m playground.tiny.mmdit train --latents runs/latents ...   # then train on them: no encoder per step
    python -m playground.tiny.mmdit export assets/offline-mmdit        # an fp16 StableDiffusion3Pipeline folder
    python -m playground.tiny.mmdit import assets/offline-mmdit        # later: train the exported model further
    python -m playground.tiny.mmdit import assets/offline-mmdit --ckpt-dir runs/p1 --patch 1   # ... at patch 1
    python -m playground.tiny.mmdit import assets/offline-mmdit --ckpt-dir runs/t1 --position-unit 1  # DiT's grid
    python app.py --model assets/offline-mmdit                         # every tab, through the app's SD3 path

Rectified flow (Liu et al. 2022, as SD3 trains, Esser et al. 2024): x_t = (1 - t) x0 + t noise, a straight line
from the image to the noise, and the transformer learns its velocity v = noise - x0, with t drawn logit-normal
(most weight mid-way, where the layout and the colours are decided). Sampling walks the line back with the
flow schedulers (Flow Euler by default) at the shift the export names.

The parts, as StableDiffusion3Pipeline wants them: `SD3Transformer2DModel` (patch 2 over the 16x16 latents of a
128 px image: 64 image tokens, joint attention with the text tokens in every block; `--patch 1` gives each latent
pixel its own token, 256 of them, converted from patch-2 weights by `repatch`); CLIP "L" and CLIP "G", both
`CLIPTextModelWithProjection` over the offline vocabulary, their penultimate states side by side as the text
tokens and their projections side by side as the pooled vector; no T5 (SD3 runs without it, with zeros in its
place: this model is trained with one zero token there, and its playground.json tells the app so); the U-Net
model's VAE, frozen, with shift_factor 0 (the same latents, so the two models differ only in the denoiser and
the objective).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_2d_sincos_pos_embed_from_grid
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from playground.attention.capture import joint_attention_layers, joint_attention_probs
from playground.loading import MARKER
from playground.tiny import grounding, world
from playground.tiny.latents import VAE, LatentCache, load_vae
from playground.tiny.toolkit import CFG_DROPOUT, Budget, Checkpoint, batch, ema_update, log, resume, to_tensor
from playground.tiny.vocab import build_tokenizer

RUN = Path("runs/offline-mmdit")


@dataclass(frozen=True)
class MMDiTArch:
    image_size: int = 128  # native pixels per side; latents are image_size / 8
    patch_size: int = 2  # latent pixels per side one image token covers: 2 -> 64 tokens at 128 px, 1 -> 256
    layers: int = 6  # joint transformer blocks
    heads: int = 4
    head_dim: int = 32  # the transformer's width is heads x head_dim
    text_width: int = 64  # each CLIP's hidden size: side by side they are the joint attention's input width
    text_layers: int = 3  # the penultimate state is taken, as SD3 does
    text_heads: int = 4
    t5_tokens: int = 1  # zero tokens in T5's place (no T5): trained with this many, so sampled with it
    shift: float = 3.0  # the flow schedulers' shift the export names: chosen by benchmarks/offline_models.py
    position_unit: float = 1.0  # sin-cos grid units between neighbouring image tokens (DiT's); see new_transformer


OFFLINE_MMDIT = MMDiTArch()
TEST_MMDIT = MMDiTArch(image_size=64, layers=2, heads=2, head_dim=8, text_width=16, text_layers=2, text_heads=2)
DIFFUSERS_UNIT = 0.25  # diffusers' own grid here: base / max size = (latent / patch) / (4 latent / patch); the shipped
# weights (step 6,500) and every run before 2026-12-07 were trained on it


def new_transformer(arch: MMDiTArch) -> SD3Transformer2DModel:
    """SD3's transformer at `arch`'s sizes, its sin-cos positions `arch.position_unit` apart a token.

    diffusers lays the grid at base / max size = 1/4 unit a token here (SD3 itself: 1/3, over 64 tokens a side). Over
    our 8 tokens a side that spans 1.75 radians of the fastest frequency: neighbouring tokens' positions are 0.999
    alike (cosine), opposite corners 0.91; half the blocks of the model trained on it spread their attention nearly
    evenly over the image, and it placed objects but drew no outlines (docs/training.md). At one unit a token (DiT's
    grid) neighbours are 0.98 alike and corners 0.73. The grid is a persistent buffer: it travels with every
    checkpoint and export, so a run keeps the grid it started with."""
    latent = arch.image_size // 8
    model = SD3Transformer2DModel(
        sample_size=latent, patch_size=arch.patch_size, in_channels=4, out_channels=4, num_layers=arch.layers,
        attention_head_dim=arch.head_dim, num_attention_heads=arch.heads, joint_attention_dim=2 * arch.text_width,
        caption_projection_dim=arch.heads * arch.head_dim, pooled_projection_dim=2 * arch.text_width,
        pos_embed_max_size=4 * latent // arch.patch_size)  # room for sizes up to 4x the native one
    with torch.no_grad():
        model.pos_embed.pos_embed.copy_(position_grid(model, arch.position_unit))
    return model


def position_grid(model: SD3Transformer2DModel, unit: float) -> torch.Tensor:
    """(1, max_size², D): the sin-cos positions of `model`'s whole grid, neighbouring tokens `unit` apart."""
    size = model.pos_embed.pos_embed_max_size
    # diffusers' grid: index i at i * base_size / size; base_size = size * unit puts neighbours `unit` apart
    return get_2d_sincos_pos_embed(model.inner_dim, size, base_size=size * unit, output_type="pt")[None]


def repatch(src: SD3Transformer2DModel, arch: MMDiTArch) -> SD3Transformer2DModel:
    """A transformer of `arch`'s smaller patch size started from `src`: every weight whose shape matches is copied
    (the blocks, the text and time embeddings, the output norm); the three parts that depend on the patch are
    rebuilt from `src`'s so the new model starts where the old one was:

    - the patch embedding: each sub-patch's kernel is the sum of the old kernel over the cells it covers, the
      pseudo-inverse resize of FlexiViT (Beyer et al. 2023) for a picture upsampled by repetition, so a latent
      that is flat over an old patch embeds as it did;
    - the positions: the old sin-cos grid, read at the new tokens' centres (diffusers' own grid for the new
      size would renumber them, and the places the blocks learnt would be lost);
    - the output projection: each new token predicts the mean of what the old token predicted for its cells."""
    old, new_p = src.config.patch_size, arch.patch_size
    if old % new_p:
        raise ValueError(f"patch size {new_p} must divide the source's patch size {old}")
    model, k = new_transformer(arch), old // new_p
    mine = model.state_dict()
    model.load_state_dict({n: w for n, w in src.state_dict().items() if n in mine and mine[n].shape == w.shape},
                          strict=False)
    with torch.no_grad():
        w = src.pos_embed.proj.weight  # (D, C, old, old)
        d, c = w.shape[:2]
        model.pos_embed.proj.weight.copy_(w.reshape(d, c, new_p, k, new_p, k).sum(dim=(3, 5)))
        model.pos_embed.proj.bias.copy_(src.pos_embed.proj.bias)
        # the old grid's position of index i is i * unit (new_transformer); the conversion keeps the unit
        step = arch.position_unit
        size = model.pos_embed.pos_embed_max_size
        centre = torch.arange(size, dtype=torch.float32) * new_p + (new_p - 1) / 2  # in latent pixels
        coords = (centre - (old - 1) / 2) / old * step
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy")).reshape(2, 1, size, size)
        model.pos_embed.pos_embed.copy_(get_2d_sincos_pos_embed_from_grid(d, grid)[None])
        # proj_out's rows are (row in patch, column in patch, channel): the old rows averaged over each new cell
        out = src.proj_out.weight.reshape(new_p, k, new_p, k, -1, d).mean(dim=(1, 3))
        model.proj_out.weight.copy_(out.reshape(-1, d))
        bias = src.proj_out.bias.reshape(new_p, k, new_p, k, -1).mean(dim=(1, 3))
        model.proj_out.bias.copy_(bias.reshape(-1))
    return model


def new_text_encoder(arch: MMDiTArch, tokenizer) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_width, intermediate_size=arch.text_width * 4,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads, projection_dim=arch.text_width,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def encode(tokenizer, encoders, captions: list[str], t5_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(text tokens, pooled vector) for `captions`, as StableDiffusion3Pipeline.encode_prompt makes them without
    T5 (and so as the app's SD3 entry does): each CLIP's penultimate states, side by side, then `t5_tokens` zero
    tokens; both projections side by side."""
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    outs = [encoder(ids, output_hidden_states=True) for encoder in encoders]
    states = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
    zeros = states.new_zeros((len(captions), t5_tokens, states.shape[-1]))
    return torch.cat([states, zeros], dim=1), torch.cat([o[0] for o in outs], dim=-1)


def flow_times(size: int, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Training times t in (0, 1): logit-normal (0, 1), SD3's sampling of the flow's times, then moved toward the
    noise by `shift` as the flow schedulers move their sampling times (t' = s t / (1 + (s - 1) t); SD3 shifts both
    for its larger latents, Esser et al. 2024, section 5.3.2): more of the training where the layout is decided."""
    t = torch.sigmoid(torch.randn(size, generator=gen))
    return shift * t / (1 + (shift - 1) * t)


class JointCapture:
    """While active, every joint-attention layer of `transformer` also hands its image queries' attention over the
    CLIP tokens (with gradients) to `self.probs`, (B, patches, 77) each, for the grounding loss (grounding.py, as
    the U-Net's `--ground`); its output is its own processor's, unchanged. With no `transformer`, nothing."""

    def __init__(self, transformer, tokens: int):
        self.layers = joint_attention_layers(transformer) if transformer is not None else []
        self.tokens, self.probs = tokens, []

    @contextlib.contextmanager
    def active(self):
        saved = [layer.processor for _, layer in self.layers]
        for _, layer in self.layers:
            layer.set_processor(_Recorded(layer.processor, self.probs, self.tokens))
        self.probs.clear()
        try:
            yield self.probs
        finally:
            for (_, layer), processor in zip(self.layers, saved):
                layer.set_processor(processor)


class _Recorded:
    def __init__(self, inner, out: list, tokens: int):
        self.inner, self.out, self.tokens = inner, out, tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        # the CLIP tokens only: the zero T5 token names nothing in the picture
        self.out.append(joint_attention_probs(attn, hidden_states, encoder_hidden_states)[..., :self.tokens])
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def train(args) -> None:
    """The transformer and both text encoders on the flow-matching loss, the VAE frozen."""
    ckpt, tokenizer = Checkpoint(args.run, "mmdit"), build_tokenizer()
    state = ckpt.load()
    arch = run_arch(state, args)
    vae = load_vae(args.device, args.vae)
    scale = vae.config.scaling_factor
    model = new_transformer(arch).to(args.device)
    texts = [new_text_encoder(arch, tokenizer).to(args.device) for _ in range(2)]
    params = list(model.parameters()) + [p for t in texts for p in t.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr or 3e-4, weight_decay=0.01)
    step = resume(state, opt, model=model, text_l=texts[0], text_g=texts[1])
    warm_from = state.get("warm_from", 0) if state and "opt" in state else step
    ema = {"model": copy.deepcopy(model), "text_l": copy.deepcopy(texts[0]), "text_g": copy.deepcopy(texts[1])}
    for key, module in ema.items():
        module.requires_grad_(False)
        if state:
            module.load_state_dict(state[f"ema_{key}"])
    print(f"[mmdit] transformer {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M (patch {arch.patch_size}), "
          f"text encoders {sum(p.numel() for t in texts for p in t.parameters()) / 1e6:.2f} M parameters; "
          f"from step {step}", flush=True)

    def save():
        ckpt.save({"model": model.state_dict(), "text_l": texts[0].state_dict(), "text_g": texts[1].state_dict(),
                   "opt": opt.state_dict(), "step": step, "warm_from": warm_from, "arch": dataclasses.asdict(arch),
                   **{f"ema_{k}": m.state_dict() for k, m in ema.items()}})

    budget, started, done = Budget(args.minutes, args.steps), time.monotonic(), 0
    gen = torch.Generator().manual_seed(40_000_000 + step)
    cache = LatentCache(args.latents, args.vae) if args.latents else None
    if cache:
        print(f"[mmdit] {len(cache)} scenes' latents from {args.latents} (the VAE is not run)", flush=True)
    capture = JointCapture(model if args.ground else None, tokenizer.model_max_length)
    while budget.more(done):
        if cache:  # the frozen encoder's posteriors, cached: a fresh sample of each, as encoding again would give
            x0, scenes = cache.draw(step, args.batch, gen)
            x0 = x0.to(args.device) * scale
        else:
            scenes = batch("unet", 50_000_000 + step, args.batch)  # the U-Net model's world, scenes of their own
            with torch.no_grad():
                x0 = vae.encode(to_tensor(s.image for s in scenes).to(args.device)).latent_dist.sample(gen) * scale
        captions = ["" if torch.rand((), generator=gen) < CFG_DROPOUT else s.caption for s in scenes]
        noise = torch.randn(x0.shape, generator=gen).to(args.device)
        t = flow_times(len(scenes), gen, args.time_shift).to(args.device)
        x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        context, pooled = encode(tokenizer, texts, captions, arch.t5_tokens, args.device)
        with capture.active() as probs:  # each joint layer's attention over the text, when grounding
            v = model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=context,
                      pooled_projections=pooled).sample
        loss = ((v.float() - (noise - x0)) ** 2).mean()
        if args.ground:  # colour and shape words attend to their objects' patches (playground/tiny/grounding.py)
            ground = grounding.loss(probs, *grounding.targets(tokenizer, scenes, captions))
            loss = loss + args.ground * ground
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:  # short warm-up, then constant
            g["lr"] = (args.lr or 3e-4) * min(1.0, (step + 1 - warm_from) / 100)
        opt.step()
        decay = min(0.998, (1 + step - warm_from) / (10 + step - warm_from))
        for key, module in zip(ema, (model, *texts)):
            ema_update(ema[key], module, decay)
        step, done = step + 1, done + 1
        if step % 25 == 0:
            log("mmdit", step, loss.item(), started, done * args.batch)
            if args.ground:
                print(f"[mmdit] grounding loss {ground.item():.4f} (weight {args.ground})", flush=True)
        if step % 100 == 0:
            save()
    save()
    print(f"[mmdit] saved step {step} to {ckpt.path}")


def export(args) -> None:
    """The EMA weights as an fp16 StableDiffusion3Pipeline folder the app loads with `from_pretrained`."""
    from diffusers import StableDiffusion3Pipeline

    out, tokenizer = Path(args.out), build_tokenizer()
    state = Checkpoint(args.run, "mmdit").load()
    arch = run_arch(state, args)
    model, texts = new_transformer(arch), [new_text_encoder(arch, tokenizer) for _ in range(2)]
    model.load_state_dict(state["ema_model"])
    texts[0].load_state_dict(state["ema_text_l"]), texts[1].load_state_dict(state["ema_text_g"])
    vae = load_vae("cpu", args.vae)
    vae.register_to_config(shift_factor=0.0)
    pipe = StableDiffusion3Pipeline(
        transformer=model, vae=vae, text_encoder=texts[0], tokenizer=tokenizer, text_encoder_2=texts[1],
        tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=arch.shift))
    pipe.to(dtype=torch.float16).save_pretrained(out, safe_serialization=True)
    marker = {
        "name": "playground-offline-mmdit",
        "trained": True,
        "description": "a small diffusion transformer (SD3's layout: an MMDiT, two CLIP text encoders, no T5) trained "
                       "by the project with rectified flow on the same world as the U-Net model (see "
                       "playground/tiny/mmdit.py)",
        "native_size": arch.image_size,
        "learning": "its shapes",  # the Model menu says so until its shapes are drawn (docs/training.md)
        "steps": {"mmdit": state["step"]},
        "t5_tokens": arch.t5_tokens,
        "architecture": dataclasses.asdict(arch),
        "vocabulary": world.vocabulary(),
        "examples": ["a large red square at the top left on a black background",
                     "a large yellow triangle on the right on a gray background",
                     "a green person with arms raised on a white background"],
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB), step {state['step']}")


def import_model(args) -> None:
    """An exported folder back into a checkpoint (fresh optimiser), to train it further; with `--patch` smaller
    than the folder's, its transformer converted to that patch size first (`repatch`)."""
    from diffusers import StableDiffusion3Pipeline

    src = Path(args.out)
    pipe = StableDiffusion3Pipeline.from_pretrained(src, dtype=torch.float32, text_encoder_3=None, tokenizer_3=None)
    marker = json.loads((src / MARKER).read_text())
    step = marker.get("steps", {}).get("mmdit", 0)
    named = marker.get("architecture", {})  # the sizes; the patch size is read from the transformer itself
    named = {"position_unit": DIFFUSERS_UNIT, **named}  # a folder that names no unit was exported on diffusers' grid
    saved = {f.name: named[f.name] for f in dataclasses.fields(MMDiTArch) if f.name in named and f.name != "patch_size"}
    arch = dataclasses.replace(args.arch, **saved, patch_size=pipe.transformer.config.patch_size)
    transformer = pipe.transformer
    if args.patch and args.patch != arch.patch_size:
        arch = dataclasses.replace(arch, patch_size=args.patch)
        transformer = repatch(transformer, arch)
    if args.position_unit and args.position_unit != arch.position_unit:  # the blocks relearn what a place looks like
        arch = dataclasses.replace(arch, position_unit=args.position_unit)
        with torch.no_grad():
            transformer.pos_embed.pos_embed.copy_(position_grid(transformer, arch.position_unit))
    parts = {"model": transformer.state_dict(), "text_l": pipe.text_encoder.state_dict(),
             "text_g": pipe.text_encoder_2.state_dict()}
    Checkpoint(args.run, "mmdit").save({**parts, **{f"ema_{k}": v for k, v in parts.items()}, "step": step,
                                        "arch": dataclasses.asdict(arch)})
    print(f"imported {src} into {args.run}: step {step}, patch {arch.patch_size}, positions {arch.position_unit} apart")


def run_arch(state: dict | None, args) -> MMDiTArch:
    """The checkpoint's architecture when it names one (a run keeps its patch size), else the command line's."""
    arch = MMDiTArch(**{"position_unit": DIFFUSERS_UNIT, **state["arch"]}) if state and "arch" in state else args.arch
    if args.patch and args.patch != arch.patch_size:
        raise SystemExit(f"--patch {args.patch}: the checkpoint in {args.run} has patch size {arch.patch_size}; "
                         "convert an exported model with `import --patch` into a new --ckpt-dir")
    return arch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["train", "export", "import"])
    parser.add_argument("out", nargs="?", default="assets/offline-mmdit",
                        help="export: the folder to write; import: the folder to read")
    parser.add_argument("--ckpt-dir", dest="run", type=Path, default=RUN, help="checkpoint folder (resumed from)")
    parser.add_argument("--vae", type=Path, default=VAE, help="the frozen VAE (the U-Net model's)")
    parser.add_argument("--minutes", type=float, help="stop after this long (a chunk)")
    parser.add_argument("--steps", type=int, help="stop after this many steps (a chunk)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--time-shift", type=float, default=1.0,
                        help="train: shift the logit-normal times toward the noise (3: as the sampler's shift)")
    parser.add_argument("--latents", type=Path, default=None,
                        help="train: the VAE's latents cached by `python -m playground.tiny.latents` (default: "
                        "encode every batch)")
    parser.add_argument("--ground", type=float, default=0.0,
                        help="train: weight of the grounding loss on the joint attention (0 = off)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--test-size", action="store_true", help="the tests' tiny sizes (64 px, 2 blocks)")
    parser.add_argument("--patch", type=int, choices=[1, 2], default=None,
                        help="import: convert the transformer to this patch size (1: a token per latent pixel); "
                        "train: a new run's patch size (default: the checkpoint's, else 2)")
    parser.add_argument("--position-unit", type=float, default=None,
                        help="import: lay the positions this many grid units a token apart (1: DiT's, the default for "
                        "new runs; folders exported before 2026-12-07 have diffusers' 0.25)")
    args = parser.parse_args(argv)
    args.arch = TEST_MMDIT if args.test_size else OFFLINE_MMDIT
    if args.patch:
        args.arch = dataclasses.replace(args.arch, patch_size=args.patch)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    {"train": train, "export": export, "import": import_model}[args.stage](args)


if __name__ == "__main__":
    main()
