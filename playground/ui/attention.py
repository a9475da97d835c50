"""The inspector's cross-attention section: which word paints where, over a recorded trajectory.

The prompt as CLIP splits it (chips), a token and a layer resolution to choose, the token's map at the
chosen step and summed over all steps, and every token's map in a strip. The trajectory part of the
inspector records the maps; this part only shows them (and answers the `attention` API endpoint).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from playground.attention.sources import ATTENTION_OF
from playground.schema import InspectRequest, Progress, Trajectory
from playground.settings import Settings
from playground.ui.common import heavy, shows_errors, stream
from playground.ui.fields import generate_request
from playground.views import AttentionView

# the token chips: CLIP's split of the prompt, the cut at 77 tokens marked, the dropped words greyed
TOKEN_COLOURS = {"start / end": "#9ca3af", "word": "#60a5fa", "cut off (past 77 tokens)": "#e5e7eb",
                 "T5 token": "#34d399", "T5: cut off (past its window)": "#d1fae5"}
TOKEN_KINDS = {"start": "start / end", "end": "start / end", "word": "word", "dropped": "cut off (past 77 tokens)"}
T5_KINDS = {"end": "T5 token", "word": "T5 token", "dropped": "T5: cut off (past its window)"}

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

JOINT_NOTE = (
    "SD3's MMDiT has no cross-attention: in each block, image patches and text tokens go into **one** attention "
    "together (joint attention), each kind with its own projections. The maps here are the image patches' queries "
    "over the text keys only: softmax(QK<sup>T</sup>/√d) renormalised over the text columns, averaged over the "
    "heads. The text is CLIP's 77 tokens (CLIP-L and CLIP-G side by side) followed by T5's (green chips; zeros "
    "when the model runs without T5). An MMDiT keeps one resolution, the patch grid (2x2 latent pixels a patch), "
    "through all its blocks, so you choose a **band of blocks** (its depth) instead of a resolution. The padding tokens take "
    "whatever the words do not. Each map is stretched to its own range; the text above it says how wide that "
    "range is.\n\n")


def token_chips(traj: Trajectory) -> list[tuple[str, str]]:
    """(text, kind) for gradio's HighlightedText: every token of the split prompt."""
    return [(t.text, (T5_KINDS if t.encoder == "T5" else TOKEN_KINDS)[t.kind]) for t in traj.attention.tokens]


def token_choices(traj: Trajectory) -> tuple[list[tuple[str, int]], int]:
    """The kept tokens as (label, index) radio choices, and the one to show first."""
    kept = traj.attention.kept
    label = {id(t): t.text + (" (T5)" if t.encoder == "T5" else "") for t in kept}
    choices = [(f"{label[id(t)]} ({k})" if list(label.values()).count(label[id(t)]) > 1 else label[id(t)], k)
               for k, t in enumerate(kept)]
    return choices, traj.attention.first


def attention_text(v: AttentionView, traj: Trajectory, resolution: str) -> str:
    a = traj.attention
    layers = sum(a.layers[g] for g in a.resolution_key(resolution))
    of = ATTENTION_OF[a.of].label.removeprefix("the ")
    words = v.together
    return (f"**“{html.escape(v.token)}”** ({of}) gets **{100 * v.share:.1f}%** of the attention at this step, averaged over "
            f"the image; its map here runs from {100 * v.low:.2f}% to {100 * v.high:.2f}% of a position's "
            f"attention (black to pale yellow). The {len(a.kept)} tokens shown take {100 * words:.0f}% together, the "
            f"{a.window - len(a.kept)} padding tokens the other {100 * (1 - words):.0f}%. Layers: {resolution} ({layers} "
            f"{'joint' if a.by_block else 'cross'}-attention layer{'s' * (layers != 1)}). Kept for this session: "
            f"{a.steps} steps x {len(a.kept)} tokens, "
            f"{a.nbytes / 1e6:.2f} MB.")


@dataclass
class AttentionSection:
    """What the trajectory part wires to: the section's inputs and outputs, and how to fill them."""

    token: gr.Radio
    resolution: gr.Radio
    outputs: list  # info, the map at the step, the map summed, the strip
    first_outputs: list  # chips, token radio, resolution radio, then `outputs`
    show: Callable  # (traj, step, token, resolution) -> `outputs`
    first: Callable  # (traj) -> `first_outputs`: a new trajectory's attention section
    chip_clicked: object  # the event of a click on a token's chip (it sets the token radio): chain the re-draw


def section(attention_view: Callable[..., AttentionView], traj_state: gr.State, joint: bool = False
            ) -> AttentionSection:
    """Lay out the attention section inside the current layout; a click on a token (its chip or its radio) or a
    resolution re-draws it. `joint`: the model is an MMDiT (SD3): joint attention, chosen by block."""
    # -- layout -------------------------------------------------------------------------------
    gr.Markdown("### Which word paints where: " + ("joint attention (MMDiT)" if joint else "cross-attention"))
    chips = gr.HighlightedText(label="The prompt as CLIP splits it" + (", then as T5 does" if joint else "")
                               + " (click a token to map it; words past a window, CLIP's 77 tokens"
                               + (" or T5's" if joint else "") + ", are cut)",
                               # the legend lists T5's kinds only for a model that has T5's tokens (SD3)
                               color_map={k: v for k, v in TOKEN_COLOURS.items() if joint or not k.startswith("T5")},
                               show_legend=True, combine_adjacent=False,
                               show_inline_category=False, interactive=False)
    with gr.Row():
        token_box = gr.Radio([], label="Token to map (click one)", scale=3)
        resolution_box = gr.Radio(["all"], value="all", label="Block (depth)" if joint else "Layer resolution", scale=1)
    info = gr.Markdown()
    with gr.Row():
        at_step = gr.Image(label="its map at this step, over the step's predicted image", format="png",
                           interactive=False, height=300, elem_classes=["pixels"])
        summed = gr.Image(label="its map summed over all steps, over the final image", format="png",
                          interactive=False, height=300, elem_classes=["pixels"])
    strip = gr.Gallery(label="every token, summed over all steps (caption: its share of the attention)",
                       columns=8, height="auto", object_fit="contain", format="png", allow_preview=False)
    gr.Markdown(JOINT_NOTE if joint else ATTENTION_NOTE)

    # -- handlers -----------------------------------------------------------------------------
    @shows_errors
    def show(traj: Trajectory | None, step: int, token, resolution):
        if traj is None or traj.attention is None or token is None:
            return [gr.skip()] * 4
        v = attention_view(traj, int(step) - 1, token, resolution)
        return attention_text(v, traj, resolution), v.at_step, v.summed, v.strip

    def first(traj: Trajectory):
        """What the section shows for a new trajectory: its tokens, and the first word's maps at the last step."""
        if traj.attention is None:
            return (gr.HighlightedText(value=None), gr.Radio(choices=[], value=None),
                    gr.Radio(choices=["all"], value="all"), "Recorded without attention maps.", None, None, None)
        choices, chosen = token_choices(traj)
        return (token_chips(traj), gr.Radio(choices=choices, value=chosen),
                gr.Radio(choices=traj.attention.resolution_names, value="all"), *show(traj, traj.steps, chosen, "all"))

    def on_chip(traj: Trajectory | None, evt: gr.SelectData):
        """A clicked chip chooses its token (the chips list the kept tokens first, then any cut off)."""
        if traj is None or traj.attention is None or evt.index is None:
            return gr.skip()
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return index if index < len(traj.attention.kept) else gr.skip()

    chip_clicked = chips.select(on_chip, traj_state, token_box, api_visibility="private", queue=False)
    outputs = [info, at_step, summed, strip]
    return AttentionSection(token_box, resolution_box, outputs, [chips, token_box, resolution_box, *outputs], show,
                            first, chip_clicked)


def api(attention: Callable[..., tuple[Trajectory, AttentionView]], form_inputs: list, section: AttentionSection,
        settings: Settings, model_box: gr.Dropdown | None = None) -> None:
    """The `attention` endpoint: a recording answered with one word's maps (a hidden button: API only)."""
    with gr.Row(visible=False):
        word_box = gr.Textbox(label="Word")
        button = gr.Button("attention")

    @shows_errors
    def on_attention(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, attention_of, word,
                     resolution, model="", progress=gr.Progress()):
        base = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height, model=model)
        req = InspectRequest(base, attention_of, word, resolution)
        for item in stream(attention, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                continue
            traj, v = item
            return v.strip, v.summed, attention_text(v, traj, req.resolution or "all")

    strip, summed, info = section.outputs[3], section.outputs[2], section.outputs[0]
    model = [model_box] if model_box is not None else []
    heavy(button.click, on_attention, [*form_inputs, word_box, section.resolution, *model], [strip, summed, info], settings,
          api_name="attention", preprocess=False)
