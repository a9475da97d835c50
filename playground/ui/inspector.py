"""Latent inspector tab: scrub every step of a recorded generation, channel by channel (this module), with
its cross-attention (`ui.attention`); and a VAE round trip (`ui.roundtrip`)."""

from __future__ import annotations

from typing import Callable

import gradio as gr
import pandas as pd

from playground.latents import snr_db
from playground.outputs import Folder, save_trajectory
from playground.attention.sources import ATTENTION_OF
from playground.schema import InspectRequest, Progress, Trajectory
from playground.settings import Settings
from playground.ui import attention, roundtrip
from playground.ui.common import heavy, running, shows_errors, status_line, stop_button, stream
from playground.ui.fields import Fields, generate_request, size_note
from playground.views import AttentionView, RoundTrip, StepView

# the noise plot's series: colour, and what the legend under the plot says of each
NOISE_SERIES = {
    "sigma": ("#1f77b4", "σ, the noise level of x_t (x_t ≈ x0 + σ·ε; for SD3's flow, x_t = (1 − σ)·x0 + σ·ε)"),
    "SNR (dB)": ("#ff7f0e", "signal-to-noise ratio in dB, −20·log10 σ (a flow's 20·log10((1 − σ)/σ))"),
    "selected step": ("#d62728", "the step the slider shows"),
    "refiner takes over": ("#2ca02c", "SDXL: the first step of the refiner (with a refiner start)"),
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
        rows.append({"step": k + 1, "value": round(snr_db(sigma, traj.flow), 3), "series": "SNR (dB)"})
    values = [r["value"] for r in rows]
    rows += [{"step": index + 1, "value": min(values), "series": "selected step"},
             {"step": index + 1, "value": max(values), "series": "selected step"}]
    if getattr(traj, "handoff", None) is not None:  # the base's last step, then the refiner's first
        rows += [{"step": traj.handoff + 1, "value": v, "series": "refiner takes over"} for v in (min(values), max(values))]
    return pd.DataFrame(rows)


def step_text(v: StepView) -> str:
    stats = "  \n".join(f"channel {k}: min {s.min:+.3f} · mean {s.mean:+.3f} · std {s.std:.3f}"
                        for k, s in enumerate(v.stats))
    return (f"**Step {v.index + 1} of {v.total}**: timestep {v.timestep:.0f}, noise σ = {v.sigma:.3f}, "
            f"SNR = {v.snr_db:+.1f} dB. Colours: blue < 0 < red, white = 0, saturating at ±{v.scale:.2f}.  \n{stats}")


def inspect_text(traj: Trajectory, native: int) -> str:
    r = traj.request
    note = size_note(r.width, r.height, native)
    return (f"{note}  \n" if note else "") + (f"**Seed {r.seed}**: {r.scheduler}, {r.steps} steps, CFG {r.cfg_scale:g}, {r.width}x{r.height}.  \n"
            f"Recorded {traj.steps} model evaluations: {traj.nbytes / 1e6:.2f} MB kept for this session"
            + (f", plus {traj.attention.nbytes / 1e6:.2f} MB of {'joint' if traj.attention.by_block else 'cross'}"
               "-attention maps" if traj.attention else "")
            + f"; {traj.seconds:.2f} s."
            + (f"  \nThe base made steps 1-{traj.handoff}, the **refiner** steps {traj.handoff + 1}-{traj.steps} "
               f"(it took over at {r.refiner_start:g} of the way)." if traj.handoff is not None else ""))


def build(
    inspect: Callable[..., Trajectory],
    step_view: Callable[[Trajectory, int], StepView],
    decode_x0: Callable[[Trajectory, int], object],
    run_roundtrip: Callable[..., RoundTrip],
    attention_view: Callable[..., AttentionView],
    run_attention: Callable[..., tuple[Trajectory, AttentionView]],
    fields: Fields,
    settings: Settings,
) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    # -- layout -------------------------------------------------------------------------------
    # the recorded trajectory lives in this browser session only: freed STATE_MINUTES after it was made (an hour after
    # the tab closed at most), or sooner when more than SESSION_STATES sessions hold one
    traj_state = gr.State(None, time_to_live=settings.state_minutes * 60)  # freed after, and per session_states
    with gr.Tab("Trajectory"):
        gr.Markdown(f"Run a generation that **records every step**, then scrub through it: the {fields.channels} latent channels the "
                    "model works on, what it currently believes the clean image is, and how much noise is left.")
        with gr.Row():
            with gr.Column(scale=5):
                def action():
                    with gr.Row():
                        run = gr.Button("Generate and record", variant="primary", scale=3)
                        stop = gr.Button("Stop", variant="stop", scale=1)
                    return run, stop, status_line(), gr.Markdown()

                # two objects, each word lighting its own
                form = fields.form(first=fields.attention_example, action=action)
                run, stop, status, info = form.action
                refiner_box = fields.refiner_start()
                attention_box = gr.Radio([a.label for a in ATTENTION_OF.values()], value=ATTENTION_OF["prompt"].label,
                                         label="Attention maps of")
                download = gr.File(label="Download the trajectory (.safetensors: every x_t, x0 and model output)")
            with gr.Column(scale=4):
                final = gr.Image(label="Final image", format="png", interactive=False, type="filepath", height=300,
                                 elem_classes=["pixels"], elem_id="inspect-final")
        # the slider right above the pictures it drives: both in view at once
        step_slider = gr.Slider(1, 2, value=1, step=1, label="Step (drag to scrub the trajectory)", interactive=False)
        with gr.Row():
            rgb_x_t, rgb_x0, decoded = (gr.Image(label=label, format="png", interactive=False, height=290,
                                                 elem_classes=["pixels"]) for label in (
                "x_t as RGB (linear map, no VAE)", "predicted x0 as RGB (linear map)",
                "predicted x0 through the VAE decoder"))
        step_info = gr.Markdown()
        # height "auto": the four square channel images are always shown whole, however wide the page
        channels = gr.Gallery(label=f"x_t: the {fields.channels} latent channels at this step (one shared colour scale)",
                              columns=4,
                              height="auto", object_fit="contain", format="png", allow_preview=False)
        noise = gr.LinePlot(x="step", y="value", color="series", label="Noise level over the steps", height=280,
                            color_map={name: colour for name, (colour, _) in NOISE_SERIES.items()},
                            colors_in_legend=[])
        gr.HTML(noise_legend())
        attn = attention.section(attention_view, traj_state, joint=fields.joint_attention)
        gr.Markdown("### What classifier-free guidance amplifies\nThe model predicts twice (the noise, or SD3's velocity), with the prompt "
                    "and without it; the scheduler steps with *uncond + CFG × (cond − uncond)*.")
        cfg_text = gr.Markdown()
        cfg_images = [gr.Image(label=label, format="png", interactive=False, height=220) for label in (
            f"with the prompt (conditional): channels 0-{fields.channels - 1}",
            f"negative or empty prompt (unconditional): channels 0-{fields.channels - 1}",
            f"difference, what CFG multiplies: channels 0-{fields.channels - 1}")]
        form_inputs = [form.prompt, form.negative_prompt, form.seed, form.steps, form.cfg_scale, form.scheduler,
                       form.width, form.height, attention_box]
        attention.api(run_attention, form_inputs, attn, settings, form.model)
        fields.follow(form.model, refiner_start=refiner_box)
    with gr.Tab("VAE round trip"):
        roundtrip.build(run_roundtrip, settings, offline=bool(fields.vocabulary), model_box=fields.model())

    # -- handlers -----------------------------------------------------------------------------
    def show_step(traj: Trajectory | None, step: int):
        if traj is None:
            return [gr.skip()] * 9
        v = step_view(traj, int(step) - 1)
        if v.guidance:
            cfg = (f"Each strip is the model's {fields.channels}-channel output; colour scales: "
                   + "; ".join(c for c, _ in v.guidance))
            images = [im for _, im in v.guidance]
        else:
            cfg, images = "This run used CFG scale 1: no unconditional pass, so nothing to compare.", [None] * 3
        return (step_text(v), [(im, f"channel {k}") for k, im in enumerate(v.channels)], v.rgb_x_t, v.rgb_x0,
                noise_plot(traj, v.index), cfg, *images)

    @shows_errors
    def on_inspect(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, attention_of,
                   refiner_start=0.0, model="", progress=gr.Progress()):
        base = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height,
                                refiner_start=refiner_start, model=model)
        for item in stream(inspect, InspectRequest(base, attention_of)):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                yield *[gr.skip()] * 2, running(item), *[gr.skip()] * (len(outputs) - 3)
                continue
            traj: Trajectory = item
            image, file = save_trajectory(traj, Folder.of(settings))
            slider = gr.Slider(1, traj.steps, value=traj.steps, step=1, interactive=True)
            yield (traj, str(image), inspect_text(traj, fields.facts(traj.request.model).native_size), str(file), slider, None, *show_step(traj, traj.steps),
                   *attn.first(traj))

    def on_decode(traj: Trajectory | None, step: int):
        return None if traj is None else decode_x0(traj, int(step) - 1)

    # -- events -------------------------------------------------------------------------------
    step_outputs = [step_info, channels, rgb_x_t, rgb_x0, noise, cfg_text, *cfg_images]
    outputs = [traj_state, final, info, download, step_slider, decoded, *step_outputs, *attn.first_outputs]
    attention_inputs = [traj_state, step_slider, attn.token, attn.resolution]
    event = heavy(run.click, on_inspect, [*form_inputs, refiner_box, form.model], outputs, settings, api_name="inspect",
                  preprocess=False, show_progress_on=status)
    # the step's x0 through the VAE; then the attention map of the step over it
    heavy(event.then, on_decode, [traj_state, step_slider], decoded, settings, counted=False,
          api_visibility="private").then(
        attn.show, attention_inputs, attn.outputs, show_progress="hidden", api_visibility="private")
    stop_button(stop, event, info)
    step_slider.change(show_step, [traj_state, step_slider], step_outputs, show_progress="hidden",
                       trigger_mode="always_last", api_visibility="private")
    step_slider.change(attn.show, attention_inputs, attn.outputs, show_progress="hidden",
                       trigger_mode="always_last", api_visibility="private")
    heavy(step_slider.release, on_decode, [traj_state, step_slider], decoded, settings, counted=False,
          show_progress="minimal", trigger_mode="always_last", api_visibility="private").then(
        attn.show, attention_inputs, attn.outputs, show_progress="hidden", api_visibility="private")
    for box in (attn.token, attn.resolution):
        box.input(attn.show, attention_inputs, attn.outputs, show_progress="hidden", trigger_mode="always_last",
                  api_visibility="private")
    attn.chip_clicked.then(attn.show, attention_inputs, attn.outputs, show_progress="hidden", api_visibility="private")
