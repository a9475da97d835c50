"""Walk tab: frames from one prompt to another (their embeddings mixed) or one seed to another (their noise
slerped), shown as a looping animation and a strip."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from playground.outputs import Folder, save_walk
from playground.schema import MAX_WALK_FRAMES, WALKS, Progress, WalkRequest, WalkResult
from playground.settings import Settings
from playground.ui.common import heavy, running, shows_errors, status_line, stop_button, stream
from playground.ui.fields import Fields, generate_request

DEFAULTS = WalkRequest()


def summary(result: WalkResult) -> str:
    r, n = result.request, len(result.frames)
    how = (f"the embeddings of “{r.base.prompt}” mixed into “{r.to_prompt}”, all from seed {r.base.seed}"
           if r.between == "prompts" else f"the noise of seed {r.base.seed} slerped into seed {r.to_seed}, "
                                         f"all for “{r.base.prompt}”")
    return (f"**{n} frames**: {how}. {r.base.scheduler}, {r.base.steps} steps, CFG {r.base.cfg_scale:g}, "
            f"{r.base.width}x{r.base.height}; {result.unet_calls} model evaluations, each on the batch of all "
            f"{n} frames; {result.seconds:.2f} s ({result.seconds / n:.2f} s a frame).")


def build(walk: Callable[..., WalkResult], fields: Fields, settings: Settings) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    gr.Markdown("Walk from one picture to another in small steps. **Between two prompts**, every frame starts from "
                "the same noise and the prompt's embedding slides from one to the other: watch which features "
                "change first. **Between two seeds**, the prompt stays and the starting noise slides (spherically, "
                "so every frame's noise stays as loud as real noise): watch the layout move. All frames run as one "
                "batch.")
    with gr.Row():
        with gr.Column(scale=5):
            def action():
                """Where the walk goes and the action, right under where it starts: on a projector's first screen."""
                to_prompt = gr.Textbox(label="Prompt to walk to (between prompts)", lines=2,
                                       value=fields.examples[1] if len(fields.examples) > 1 else "")
                with gr.Row():
                    run = gr.Button("Walk", variant="primary", scale=3)
                    stop = gr.Button("Stop", variant="stop", scale=1)
                return to_prompt, run, stop, status_line(), gr.Markdown()

            form = fields.form(action=action)
            to_prompt_box, run, stop, status, info = form.action
            form.steps.value = DEFAULTS.base.steps  # 12: a walk runs every frame at once
            shift_box = fields.shift()  # a flow model's (shown for one)
            fields.follow(form.model, shift=shift_box)
            between_box = gr.Radio([(label, key) for key, label in WALKS.items()], value=DEFAULTS.between,
                                   label="Walk between")
            with gr.Row():
                to_seed_box = gr.Number(value=DEFAULTS.to_seed, precision=0, label="Seed to walk to (between seeds; "
                                                                                   "-1 = random)")
                frames_box = gr.Slider(2, MAX_WALK_FRAMES, value=DEFAULTS.frames, step=1, label="Frames")
        with gr.Column(scale=6):
            animation = gr.Image(label="The walk, there and back (GIF)", type="filepath", interactive=False,
                                 height=300, elem_classes=["pixels"], elem_id="walk-animation")
            # its title is drawn in the picture: the buttons go above it, not over it
            strip = gr.Image(label="Every frame, in order (PNG with the settings)", type="filepath", format="png",
                             interactive=False, height=260, elem_classes=["toolbar-above"])
            frames = gr.Gallery(label="Frames (each a PNG that restores in the Prompt tab)", format="png", columns=4,
                                height="auto", object_fit="contain", allow_preview=False)

    @shows_errors
    def on_walk(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, between, to_prompt,
                to_seed, frames_count, shift=0.0, model="", progress=gr.Progress()):
        base = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height, shift=shift,
                                model=model)
        req = WalkRequest(base, between, to_prompt, to_seed, frames_count)
        for item in stream(walk, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                yield gr.skip(), gr.skip(), gr.skip(), running(item)
            else:
                gif, strip_path, items = save_walk(item, Folder.of(settings))
                yield gif, strip_path, items, summary(item)

    inputs = [form.prompt, form.negative_prompt, form.seed, form.steps, form.cfg_scale, form.scheduler, form.width,
              form.height, between_box, to_prompt_box, to_seed_box, frames_box, shift_box, form.model]
    event = heavy(run.click, on_walk, inputs, [animation, strip, frames, info], settings, api_name="walk",
                  preprocess=False, show_progress_on=status)
    stop_button(stop, event, info)
