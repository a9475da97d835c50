"""Prompt tab: text to image with a live preview, token counter and reproducible PNGs."""

from __future__ import annotations

from typing import Callable

import gradio as gr

from playground.metadata import read_png
from playground.outputs import Folder, save_images
from playground.schema import GenerateResult, Progress, TokenCount, TokenRequest
from playground.settings import Settings
from playground.ui import live
from playground.ui.common import heavy, running, shows_errors, status_line, stop_button, stream
from playground.ui.fields import Fields, generate_request, size_note


# -- helpers ----------------------------------------------------------------------------------
def token_text(count: TokenCount, vocabulary: frozenset[str] = frozenset()) -> str:
    """'12 / 77 tokens', with a warning and the dropped words past the limit, and the words the model never saw."""
    text = f"{count.used} / {count.limit} tokens" + (f" (each of its {count.encoders} CLIP text encoders)"
                                                   if count.encoders > 1 else "")
    if count.dropped:
        text = f"⚠️ {text}: CLIP only reads {count.limit}, so it will not see: “{count.dropped}”"
    if count.t5 is not None:  # SD3: T5 reads the same prompt through its own, longer window
        t5 = count.t5
        text += f"  \nT5: {t5.used} / {t5.limit} tokens" + (f": ⚠️ T5 will not see “{t5.dropped}”" if t5.dropped else "")
    if count.unknown:
        words = " and ".join(", ".join(f"“{w}”" for w in count.unknown).rsplit(", ", 1))
        text += (f"  \n⚠️ {words} {'is not a word' if len(count.unknown) == 1 else 'are not words'} this model "
                 f"knows: it draws whatever it makes of the letters. It knows: {', '.join(sorted(vocabulary))}.")
    return text


def summary(result: GenerateResult, native: int) -> str:
    r = result.request
    n = len(result.images)
    lines = [
        f"**Seed {r.seed}**" + (f" (images use {r.seed}…{r.seed + n - 1})" if n > 1 else "")
        + (f" on {r.model}" if r.model else ""),
        f"{r.scheduler}, {r.steps} steps, CFG {r.cfg_scale:g}" + (f" to {r.cfg_stop:g} of the steps" if r.cfg_stop < 1 else "")
        + f", {r.width}x{r.height}"
        + (f", shift {r.shift:g}" if r.shift else "") + (f", refiner from {r.refiner_start:g}" if r.refiner_start else "")
        + (f", skip-layer guidance {r.skip_layer_guidance:g} (blocks {', '.join(map(str, r.skip_layers))})"
           if r.skip_layer_guidance else ""),
        f"{result.unet_calls} model evaluations per image; {result.seconds:.2f} s ({result.seconds / n:.2f} s per image)",
    ]
    if any(g.nsfw for g in result.images):
        lines.append("⚠️ The model's safety checker blacked out at least one image.")
    if not r.prompt.strip():
        lines.append("The prompt was empty: this is the model's unconditional picture, the one CFG pushes away from.")
    lines.append(size_note(r.width, r.height, native))
    return "  \n".join(line for line in lines if line)


def build(
    generate: Callable[..., GenerateResult],
    count_tokens: Callable[[TokenRequest], TokenCount],
    fields: Fields,
    settings: Settings,
) -> None:
    """Lay out the tab inside the current Blocks and wire its events."""
    # -- layout -------------------------------------------------------------------------------
    with gr.Row():
        with gr.Column(scale=5):
            model_box = fields.model()
            prompt_box = fields.prompt(lines=3, examples=False)
            counted = count_tokens(TokenRequest(prompt_box.value, model_box.value))
            prompt_tokens = gr.Markdown(token_text(counted, fields.vocabulary),
                                        elem_classes=["token-count"])
            # the action right under the prompt: on a projector's first screen (1280x720) with the prompt
            with gr.Row():
                run = gr.Button("Generate", variant="primary", scale=3)
                stop = gr.Button("Stop", variant="stop", scale=1)
            live_box = live.checkbox()
            status = status_line()
            negative_box = fields.negative_prompt(lines=2)
            negative_tokens = gr.Markdown(token_text(count_tokens(TokenRequest("", model_box.value)), fields.vocabulary),
                                          elem_classes=["token-count"])
            if fields.examples:
                gr.Examples([[e] for e in fields.examples], inputs=[prompt_box], label="Prompts this model knows")
            with gr.Row():
                scheduler_box, steps_box = fields.scheduler(), fields.steps()
            with gr.Row():
                cfg_box, stop_box = fields.cfg_scale(), fields.cfg_stop()
            width_box, height_box = fields.size()
            images_box = fields.num_images()
            shift_box, refiner_box, slg_box = fields.shift(), fields.refiner_start(), fields.skip_layer_guidance()
            with gr.Row():
                seed_box = fields.seed(scale=3)
                reuse = gr.Button("♻ Reuse last seed", scale=1)
            restore = gr.File(label="Drop a PNG made here (or by A1111) to restore its settings",
                              file_types=[".png"], type="filepath", height=140)
            restored = gr.Markdown(elem_id="restored")  # what a restore set, in view of the drop box
        with gr.Column(scale=6):
            # 290: a 128 px picture at twice its size, under its label
            # one line of label, so that a 128 px picture gets twice its size; docs/prompt.md says how each is drawn
            preview = gr.Image(label="Preview: the model's guess while it runs (Generate or Live), then Live's picture",
                               format="png",
                               interactive=False, height=290, elem_classes=["pixels"], elem_id="prompt-preview")
            gallery = gr.Gallery(label="Images (PNG with settings inside)", format="png", columns=2,
                                 object_fit="contain", height="auto", fit_columns=False, elem_classes=["pixels"])
            info = gr.Markdown(label="Run info")
            # shown once there is a seed to reuse (an empty number box would read as seed 0)
            seed_used = gr.Number(None, label="Seed used", precision=0, interactive=False, visible=False)

    # -- handlers -----------------------------------------------------------------------------
    @shows_errors
    def on_generate(prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, num_images, shift=0.0,
                    refiner_start=0.0, skip_layer_guidance=0.0, model="", cfg_stop=1.0, progress=gr.Progress()):
        req = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                               cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height,
                               num_images=num_images, shift=shift, refiner_start=refiner_start,
                               skip_layer_guidance=skip_layer_guidance, model=model, cfg_stop=cfg_stop)
        for item in stream(generate, req):
            if isinstance(item, Progress):
                progress((item.step, item.total), desc=item.label, unit="steps")
                # the Engine makes a preview a few times a second: each yield is encoded and sent to
                # the browser, and sending one every step made a 50-step request 1.5x slower on 2 cores
                if item.preview is not None:
                    yield item.preview, gr.skip(), running(item), gr.skip()
            else:
                files = save_images(item.images, Folder.of(settings))
                yield files[0][0], files, summary(item, fields.facts(item.request.model).native_size), item.request.seed

    @shows_errors
    def on_restore(path, model=""):
        if not path:
            return [gr.skip()] * 14
        p = read_png(path)
        # the PNG's model when it is loaded here (its settings follow it), else the one chosen now
        f = fields.facts(p.model if p.model in {m.name for m in fields.models} else model)
        if p.sampler not in f.schedulers:
            gr.Warning(f"Sampler {p.sampler!r} is not in this playground; the scheduler was left as it was")
        if not f.name or f.name == model:  # the form is this model's already
            return (p.prompt, p.negative_prompt, p.seed, p.steps, p.cfg_scale,
                    p.sampler if p.sampler in f.schedulers else gr.skip(), p.width, p.height,
                    p.shift if f.takes_shift else gr.skip(), p.refiner_start if f.refiner else gr.skip(),
                    p.skip_layer_guidance if f.skips_layers else gr.skip(),
                    f"Restored settings from the PNG (model: {p.model or 'unknown'}).", gr.skip(), p.cfg_stop)
        # another loaded model's PNG: its model, its schedulers and the settings that show for it, in one update
        return (p.prompt, p.negative_prompt, p.seed, p.steps, p.cfg_scale,
                gr.Dropdown(choices=list(f.schedulers),
                            value=p.sampler if p.sampler in f.schedulers else f.default_scheduler), p.width, p.height,
                gr.Slider(visible=f.takes_shift, value=p.shift if f.takes_shift else 0.0),
                gr.Slider(visible=f.refiner, value=p.refiner_start if f.refiner else 0.0),
                gr.Slider(visible=f.skips_layers, value=p.skip_layer_guidance if f.skips_layers else 0.0),
                f"Restored settings from the PNG (model: {p.model}, chosen in the Model menu).", f.name, p.cfg_stop)

    # -- events -------------------------------------------------------------------------------
    fields.follow(model_box, scheduler_box, (width_box, height_box), shift_box, slg_box, refiner_box, cfg=cfg_box)
    inputs = [prompt_box, negative_box, seed_box, steps_box, cfg_box, scheduler_box, width_box, height_box, images_box,
              shift_box, refiner_box, slg_box, model_box, stop_box]
    # preprocess=False: the inputs are plain values, and the Engine's validation names the field and
    # its range ("steps must be an integer from 1 to 100, got 500"), which gradio's own check does not
    # progress and errors show on the status line under the buttons: the live preview and the gallery stay in view
    # the button and Enter in the prompt box are one event, with one API name
    gen = heavy([run.click, prompt_box.submit], on_generate, inputs, [preview, gallery, info, seed_used], settings,
                api_name="generate", preprocess=False, show_progress_on=status)
    live_run = live.wire(live_box, [prompt_box, negative_box, seed_box, steps_box, cfg_box, stop_box, scheduler_box,
                                    model_box],
                         [prompt_box, negative_box, seed_box, steps_box, cfg_box, scheduler_box, width_box, height_box,
                          shift_box, refiner_box, slg_box, model_box, stop_box], generate, preview, info, settings,
                         preset_outputs=[steps_box, seed_box, images_box])
    stop_button(stop, [gen] + ([live_run] if live_run else []), info)
    gen.success(lambda: gr.Number(visible=True), None, seed_used, api_visibility="private", queue=False)
    for box, counter in ((prompt_box, prompt_tokens), (negative_box, negative_tokens)):
        for trigger in (box.change, model_box.change):  # each model counts with its own tokenizers
            trigger(lambda text, model: token_text(count_tokens(TokenRequest(text, model)),
                                                   fields.facts(model).vocabulary),
                    [box, model_box], counter, show_progress="hidden", trigger_mode="always_last",
                    api_visibility="private", queue=False)
    reuse.click(lambda s: s if s is not None else -1, seed_used, seed_box, api_visibility="private", queue=False)
    restore.upload(on_restore, [restore, model_box], [prompt_box, negative_box, seed_box, steps_box, cfg_box,
                                                      scheduler_box, width_box, height_box, shift_box, refiner_box,
                                                      slg_box, restored, model_box, stop_box], api_name="restore")
