"""Latent inspector tab: scrub every step of a generation, channel by channel; a VAE round trip."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from playground.gpu import gpu
from playground.inspect import AttentionView, RoundTrip, StepView
from playground.latents import snr_db
from playground.outputs import save_trajectory
from playground.requests import ATTENTION_OF, GenerateRequest, InvalidRequest, Progress, Trajectory
from playground.settings import Settings
from playground.ui.common import stream

# the noise plot's series: colour, and what the legend under the plot says of each
NOISE_SERIES = {
    "sigma": ("#1f77b4", "σ, the noise level of x_t (x_t ≈ x0 + σ·ε)"),
    "SNR (dB)": ("#ff7f0e", "signal-to-noise ratio in dB, −20·log10 σ"),
    "selected step": ("#d62728", "the step the slider shows"),
}


def noise_legend() -> str:
    """The noise plot's legend, as HTML under it (gradio's own legend is cut off below the plot)."""
    items = "".join(f'<span style="margin-right:1.5em;white-space:nowrap"><span style="color:{colour};'
                    f'font-weight:bold">━━</span> <b>{name}</b>: {about}</span>'
                    for name, (colour, about) in NOISE_SERIES.items())
    return f'<div class="noise-legend" style="font-size:0.9em">{items}</div>'


# -- helpers ----------------------------------------------------------------------------------
def noise_plot(traj: Trajectory, index: int) -> pd.DataFrame:
    """sigma and SNR (dB) at every step (1-based, like the slider), plus a vertical line at the selected step."""
    rows = []
    for k, sigma in enumerate(traj.sigmas):
        rows.append({"step": k + 1, "value": round(sigma, 4), "series": "sigma"})
        rows.append({"step": k + 1, "value": round(snr_db(sigma), 3), "series": "SNR (dB)"})
    values = [r["value"] for r in rows]
    rows += [{"step": index + 1, "value": min(values), "series": "selected step"},
             {"step": index + 1, "value": max(values), "series": "selected step"}]
    return pd.DataFrame(rows)


def step_text(v: StepView) -> str:
    stats = "  \n".join(f"channel {k}: min {s.min:+.3f} · mean {s.mean:+.3f} · std {s.std:.3f}"
                        for k, s in enumerate(v.stats))
    return (f"**Step {v.index + 1} of {v.total}**: timestep {v.timestep:.0f}, noise σ = {v.sigma:.3f}, "
            f"SNR = {v.snr_db:+.1f} dB. Colours: blue < 0 < red, white = 0, saturating at ±{v.scale:.2f}.  \n{stats}")


# the token chips: CLIP's split of the prompt, the cut at 77 tokens marked, the dropped words greyed
TOKEN_COLOURS = {"start / end": "#9ca3af", "word": "#60a5fa", "cut off (past 77 tokens)": "#e5e7eb"}
TOKEN_KINDS = {"start": "start / end", "end": "start / end", "word": "word", "dropped": "cut off (past 77 tokens)"}

ATTENTION_NOTE = (
    "Every image position of the U-Net's cross-attention layers asks the prompt's 77 token vectors for "
    "information; softmax(QK<sup>T</sup>/√d) says how much each token gets (averaged over the heads and over the "
    "layers of the chosen resolution). The shares of one position add up to 1 over all 77, so the **padding** "
    "(end tokens repeated up to 77, not shown) takes whatever the words do not. In Stable Diffusion the **start "
    "token** usually takes the largest share of all: CLIP's text encoder is causal, so the start token's vector is "
    "the same whatever the prompt, and attention that no word needs can rest there without changing the picture. "
    "Causality also means a token's vector only knows the words before it: in a small model such as the offline "
    "one, the words *after* the object (\"on a white background\") often carry it best. Each map is stretched to "
    "its own range; the text above it says how wide that range is.\n\n")


def token_chips(traj: Trajectory) -> list[tuple[str, str]]:
    """(text, kind) for gradio's HighlightedText: every token of the split prompt."""
    return [(t.text, TOKEN_KINDS[t.kind]) for t in traj.attention.tokens]


def token_choices(traj: Trajectory) -> tuple[list[tuple[str, int]], int]:
    """The kept tokens as (label, index) radio choices, and the one to show first."""
    kept = traj.attention.kept
    choices = [(f"{t.text} ({k})" if [u.text for u in kept].count(t.text) > 1 else t.text, k)
               for k, t in enumerate(kept)]
    return choices, traj.attention.first


def attention_text(v: AttentionView, traj: Trajectory, resolution: str) -> str:
    a = traj.attention
    layers = sum(a.layers[g] for g in a.resolution_key(resolution))
    of = "prompt" if a.of == "prompt" else "negative prompt"
    words = v.together
    return (f"**“{v.token}”** ({of}) gets **{100 * v.share:.1f}%** of the attention at this step, averaged over "
            f"the image; its map here runs from {100 * v.low:.2f}% to {100 * v.high:.2f}% of a position's "
            f"attention (black to pale yellow). The {len(a.kept)} tokens shown take {100 * words:.0f}% together, the "
            f"{a.window - len(a.kept)} padding tokens the other {100 * (1 - words):.0f}%. Layers: {resolution} ({layers} "
            f"cross-attention layers). Kept for this session: {a.steps} steps x {len(a.kept)} tokens, "
            f"{a.nbytes / 1e6:.2f} MB.")


def roundtrip_text(r: RoundTrip) -> str:
    c, h, w = r.latent_shape
    H, W = r.original.height, r.original.width
    return (f"**{W}x{H}x3 = {W * H * 3:,} numbers → {w}x{h}x{c} = {w * h * c:,} numbers: {r.ratio:.0f}x smaller.**  \n"
            f"Reconstruction PSNR: **{r.psnr:.2f} dB** (higher is closer; above ~30 dB differences are hard to see).")


def build(
    inspect: Callable[..., Trajectory],
    step_view: Callable[[Trajectory, int], StepView],
    decode_x0: Callable[[Trajectory, int], object],
    roundtrip: Callable[..., RoundTrip],
    attention_view: Callable[..., AttentionView],
    attention: Callable[..., tuple[Trajectory, AttentionView]],
    scheduler_names: list[str],
    native_size: int,
    settings: Settings,
    examples: list[str] = (),
    concurrency_id: str = "gpu",
) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    defaults = GenerateRequest()
    out_dir = Path(settings.output_dir)

    # -- layout -------------------------------------------------------------------------------
    # the recorded trajectory lives in this browser session only; freed when the tab closes (or after an hour)
    traj_state = gr.State(None, time_to_live=3600)
    with gr.Tab("Trajectory"):
        gr.Markdown("Run a generation that **records every step**, then scrub through it: the 4 latent channels the "
                    "model works on, what it currently believes the clean image is, and how much noise is left.")
        with gr.Row():
            with gr.Column(scale=5):
                prompt_box = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle on a blue background")
                if examples:
                    gr.Examples([[e] for e in examples], inputs=[prompt_box], label="Prompts this model knows")
                negative_box = gr.Textbox(label="Negative prompt", lines=1)
                with gr.Row():
                    scheduler_box = gr.Dropdown(scheduler_names, value=defaults.scheduler, label="Scheduler")
                    steps_box = gr.Slider(1, settings.max_steps, value=defaults.steps, step=1, label="Steps")
                with gr.Row():
                    cfg_box = gr.Slider(0, settings.max_cfg, value=defaults.cfg_scale, step=0.5, label="CFG scale")
                    seed_box = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                with gr.Row():
                    width_box = gr.Slider(64, settings.max_size, value=native_size, step=8, label="Width")
                    height_box = gr.Slider(64, settings.max_size, value=native_size, step=8, label="Height")
                attention_box = gr.Radio(list(ATTENTION_OF.values()), value=ATTENTION_OF["prompt"],
                                         label="Cross-attention maps of")
                with gr.Row():
                    run = gr.Button("Generate and record", variant="primary", scale=3)
                    stop = gr.Button("Stop", variant="stop", scale=1)
                info = gr.Markdown()
                download = gr.File(label="Download the trajectory (.safetensors: every x_t, x0 and model output)")
            with gr.Column(scale=4):
                final = gr.Image(label="Final image", format="png", interactive=False, type="filepath", height=300,
                                 elem_classes=["pixels"])
        step_slider = gr.Slider(1, 2, value=1, step=1, label="Step (drag to scrub the trajectory)", interactive=False)
        step_info = gr.Markdown()
        # height "auto": the four square channel images are always shown whole, however wide the page
        channels = gr.Gallery(label="x_t: the 4 latent channels at this step (one shared colour scale)", columns=4,
                              height="auto", object_fit="contain", format="png", allow_preview=False)
        with gr.Row():
            rgb_x_t = gr.Image(label="x_t as RGB (linear map, no VAE)", format="png", interactive=False, height=260,
                               elem_classes=["pixels"])
            rgb_x0 = gr.Image(label="predicted x0 as RGB (linear map)", format="png", interactive=False, height=260, elem_classes=["pixels"])
            decoded = gr.Image(label="predicted x0 through the VAE decoder", format="png", interactive=False,
                               height=260, elem_classes=["pixels"])
        noise = gr.LinePlot(x="step", y="value", color="series", label="Noise level over the steps", height=280,
                            color_map={name: colour for name, (colour, _) in NOISE_SERIES.items()},
                            colors_in_legend=[])
        gr.HTML(noise_legend())
        gr.Markdown("### Which word paints where: cross-attention")
        chips = gr.HighlightedText(label="The prompt as CLIP splits it (the 77-token window; words past it are cut)",
                                   color_map=TOKEN_COLOURS, show_legend=True, combine_adjacent=False,
                                   show_inline_category=False, interactive=False)
        with gr.Row():
            token_box = gr.Radio([], label="Token to map (click one)", scale=3)
            resolution_box = gr.Radio(["all"], value="all", label="Layer resolution", scale=1)
        attention_info = gr.Markdown()
        with gr.Row():
            attention_step = gr.Image(label="its map at this step, over the step's predicted image", format="png",
                                      interactive=False, height=300, elem_classes=["pixels"])
            attention_summed = gr.Image(label="its map summed over all steps, over the final image", format="png",
                                        interactive=False, height=300, elem_classes=["pixels"])
        attention_strip = gr.Gallery(label="every token, summed over all steps (caption: its share of the attention)",
                                     columns=8, height="auto", object_fit="contain", format="png",
                                     allow_preview=False)
        gr.Markdown(ATTENTION_NOTE)
        with gr.Row(visible=False):  # the `attention` API endpoint: a recording, answered with the maps
            word_box = gr.Textbox(label="Word")
            attention_api = gr.Button("attention")
        gr.Markdown("### What classifier-free guidance amplifies\nThe model predicts the noise twice, with the prompt "
                    "and without it; the scheduler steps with *uncond + CFG × (cond − uncond)*.")
        cfg_text = gr.Markdown()
        cfg_cond = gr.Image(label="with the prompt (conditional): channels 0-3", format="png", interactive=False,
                            height=220)
        cfg_uncond = gr.Image(label="negative or empty prompt (unconditional): channels 0-3", format="png",
                              interactive=False, height=220)
        cfg_diff = gr.Image(label="difference, what CFG multiplies: channels 0-3", format="png", interactive=False,
                            height=220)

    with gr.Tab("VAE round trip"):
        gr.Markdown("Upload a picture and watch the VAE squeeze it into 4 channels at 1/8 the width and height, then "
                    "decode it back. The diffusion model only ever works on that small latent.")
        with gr.Row():
            upload = gr.Image(label="Your image", type="filepath", sources=["upload", "clipboard"], height=300)
            with gr.Column():
                trip = gr.Button("Encode and decode", variant="primary")
                trip_info = gr.Markdown()
        with gr.Row():
            trip_orig = gr.Image(label="Original (fitted to a multiple of 8)", format="png", interactive=False)
            trip_recon = gr.Image(label="Reconstruction (decoded latent)", format="png", interactive=False)
        trip_channels = gr.Gallery(label="The latent: 4 channels", columns=4, height="auto", object_fit="contain",
                                   format="png", allow_preview=False)

    # -- handlers -----------------------------------------------------------------------------
    def show_step(traj: Trajectory | None, step: int):
        if traj is None:
            return [gr.skip()] * 9
        v = step_view(traj, int(step) - 1)
        if v.guidance:
            cfg = "Each strip is the model's 4-channel output; colour scales: " + "; ".join(c for c, _ in v.guidance)
            images = [im for _, im in v.guidance]
        else:
            cfg, images = "This run used CFG scale 1: no unconditional pass, so nothing to compare.", [None] * 3
        return (step_text(v), [(im, f"channel {k}") for k, im in enumerate(v.channels)], v.rgb_x_t, v.rgb_x0,
                noise_plot(traj, v.index), cfg, *images)

    def show_attention(traj: Trajectory | None, step: int, token, resolution):
        if traj is None or traj.attention is None or token is None:
            return [gr.skip()] * 4
        try:
            v = attention_view(traj, int(step) - 1, token, resolution)
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from None
        return attention_text(v, traj, resolution), v.at_step, v.summed, v.strip

    def no_attention(traj: Trajectory):
        """What the attention section shows for a new trajectory, before the first token view."""
        if traj.attention is None:
            return (gr.HighlightedText(value=None), gr.Radio(choices=[], value=None),
                    gr.Radio(choices=["all"], value="all"), "Recorded without attention maps.", None, None, None)
        choices, first = token_choices(traj)
        return (token_chips(traj), gr.Radio(choices=choices, value=first),
                gr.Radio(choices=traj.attention.resolution_names, value="all"),
                *show_attention(traj, traj.steps, first, "all"))

    def on_attention(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, attention_of, word,
                     resolution, progress=gr.Progress()):
        req = GenerateRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                              cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height)
        run = functools.partial(attention, attention_of=attention_of, word=word, resolution=resolution)
        for item in stream(run, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                continue
            traj, v = item
            return v.strip, v.summed, attention_text(v, traj, resolution or "all")

    def on_inspect(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, attention_of,
                   progress=gr.Progress()):
        req = GenerateRequest(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                              cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height)
        for item in stream(functools.partial(inspect, attention_of=attention_of), req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                continue
            traj: Trajectory = item
            image, file = save_trajectory(traj, out_dir)
            r = traj.request
            text = (f"**Seed {r.seed}**: {r.scheduler}, {r.steps} steps, CFG {r.cfg_scale:g}, {r.width}x{r.height}.  \n"
                    f"Recorded {traj.steps} model evaluations: {traj.nbytes / 1e6:.2f} MB kept for this session"
                    + (f", plus {traj.attention.nbytes / 1e6:.2f} MB of cross-attention maps" if traj.attention else "")
                    + f"; {traj.seconds:.2f} s.")
            slider = gr.Slider(1, traj.steps, value=traj.steps, step=1, interactive=True)
            yield (traj, str(image), text, str(file), slider, None, *show_step(traj, traj.steps), *no_attention(traj))

    def on_decode(traj: Trajectory | None, step: int):
        return None if traj is None else decode_x0(traj, int(step) - 1)

    def on_roundtrip(upload):
        # preprocess=False: the raw upload, so a corrupt file reaches the Engine, whose error names it
        path = upload.get("path") if isinstance(upload, dict) else upload
        if not path:
            raise gr.Error("Upload an image first")
        try:
            r = roundtrip(path)
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from None
        return r.original, r.reconstruction, [(im, f"channel {k}") for k, im in enumerate(r.channels)], roundtrip_text(r)

    # -- events -------------------------------------------------------------------------------
    inputs = [prompt_box, negative_box, seed_box, steps_box, cfg_box, scheduler_box, width_box, height_box,
              attention_box]
    step_outputs = [step_info, channels, rgb_x_t, rgb_x0, noise, cfg_text, cfg_cond, cfg_uncond, cfg_diff]
    attention_outputs = [attention_info, attention_step, attention_summed, attention_strip]
    attention_inputs = [traj_state, step_slider, token_box, resolution_box]
    event = run.click(gpu(on_inspect), inputs, [traj_state, final, info, download, step_slider, decoded, *step_outputs,
                                                chips, token_box, resolution_box, *attention_outputs],
                      api_name="inspect", preprocess=False, show_progress_on=final, concurrency_id=concurrency_id,
                      concurrency_limit=settings.gpu_concurrency)
    # the step's x0 through the VAE; then the attention map of the step over it
    event.then(gpu(on_decode), [traj_state, step_slider], decoded, api_visibility="private",
               concurrency_id=concurrency_id, concurrency_limit=settings.gpu_concurrency).then(
        show_attention, attention_inputs, attention_outputs, show_progress="hidden", api_visibility="private")
    stop.click(None, cancels=[event], api_visibility="private")
    step_slider.change(show_step, [traj_state, step_slider], step_outputs, show_progress="hidden",
                       trigger_mode="always_last", api_visibility="private")
    step_slider.change(show_attention, attention_inputs, attention_outputs, show_progress="hidden",
                       trigger_mode="always_last", api_visibility="private")
    step_slider.release(gpu(on_decode), [traj_state, step_slider], decoded, show_progress="minimal",
                        trigger_mode="always_last", api_visibility="private", concurrency_id=concurrency_id,
                        concurrency_limit=settings.gpu_concurrency).then(
        show_attention, attention_inputs, attention_outputs, show_progress="hidden", api_visibility="private")
    for box in (token_box, resolution_box):
        box.input(show_attention, attention_inputs, attention_outputs, show_progress="hidden",
                  trigger_mode="always_last", api_visibility="private")
    attention_api.click(gpu(on_attention), [*inputs, word_box, resolution_box],
                        [attention_strip, attention_summed, attention_info], api_name="attention", preprocess=False,
                        concurrency_id=concurrency_id, concurrency_limit=settings.gpu_concurrency)
    trip.click(gpu(on_roundtrip), upload, [trip_orig, trip_recon, trip_channels, trip_info], api_name="vae_roundtrip",
               preprocess=False,
               concurrency_id=concurrency_id, concurrency_limit=settings.gpu_concurrency)
