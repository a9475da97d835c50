"""The gradio UI: the only package that imports gradio. One module per tab; this one assembles them
and holds what the page says about the model (banner, example prompts)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground import parts
from playground.engine import Engine
from playground.loading import LoadedModel
from playground.models import Models
from playground.settings import ASSETS, CONTROLNETS, Settings
from playground.ui import anatomy, cache, control, grid, inspector, lesson, prompt, sessions, walk
from playground.ui.common import LABELS_CSS, PIXELS_CSS, PIXELS_JS
from playground.ui.fields import DEFAULTS, Fields, ModelFacts

CSS = """
#title h2 {margin: 0; font-size: 1.25em;}
#banner {padding: 4px 12px; border-radius: 8px; background: var(--block-background-fill);}
#banner summary {cursor: pointer;}
#banner.untrained {border-left: 6px solid #e0a000;}
.token-count {font-size: 0.85em; opacity: 0.85; padding: 0 4px;}
""" + PIXELS_CSS + LABELS_CSS

# prompts for a general text-to-image model (SD 1.5 and friends); the offline model lists its own
SD_EXAMPLES = (
    "a watercolor painting of a lighthouse on a cliff at sunset",
    "a photo of a red fox in a snowy forest, detailed, high quality",
    "a cosy cottage on a hill, sunny day, cartoon style",
)


def banner(models: LoadedModel | list[LoadedModel]) -> str:
    """One line for the top of the page: which model (or models), on what, and why."""
    if isinstance(models, LoadedModel) or len(models) == 1:
        return banner_one(models if isinstance(models, LoadedModel) else models[0])
    first = models[0]
    names = " and ".join(f"{m.name}{'' if m.trained else ' (UNTRAINED)'}" for m in models)
    knows = "".join(f" {m.name} is {m.description}." for m in models if m.description)
    return (f"Models: {names}, on {first.device.type} ({str(first.dtype).removeprefix('torch.')}), each loaded once; "
            f"every tab's Model menu picks one for its requests. Why: {first.reason}.{knows}")


def banner_html(models: list[LoadedModel]) -> str:
    """The banner as the page shows it: one line (which models, on what) that opens to the whole banner (why, what
    they know), so a projector's first screen keeps its height for the tab."""
    names = " and ".join(f"{m.name}{'' if m.trained else ' (UNTRAINED)'}" for m in models)
    first = models[0]
    line = (f"{'Models' if len(models) > 1 else 'Model'}: {names} on {first.device.type} "
            f"({str(first.dtype).removeprefix('torch.')}) · why and what {'they know' if len(models) > 1 else 'it knows'}")
    return f"<details><summary>{line}</summary>\n\n{banner(models)}\n</details>"


def banner_one(model: LoadedModel) -> str:
    """The banner of a process with one model."""
    trained = "" if model.trained else " — UNTRAINED (random weights: images are noise-like; it shows the mechanics)"
    compiled = (f" Compiled with torch.compile ({model.compiled}): a new size or batch compiles once, "
                "so its first request takes longer." if model.compiled else "")
    knows = f" It is {model.description}." if model.description else ""
    return (f"Model: {model.name} on {model.device.type} ({str(model.dtype).removeprefix('torch.')}){trained}. "
            f"Why: {model.reason}.{knows}{compiled}")


def examples(model: LoadedModel) -> list[str]:
    """Example prompts for the tabs: the model's own (the offline model's marker lists what it knows)."""
    return list(model.examples) or list(SD_EXAMPLES)


def facts(engine: Engine) -> ModelFacts:
    """What the form needs of one loaded model."""
    model, limits = engine.model, engine.limits
    own_nets = any(Path(model.source, f"controlnet-{kind}").is_dir() for kind in CONTROLNETS)
    return ModelFacts(model.name, engine.native_size, tuple(limits.schedulers), limits.shift, bool(limits.skip_layers),
                      limits.joint_attention, limits.refiner,
                      limits.channels, tuple(examples(model)), model.attention_example, model.vocabulary,
                      controlnets=own_nets or not model.offline, label=model_label(model, limits.summary),
                      cfg_scale=model.cfg_scale or DEFAULTS.cfg_scale)


def model_label(model: LoadedModel, summary: str) -> str:
    """The Model menu's words: the name, what kind of denoiser it is, and what it is still learning (its marker's
    word: the bundled MMDiT's shapes are still blobs)."""
    learning = f"; still learning {model.learning}" if model.learning else ""
    return f"{model.name} ({summary}{learning})"


def build_app(engines: Models | Engine, settings: Settings) -> gr.Blocks:
    """The whole playground: banner, then one tab per activity, every request on the model it names."""
    models = engines if isinstance(engines, Models) else Models([engines])
    loaded = [engine.model for engine in models.engines.values()]
    model = loaded[0]
    sessions.keep_ids()  # gradio 6 grows a session by a block on every streamed job without it
    fields = Fields(settings, 0, [], models=[facts(engine) for engine in models.engines.values()])
    with gr.Blocks(title="Diffusion Playground", delete_cache=cache_schedule(settings)) as demo:
        gr.Markdown("## Diffusion Playground · see how latent diffusion turns noise into a picture, step by step",
                    elem_id="title")
        gr.Markdown(banner_html(loaded), elem_id="banner", elem_classes=[] if all(m.trained for m in loaded) else ["untrained"])
        with gr.Tabs() as tabs:
            with gr.Tab("Lesson") as lesson_tab:
                lesson.build(models, fields, settings)
            with gr.Tab("Prompt"):
                prompt.build(models.generate, models.count_tokens, fields, settings)
            with gr.Tab("Grid"):
                grid.build(models.grid, models.grid_evaluations, fields, settings)
            with gr.Tab("ControlNet"):
                control.build(models.control, models.preprocess, models.detect_pose, models.draw_pose,
                              models.controlnet_source, fields, settings, offline=model.offline)
            with gr.Tab("Walk"):
                walk.build(models.walk, fields, settings)
            with gr.Tab("Latent inspector"):
                inspector.build(models.inspect, models.step_view, models.decode_x0, models.roundtrip,
                                models.attention_view, models.attention, fields, settings)
            anatomy.build(loaded=models.anatomy, families=parts.families,
                          schedules=lambda: parts.schedules_of(model))
        # a link in the page's address opens its tab with its settings; each tab can write the link to its own
        lesson.wire_links(demo, tabs, lesson_tab, {name: e.limits for name, e in models.engines.items()})
    cache.atomic_image_writes()  # two requests returning the same picture must not race on its cache file
    schedule = cache_schedule(settings)
    if schedule:  # gradio's delete_cache misses the images it wrote from PIL images: swept here too
        cache.start_sweeping(demo, age_seconds=schedule[1], every_seconds=schedule[0])
    return demo


def cache_schedule(settings: Settings) -> tuple[int, int] | None:
    """gradio's delete_cache (and ui/cache.py's sweep): every half hour (or sooner), delete its cached uploads and
    results older than CACHE_HOURS; None (CACHE_HOURS=0): keep them until the server stops. Gradio also empties the cache of an app
    that stops, and the cache is shared by content: so one process that runs several apps (the tests) sets 0."""
    if settings.cache_hours <= 0:
        return None
    age = max(60, int(settings.cache_hours * 3600))
    return min(1800, age), age


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for Blocks.launch (gradio 6 takes theme and css here)."""
    out = Path(settings.output_dir).resolve()
    example_dir = ASSETS / "examples"  # served to gr.Examples wherever the app was started from
    return dict(server_name=settings.host, server_port=settings.port, share=settings.share, css=CSS,
                head=PIXELS_JS, theme=gr.themes.Soft(), allowed_paths=[str(out), str(example_dir)],
                max_file_size=f"{settings.max_upload_mb}mb", state_session_capacity=settings.session_states)
