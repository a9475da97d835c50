"""Diffusion Playground: read settings, load each model once, build the UI, launch."""

import logging
import threading

from playground import poses
from playground.engine import Engine
from playground.loading import load_models
from playground.models import Models
from playground.settings import parse_args
from playground.threads import off_main_thread
from playground.ui import banner, build_app, launch_options


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_args()
    # torch work on the main thread would slow every request's worker thread 2.3x (threads.py)
    models = off_main_thread(lambda: Models([Engine(m, settings) for m in load_models(settings)]))
    log = logging.getLogger("playground")
    log.info(banner([engine.model for engine in models.engines.values()]))
    for engine in models.engines.values() if settings.compile else ():
        log.info("warming up the compiled %s at %dx%d ...", engine.model.name, engine.native_size, engine.native_size)
        log.info("compiled and warmed up in %.1f s", off_main_thread(engine.warm_up, "warm-up"))
    threading.Thread(target=poses.preload, daemon=True, name="preload-poses").start()  # seconds of imports
    demo = build_app(models, settings)
    demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
