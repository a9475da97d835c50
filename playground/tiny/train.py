"""Train the offline model on the procedural world, one component at a time, top to bottom.

    python -m playground.tiny.train vae       --minutes 10   # 1. the autoencoder (f=8, 4 channels)
    python -m playground.tiny.train vae --decoder-only ...  #    later: sharpen the decoder, latents unchanged
    python -m playground.tiny.train unet      --minutes 50   # 2. the UNet and the text encoder, jointly
    torchrun --nproc_per_node 2 -m playground.tiny.train unet --threads 1 ...   # the same, data-parallel
    python -m playground.tiny.train canny     --minutes 12   # 3. a ControlNet on Canny edges
    python -m playground.tiny.train openpose  --minutes 12   # 4. a ControlNet on OpenPose maps
    python -m playground.tiny.train export assets/offline-model   # 5. fp16 diffusers folder for the app
    python -m playground.tiny.train import assets/offline-model   # later: go on training the shipped model

Every stage is resumable: it keeps `<run>/<stage>.pt` (weights, optimiser, step, EMA) and carries on
from it, so a long run can be done in chunks (`--minutes` or `--steps`), on CPU or CUDA. Data is
drawn afresh from `world.sample(seed)` with seeds that follow the step, so a resumed run sees new
scenes, and two runs with the same arguments see the same ones.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from playground.preprocessors import canny
from playground.loading import MARKER
from playground.settings import CONTROLNETS
from playground.tiny import arch, grounding, world
from playground.tiny.arch import OFFLINE, scheduler_config
from playground.tiny.vocab import build_tokenizer

RUN = Path("runs/offline-model")
CFG_DROPOUT = 0.1  # the empty caption this often, so one model is both conditional and unconditional
SEED_STRIDE = {"vae": 0, "unet": 10_000_000, "canny": 20_000_000, "openpose": 30_000_000}

ARCH = OFFLINE  # the sizes of every component (playground/tiny/arch.py)
# the inspector's first prompt: two objects, so that clicking a colour word shows it lighting its own object
ATTENTION_EXAMPLE = "a red square on the left and a blue circle on the right on a black background"
# the CFG the app's forms start at for this model (its marker): measured on held-out prompts (docs/training.md)
CFG_SCALE = 3.0


# ---------------------------------------------------------------- models

def new_vae() -> AutoencoderKL:
    vae = arch.new_vae(ARCH)
    # start the posterior narrow (std ~0.05): at the default std 1 the sampled latent is all noise and
    # the decoder learns nothing but the mean colour for hundreds of steps
    with torch.no_grad():
        vae.quant_conv.bias[4:] = -6.0
    return vae


def new_text_encoder(tokenizer) -> CLIPTextModel:
    return arch.new_text_encoder(ARCH, tokenizer)


def new_unet() -> UNet2DConditionModel:
    return arch.new_unet(ARCH)


def to_tensor(images) -> torch.Tensor:
    """PIL images -> [B, 3, H, W] in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def batch(stage: str, step: int, size: int, kind: str | None = None, mix: dict[str, float] | None = None):
    first = SEED_STRIDE[stage] + step * size
    return [world.sample(first + i, kind, mix) for i in range(size)]


def control_map(stage: str, scene: world.Scene):
    return canny(scene.image) if stage == "canny" else world.pose_map(scene.keypoints)


# ---------------------------------------------------------------- checkpoints

class Checkpoint:
    """`<run>/<stage>.pt`: the state to resume from, written atomically."""

    def __init__(self, run: Path, stage: str):
        self.path = Path(run) / f"{stage}.pt"

    def load(self):
        return torch.load(self.path, map_location="cpu", weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


def resume(state: dict | None, opt: torch.optim.Optimizer, **modules: torch.nn.Module) -> int:
    """Load a checkpoint's weights (by key) and optimiser state, when there are any; the step to go on from."""
    if not state:
        return 0
    for key, module in modules.items():
        module.load_state_dict(state[key])
    if "opt" in state:  # absent after `import` or for a decoder-only run: a fresh optimiser
        opt.load_state_dict(state["opt"])
    return state["step"]


class Budget:
    def __init__(self, minutes: float | None, steps: int | None):
        self.deadline = time.monotonic() + minutes * 60 if minutes else math.inf
        self.steps = steps

    def more(self, done_here: int) -> bool:
        return time.monotonic() < self.deadline and (self.steps is None or done_here < self.steps)


class Ranks:
    """Data parallelism over processes (`torchrun --nproc_per_node N`): the same model in each, every
    process on its own scenes, gradients averaged. On CPU, N single-thread processes beat one N-thread
    process (2 cores: 36 vs 27 samples/s for the UNet). Without torchrun: one process, no-ops."""

    def __init__(self):
        import os

        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.size > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params) -> None:
        if self.size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, more: bool) -> bool:
        """Go on only while the first process's budget says so (every process stops at the same step)."""
        if self.size == 1:
            return more
        flag = torch.tensor([1.0 if more else 0.0])
        self.dist.broadcast(flag, src=0)
        return bool(flag.item())


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def log(stage: str, step: int, loss: float, started: float, seen: int) -> None:
    rate = seen / max(time.monotonic() - started, 1e-9)
    print(f"[{stage}] step {step:6d}  loss {loss:.4f}  {rate:6.1f} samples/s", flush=True)


# ---------------------------------------------------------------- 1. VAE

def edge_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: keeps the shapes' edges sharp."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def object_crops(x: torch.Tensor, gen: torch.Generator, crop: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A 64 px crop of each image around one of its object pixels, and per-pixel loss weights.

    The VAE is convolutional, so crops teach it as well as whole images at a quarter of the cost; a
    crop around an object, and objects weighted 10x, keep the small shapes from losing to the background.
    """
    crops, weights = [], []
    for img in x:
        border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1).median(dim=1).values
        fg = (img - border[:, None, None]).abs().amax(0) > 0.2
        ys, xs = torch.nonzero(fg, as_tuple=True)
        k = int(torch.randint(0, max(len(ys), 1), (1,), generator=gen))
        cy, cx = (int(ys[k]), int(xs[k])) if len(ys) else (world.SIZE // 2, world.SIZE // 2)
        jitter = torch.randint(-16, 17, (2,), generator=gen).tolist()
        i = min(max(cy + jitter[0] - crop // 2, 0), world.SIZE - crop) // 8 * 8
        j = min(max(cx + jitter[1] - crop // 2, 0), world.SIZE - crop) // 8 * 8
        crops.append(img[:, i:i + crop, j:j + crop])
        weights.append(1 + 9 * fg[i:i + crop, j:j + crop].float())
    return torch.stack(crops), torch.stack(weights)[:, None]


def train_vae(args) -> None:
    """Weighted L1 + edge loss + a light KL, on 64 px crops around objects."""
    ckpt = Checkpoint(args.run, "vae")
    vae = new_vae().to(args.device)
    state = ckpt.load()
    if args.decoder_only:
        # once the UNet has learnt the encoder's latents, only the decoder may go on learning
        vae.encoder.requires_grad_(False), vae.quant_conv.requires_grad_(False)
        if state:
            state.pop("opt", None)  # a new optimiser over the decoder's parameters
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=args.lr or 1e-3, weight_decay=0.0)
    step = resume(state, opt, model=vae)
    budget, started, done = Budget(args.minutes, args.steps), time.monotonic(), 0
    gen = torch.Generator().manual_seed(step)
    while budget.more(done):
        x = to_tensor(s.image for s in batch("vae", step, args.batch, mix=args.mix))
        x, weight = object_crops(x, gen)
        x, weight = x.to(args.device), weight.to(args.device)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        loss = ((rec - x).abs() * weight).mean() / weight.mean() + edge_loss(rec, x) \
            + 1e-4 * posterior.kl().mean() / posterior.mean[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, done = step + 1, done + 1
        if step % 25 == 0:
            log("vae", step, loss.item(), started, done * args.batch)
        if step % 200 == 0:
            ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
    ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
    print(f"[vae] saved step {step} to {ckpt.path}")


def load_vae(run: Path, device: str) -> AutoencoderKL:
    vae = new_vae()
    vae.load_state_dict(Checkpoint(run, "vae").load()["model"])
    return vae.to(device).eval().requires_grad_(False)


def latent_scale(vae: AutoencoderKL, device: str, n: int = 256) -> float:
    """1 / std of the latents over world scenes: SD's `scaling_factor`, measured for this VAE."""
    with torch.no_grad():
        x = to_tensor(s.image for s in batch("vae", 10**6, n)).to(device)
        z = vae.encode(x).latent_dist.mean
    return float(1 / z.std())


# ---------------------------------------------------------------- 2. UNet + text encoder

def encode_captions(tokenizer, text_encoder, captions, device) -> torch.Tensor:
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    return text_encoder(ids).last_hidden_state


NOISY = 0.15  # the noisiest 15% of timesteps (sqrt(alpha_bar) < 0.11 on the offline schedule): where the layout is decided


def timesteps(n: int, size: int, noisy_share: float, gen: torch.Generator) -> torch.Tensor:
    """Training timesteps: uniform, but `noisy_share` of them drawn from the noisiest NOISY of the
    schedule, where the prompt alone must say where things go (a model that already draws well learns
    its layout from the text faster when those steps are not 15% of its batches but half)."""
    t = torch.randint(0, n, (size,), generator=gen)
    noisy = torch.randint(int(n * (1 - NOISY)), n, (size,), generator=gen)
    return torch.where(torch.rand(size, generator=gen) < noisy_share, noisy, t)


def regression(noise_sched, latents, noise, t, snr) -> tuple[torch.Tensor, torch.Tensor]:
    """What the UNet learns to output at timesteps `t`, and each sample's loss weight.

    Epsilon: Min-SNR-5 weighting (Hang et al. 2023), so the easy low-noise steps stop dominating.
    v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0 (Salimans & Ho 2022), the prediction a
    near-zero-terminal-SNR schedule needs (at pure noise, epsilon is the input itself and says nothing):
    the same truncation on the low-noise steps (weight min(snr + 1, 6) / (snr + 1)), full weight on the
    noisy ones, where the layout is decided.
    """
    if noise_sched.config.prediction_type == "v_prediction":
        return noise_sched.get_velocity(latents, noise, t), (snr + 1).clamp(max=6.0) / (snr + 1)
    return noise, snr.clamp(max=5.0) / snr


AGREE_BELOW = 0.4  # the least noisy 40% of the schedule: where CFG's push only breaks what is already drawn


def agreement(unet, noisy, t, empty, pred, captions, n: int) -> torch.Tensor:
    """The unconditional prediction pulled onto the conditional one on the low-noise steps (`--agree`).

    There the picture is decided and x_t alone says what the clean image is, so the two halves of
    classifier-free guidance should agree; on the offline model they differed by about half the
    conditional error (|v_c - v_u| 0.09 against 0.15-0.18 at t 100-400), and CFG 7.5 multiplies that
    difference by 6.5 at every step: the late steps' damage the guidance interval (CFG stop) avoids. The
    conditional side is held fixed (detached), so the prompt's own prediction is trained only by the
    denoising loss."""
    late = (t < int(n * AGREE_BELOW)) & torch.tensor([bool(c) for c in captions], device=t.device)
    if not late.any():
        return pred.new_zeros(())
    uncond = unet(noisy[late], t[late], empty.expand(int(late.sum()), -1, -1)).sample
    return ((uncond.float() - pred[late].detach().float()) ** 2).mean()


def train_unet(args) -> None:
    """The architecture's prediction on its noise schedule (the offline model: v on the rescaled one, see
    arch.rescaled_betas); the text encoder learns with the UNet."""
    ckpt = Checkpoint(args.run, "unet")
    tokenizer = build_tokenizer()
    vae = load_vae(args.run, args.device)
    unet, text = new_unet().to(args.device), new_text_encoder(tokenizer).to(args.device)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr or 5e-4, weight_decay=0.01)
    noise_sched = DDPMScheduler.from_config(scheduler_config(ARCH))
    alphas = noise_sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    state = ckpt.load()
    step = resume(state, opt, unet=unet, text=text)
    # warm-up (learning rate and EMA) counts from where the optimiser started: the first step, or an
    # `import`ed model's step (fresh moments), so fine-tuning shipped weights starts gently too
    warm_from = state.get("warm_from", 0) if state and "opt" in state else step
    if state:
        scale = state["scale"]
    else:  # measured once, on the first chunk; later chunks keep it (the encoder is frozen by then)
        scale = latent_scale(vae, args.device)
    ema = {"unet": copy.deepcopy(unet).requires_grad_(False), "text": copy.deepcopy(text).requires_grad_(False)}
    if state:
        ema["unet"].load_state_dict(state["ema_unet"]), ema["text"].load_state_dict(state["ema_text"])
    ranks = Ranks()
    if ranks.main:
        print(f"[unet] latent scale {scale:.4f}; unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
              f"text {sum(p.numel() for p in text.parameters()) / 1e6:.2f} M parameters; from step {step}", flush=True)

    def save():
        ckpt.save({"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(), "step": step,
                   "scale": scale, "ema_unet": ema["unet"].state_dict(), "ema_text": ema["text"].state_dict(),
                   "warm_from": warm_from})

    budget, started, done = Budget(args.minutes, args.steps), time.monotonic(), 0
    gen = torch.Generator().manual_seed(SEED_STRIDE["unet"] + step * ranks.size + ranks.rank)
    capture = grounding.Capture(unet if args.ground else None)
    while ranks.agree(budget.more(done)):
        scenes = batch("unet", step * ranks.size + ranks.rank, args.batch, mix=args.mix)
        with torch.no_grad():
            latents = vae.encode(to_tensor(s.image for s in scenes).to(args.device)).latent_dist.sample(gen) * scale
        captions = ["" if torch.rand((), generator=gen) < args.caption_dropout else s.caption for s in scenes]
        noise = torch.randn(latents.shape, generator=gen).to(args.device)
        t = timesteps(noise_sched.config.num_train_timesteps, len(scenes), args.noisy_share, gen).to(args.device)
        noisy = noise_sched.add_noise(latents, noise, t)
        with capture.active() as probs:  # every cross-attention map, when grounding (else nothing recorded)
            pred = unet(noisy, t, encode_captions(tokenizer, text, captions, args.device)).sample
        target, weight = regression(noise_sched, latents, noise, t, snr[t].to(args.device))
        loss = (weight * ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))).mean()
        if args.ground:  # colour and shape words attend to their objects (playground/tiny/grounding.py)
            ground = grounding.loss(probs, *grounding.targets(tokenizer, scenes, captions))
            loss = loss + args.ground * ground
        if args.agree:  # the two halves of CFG agree where the picture is decided
            agree = agreement(unet, noisy, t, encode_captions(tokenizer, text, [""], args.device), pred, captions,
                              noise_sched.config.num_train_timesteps)
            loss = loss + args.agree * agree
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:  # short warm-up, then constant
            g["lr"] = (args.lr or 5e-4) * min(1.0, (step + 1 - warm_from) / 100)
        opt.step()
        decay = min(0.998, (1 + step - warm_from) / (10 + step - warm_from))  # EMA with warm-up
        ema_update(ema["unet"], unet, decay)
        ema_update(ema["text"], text, decay)
        step, done = step + 1, done + 1
        if step % 25 == 0 and ranks.main:
            log("unet", step, loss.item(), started, done * args.batch * ranks.size)
            if args.ground:
                print(f"[unet] grounding loss {ground.item():.4f} (weight {args.ground})", flush=True)
            if args.agree:
                print(f"[unet] agreement loss {agree.item():.4f} (weight {args.agree})", flush=True)
        if step % 200 == 0 and ranks.main:
            save()
    if ranks.main:
        save()
        print(f"[unet] saved step {step} to {ckpt.path}")


def load_unet(run: Path, device: str):
    """The EMA UNet and text encoder, frozen, and the latent scale."""
    tokenizer = build_tokenizer()
    state = Checkpoint(run, "unet").load()
    unet, text = new_unet(), new_text_encoder(tokenizer)
    unet.load_state_dict(state["ema_unet"]), text.load_state_dict(state["ema_text"])
    return (unet.to(device).eval().requires_grad_(False), text.to(device).eval().requires_grad_(False),
            tokenizer, state["scale"])


# ---------------------------------------------------------------- 3, 4. ControlNets

def train_controlnet(args) -> None:
    """A ControlNet (encoder copied from the UNet, zero convolutions) on the frozen model's loss."""
    stage = args.stage
    ckpt = Checkpoint(args.run, stage)
    vae = load_vae(args.run, args.device)
    unet, text, tokenizer, scale = load_unet(args.run, args.device)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 128)).to(args.device).train()
    net.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr or 4e-4, weight_decay=0.0)
    noise_sched = DDPMScheduler.from_config(scheduler_config(ARCH))
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    step = resume(ckpt.load(), opt, model=net)
    kind = "person" if stage == "openpose" else None
    budget, started, done = Budget(args.minutes, args.steps), time.monotonic(), 0
    gen = torch.Generator().manual_seed(SEED_STRIDE[stage] + step)
    while budget.more(done):
        scenes = batch(stage, step, args.batch, kind)
        with torch.no_grad():
            latents = vae.encode(to_tensor(s.image for s in scenes).to(args.device)).latent_dist.sample(gen) * scale
            # half the captions empty: the map alone must carry the layout (ControlNet's prompt dropout)
            captions = ["" if torch.rand((), generator=gen) < 0.5 else s.caption for s in scenes]
            hidden = encode_captions(tokenizer, text, captions, args.device)
        cond = (to_tensor(control_map(stage, s) for s in scenes).to(args.device) + 1) / 2  # [0, 1] like diffusers
        noise = torch.randn(latents.shape, generator=gen).to(args.device)
        t = timesteps(noise_sched.config.num_train_timesteps, len(scenes), args.noisy_share, gen).to(args.device)
        noisy = noise_sched.add_noise(latents, noise, t)
        down, mid = net(noisy, t, hidden, controlnet_cond=cond, return_dict=False)
        pred = unet(noisy, t, hidden, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        target, weight = regression(noise_sched, latents, noise, t, snr[t].to(args.device))
        loss = (weight * ((pred.float() - target) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step, done = step + 1, done + 1
        if step % 25 == 0:
            log(stage, step, loss.item(), started, done * args.batch)
        if step % 100 == 0:
            ckpt.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step})
    ckpt.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step})
    print(f"[{stage}] saved step {step} to {ckpt.path}")


# ---------------------------------------------------------------- 5. export

def export(args) -> None:
    """Write the trained model as an fp16 diffusers folder the app loads with `from_pretrained`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out = Path(args.out)
    vae = load_vae(args.run, "cpu")
    unet, text, tokenizer, scale = load_unet(args.run, "cpu")
    vae.register_to_config(scaling_factor=scale)
    scheduler = DDIMScheduler.from_config(scheduler_config(ARCH))
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
        "native_size": ARCH.image_size,
        "steps": trained,
        "architecture": dataclasses.asdict(ARCH),
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
        return (export if args.stage == "export" else import_model)(args)
    args.batch = args.batch or {"vae": 16, "unet": 32}.get(args.stage, 32)
    {"vae": train_vae, "unet": train_unet}.get(args.stage, train_controlnet)(args)


if __name__ == "__main__":
    main()
