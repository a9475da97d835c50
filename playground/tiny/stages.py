"""The U-Net model's training stages, top to bottom: 1. the VAE, 2. the UNet and its text encoder, 3, 4. a
ControlNet each (Canny edges, OpenPose maps). Each resumes from `<run>/<stage>.pt` and trains in chunks. The
command line is `python -m playground.tiny.train STAGE` (train.py); export.py writes the folder the app loads."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from playground.preprocessors import canny
from playground.tiny import arch, grounding, world
from playground.tiny.arch import OFFLINE, scheduler_config
from playground.tiny.toolkit import SEED_STRIDE, Budget, Checkpoint, Ranks, batch, ema_update, log, resume, to_tensor
from playground.tiny.vocab import build_tokenizer

ARCH = OFFLINE  # the sizes of every component (playground/tiny/arch.py); export.py reads them from here too


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


def control_map(stage: str, scene: world.Scene):
    return canny(scene.image) if stage == "canny" else world.pose_map(scene.keypoints)


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
