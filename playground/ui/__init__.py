"""The gradio UI: the only package that imports gradio. One module per tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from playground.engine import Engine
from playground.settings import ASSETS, Settings
from playground.ui import control, grid, inspector, prompt

CSS = """
#banner {padding: 6px 12px; border-radius: 8px; background: var(--block-background-fill);}
#banner.untrained {border-left: 6px solid #e0a000;}
.token-count {font-size: 0.85em; opacity: 0.85; padding: 0 4px;}
"""

GPU = "gpu"  # the one concurrency group every tab's model work goes through


def build_app(engine: Engine, settings: Settings) -> gr.Blocks:
    """The whole playground: banner, then one tab per activity, all on the same Engine."""
    with gr.Blocks(title="Diffusion Playground") as demo:
        gr.Markdown("# Diffusion Playground\nSee how latent diffusion turns noise into a picture, step by step.")
        gr.Markdown(engine.banner(), elem_id="banner",
                    elem_classes=[] if engine.model.trained else ["untrained"])
        with gr.Tab("Prompt"):
            prompt.build(
                generate=engine.generate,
                count_tokens=engine.count_tokens,
                scheduler_names=engine.scheduler_names,
                native_size=engine.native_size,
                settings=settings,
                examples=engine.examples,
                concurrency_id=GPU,
            )
        with gr.Tab("Grid"):
            grid.build(
                grid=engine.grid,
                scheduler_names=engine.scheduler_names,
                native_size=engine.native_size,
                settings=settings,
                examples=engine.examples,
                concurrency_id=GPU,
            )
        with gr.Tab("ControlNet"):
            control.build(
                control=engine.control,
                preprocess=engine.preprocess,
                controlnet_source=engine.controlnet_source,
                scheduler_names=engine.scheduler_names,
                native_size=engine.native_size,
                settings=settings,
                examples=engine.examples,
                concurrency_id=GPU,
            )
        with gr.Tab("Latent inspector"):
            inspector.build(
                inspect=engine.inspect,
                step_view=engine.step_view,
                decode_x0=engine.decode_x0,
                save_trajectory=engine.save_trajectory,
                roundtrip=engine.roundtrip,
                scheduler_names=engine.scheduler_names,
                native_size=engine.native_size,
                settings=settings,
                examples=engine.examples,
                concurrency_id=GPU,
            )
    return demo


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for Blocks.launch (gradio 6 takes theme and css here)."""
    out = Path(settings.output_dir).resolve()
    examples = ASSETS / "examples"  # served to gr.Examples wherever the app was started from
    return dict(server_name=settings.host, server_port=settings.port, share=settings.share, css=CSS,
                theme=gr.themes.Soft(), allowed_paths=[str(out), str(examples)],
                max_file_size=f"{settings.max_upload_mb}mb")
