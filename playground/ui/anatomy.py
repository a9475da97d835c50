"""Model anatomy tab: the loaded model's parts beside SD 1.5's, SDXL's and SD3 Medium's."""

from __future__ import annotations

from typing import Callable

import gradio as gr
import pandas as pd

from playground.parts import Anatomy, Schedule

# the bar chart's stacks and their colours (the legend is drawn under the chart: gradio's own is cut off)
GROUPS = {"text encoders": "#4c78a8", "denoiser": "#f58518", "VAE": "#54a24b", "ControlNets": "#b279a2"}


def millions(n: int) -> str:
    return f"{n / 1e9:,.2f}B" if n >= 1e9 else f"{n / 1e6:,.1f}M"


def parts_of(a: Anatomy, group: str) -> str:
    found = [p for p in a.parts if p.group == group]
    if not found:
        return "none" if group != "ControlNets" else "none loaded yet"
    return " + ".join(f"{p.name.split(': ', 1)[-1]} {millions(p.params)}" for p in found)


def table(models: list[Anatomy]) -> pd.DataFrame:
    """One column per model, one row per figure."""
    rows = {
        "text encoders": [parts_of(a, "text encoders") for a in models],
        "text widths, token limits": ["; ".join(a.text) for a in models],
        "denoiser": [parts_of(a, "denoiser") for a in models],
        "VAE": [parts_of(a, "VAE") for a in models],
        "ControlNets": [parts_of(a, "ControlNets") if a.loaded else "-" for a in models],
        "parameters in all": [millions(a.params) for a in models],
        "native size": [f"{a.native_size}x{a.native_size}x3" for a in models],
        "latent at the native size": [f"{a.latent[2]}x{a.latent[1]}x{a.latent[0]}" for a in models],
        "compression (image numbers / latent numbers)": [f"{a.ratio:g}x" for a in models],
        "prediction": [a.prediction_type for a in models],
        "noise schedule": [a.schedule for a in models],
    }
    return pd.DataFrame([[k, *v] for k, v in rows.items()], columns=["", *(a.name for a in models)])


def markdown(frame: pd.DataFrame) -> str:
    """The table as Markdown: it wraps to the page, where a wide dataframe would scroll its columns away."""
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = [f"| **{row[0]}** | " + " | ".join(str(v) for v in row[1:]) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def legend(models: list[Anatomy]) -> str:
    items = "".join(f'<span style="margin-right:1.5em;white-space:nowrap"><span style="color:{colour};'
                    f'font-weight:bold">■</span> {name}</span>' for name, colour in GROUPS.items())
    small = [f"{a.name}: {millions(a.params)} in all" for a in models if a.params < 0.01 * max(m.params for m in models)]
    note = f" Too small to see at this scale: {'; '.join(small)}." if small else ""
    return f'<div style="font-size:0.9em">{items}{note}</div>'


def bars(models: list[Anatomy]) -> pd.DataFrame:
    """Millions of parameters per model and component group (the stacks of the bar chart)."""
    return pd.DataFrame([{"model": a.name, "component": g, "parameters (millions)":
                          round(sum(p.params for p in a.parts if p.group == g) / 1e6, 1)}
                         for a in models for g in GROUPS])


SNR_FLOOR = -40.0  # dB: the plot's bottom (a schedule's last steps go far below: pure noise)
# the schedules' colours in both plots, in the order anatomy.schedules lists them (the loaded model's first)
SCHEDULE_COLOURS = ["#111827", "#f58518", "#e45756", "#4c78a8", "#54a24b", "#b279a2"]


def schedule_colours(found: list[Schedule]) -> dict[str, str]:
    return {s.name: SCHEDULE_COLOURS[k % len(SCHEDULE_COLOURS)] for k, s in enumerate(found)}


def schedule_legend(found: list[Schedule]) -> str:
    """The plots' legend as HTML under them (gradio's own is cut off past a few names)."""
    items = "".join(f'<span style="margin-right:1.5em;white-space:nowrap"><span style="color:{colour};'
                    f'font-weight:bold">━</span> {name}</span>' for name, colour in schedule_colours(found).items())
    return f'<div style="font-size:0.9em">{items}</div>'


def schedule_frame(found: list[Schedule], every: int = 10) -> pd.DataFrame:
    """Every `every`-th point of each schedule: t / T, alpha-bar and the SNR in dB (clipped at SNR_FLOOR)."""
    rows = [{"t / T": s.t[k], "schedule": s.name, "alpha-bar": round(s.alpha_bar[k], 5),
             "SNR (dB)": round(max(s.snr_db[k], SNR_FLOOR), 2)}
            for s in found for k in range(every - 1, len(s.t), every)]
    return pd.DataFrame(rows, columns=["t / T", "schedule", "alpha-bar", "SNR (dB)"])


def crossings(found: list[Schedule]) -> str:
    """Where each schedule's SNR falls through 0 dB (signal and noise equal), as Markdown."""
    lines = [f"- **{s.name}**: 0 dB at t = {s.crossing:.3f} T; the last step keeps alpha-bar {s.alpha_bar[-1]:.2g} "
             f"({max(s.snr_db[-1], -999):.1f} dB)" if s.crossing is not None else f"- **{s.name}**: never reaches 0 dB"
             for s in found]
    return ("Where signal and noise are equal (**0 dB**), by schedule. Before it the model mostly removes noise "
            "from a picture it can see; after it, it has to invent the picture. A later crossing spends more of the "
            "steps on detail, an earlier one on composition.\n" + "\n".join(lines))


def build(loaded: Callable[[], Anatomy | list[Anatomy]], families: Callable[[], dict[str, Anatomy]],
          schedules: Callable[[], list[Schedule]] | None = None, concurrency_id: str = "gpu") -> None:
    """Lay out the tab inside the current Blocks and wire its events (filled when the tab is opened)."""
    with gr.Tab("Model anatomy") as tab:
        gr.Markdown(
            "What a latent diffusion model is made of, counted. **SD 1.5** (2022): one CLIP text encoder, an "
            "860M-parameter U-Net working on 64x64x4 latents at 512 px. **SDXL** (2023): two text encoders whose "
            "outputs are concatenated to 2048-d (plus the second one's pooled vector and the image's size and crop "
            "as extra conditioning), a 2.6B U-Net on 128x128x4 latents at 1024 px. **SD3** (2024): three text "
            "encoders (one of them T5-XXL, 4.8B parameters alone), a transformer (MMDiT) instead of the U-Net, "
            "16-channel latents, and rectified flow instead of the noise-prediction schedule. The reference figures "
            "are counted from each model's published configs, built on PyTorch's meta device (no weights, no "
            "download); the loaded model's from its own modules.")
        show = gr.Button("Count again (a ControlNet loaded since the tab opened is counted too)")
        compare = gr.Markdown(elem_id="anatomy-table")
        chart = gr.BarPlot(x="model", y="parameters (millions)", color="component", label="Parameters by component",
                           height=400, color_map=GROUPS, colors_in_legend=[], x_label_angle=0)
        key = gr.HTML()
        gr.Markdown("**Compression**: the VAE turns an HxWx3 image into an (H/8)x(W/8)xC latent. With C = 4 (SD 1.5, "
                    "SDXL) that is 3·64 / 4 = 48x fewer numbers; SD3's 16 channels keep 4x more detail: 12x.")
        gr.Markdown("### Noise schedules, side by side\nHow much of the image is left at each point from clean "
                    "(t = 0) to pure noise (t = T): alpha-bar, the share of the signal, and the signal-to-noise ratio "
                    "in dB. DDPM's linear schedule destroys the image early; the cosine one keeps it longer; SD's "
                    "scaled-linear one never quite reaches pure noise (its last step keeps 6.8% of the image); the "
                    "offline model's is rescaled to keep 2%; SD3's rectified flow, shifted by 3, spends more of its "
                    "way at high noise. A flow's (1 - σ)·x0 + σ·ε is put on the same axes by its SNR, ((1 - σ)/σ)².")
        compare_schedules = gr.Button("Compare noise schedules")
        with gr.Row():
            snr_plot = gr.LinePlot(x="t / T", y="SNR (dB)", color="schedule", height=360, colors_in_legend=[],
                                   label=f"SNR (dB) against t / T (clipped at {SNR_FLOOR:g} dB)")
            alpha_plot = gr.LinePlot(x="t / T", y="alpha-bar", color="schedule", height=360, colors_in_legend=[],
                                     label="alpha-bar (the share of the image) against t / T")
        schedules_key = gr.HTML()
        zero_db = gr.Markdown()

    def fill():
        mine = loaded()
        models = [*(mine if isinstance(mine, list) else [mine]), *families().values()]
        # the loaded models first (each offline model counted the way SD 1.5 and SD3 are), then oldest to newest
        plot = gr.BarPlot(value=bars(models), sort=[a.name for a in models])
        return markdown(table(models)), plot, legend(models)

    def fill_schedules():
        found = schedules()
        frame, colours = schedule_frame(found), schedule_colours(found)
        return (gr.LinePlot(value=frame, color_map=colours), gr.LinePlot(value=frame, color_map=colours),
                schedule_legend(found), crossings(found))

    tab.select(fill, None, [compare, chart, key], api_visibility="private")
    show.click(fill, None, [compare, chart, key], api_name="anatomy")
    if schedules is not None:
        tab.select(fill_schedules, None, [snr_plot, alpha_plot, schedules_key, zero_db], api_visibility="private")
        compare_schedules.click(fill_schedules, None, [snr_plot, alpha_plot, schedules_key, zero_db],
                                api_name="schedules")
