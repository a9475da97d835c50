"""Diffusion Playground: read settings, load each model once, build the UI, launch."""

from playground import gpu  # noqa: I001 (first: on ZeroGPU `spaces` is imported before anything touches torch)

import logging
import threading
from typing import TYPE_CHECKING

from playground import poses
from playground.engine import Engine
from playground.loading import load_models
from playground.models import Models
from playground.settings import Settings, parse_args
from playground.threads import off_main_thread
from playground.ui import banner, build_app, launch_options

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("playground")


def load(settings: Settings) -> Models:
    """Every model the settings ask for, loaded once. On ZeroGPU on the main thread, with every ControlNet and the
    pose detector (its CUDA emulation holds there only, and a lease's own loads are lost with its worker);
    elsewhere on a thread of its own: torch work on the main thread would slow every request's worker thread 2.3x
    (threads.py)."""
    if not gpu.ZERO_GPU:
        return off_main_thread(lambda: Models([Engine(m, settings) for m in load_models(settings)]))
    models = Models([Engine(m, settings) for m in load_models(settings)])
    for engine in models.engines.values():
        for line in engine.annotators.preload():
            log.info("%s: %s", engine.model.name, line)
    return models


def build(settings: Settings) -> tuple[Models, "gr.Blocks"]:
    """The loaded models and the app on them, not yet launched."""
    if gpu.ZERO_GPU and settings.compile:
        raise SystemExit("--compile: ZeroGPU does not run torch.compile (each call runs in a worker forked for its "
                         "GPU lease); leave PLAYGROUND_COMPILE unset there")
    models = load(settings)
    log.info(banner([engine.model for engine in models.engines.values()]))
    for engine in models.engines.values() if settings.compile else ():
        log.info("warming up the compiled %s at %dx%d ...", engine.model.name, engine.native_size, engine.native_size)
        log.info("compiled and warmed up in %.1f s", off_main_thread(engine.warm_up, "warm-up"))
    threading.Thread(target=poses.preload, daemon=True, name="preload-poses").start()  # seconds of imports
    return models, build_app(models, settings)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_args()
    _, demo = build(settings)
    demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
