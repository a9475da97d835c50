"""Diffusion Playground: read settings, load the one pipeline, build the UI, launch."""

import logging
import threading

from playground import poses
from playground.engine import Engine
from playground.loading import load_model
from playground.settings import parse_args
from playground.threads import off_main_thread
from playground.ui import banner, build_app, launch_options


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_args()
    # torch work on the main thread would slow every request's worker thread 2.3x (threads.py)
    engine = off_main_thread(lambda: Engine(load_model(settings), settings))
    log = logging.getLogger("playground")
    log.info(banner(engine.model))
    if settings.compile:
        log.info("warming up the compiled model at %dx%d ...", engine.native_size, engine.native_size)
        log.info("compiled and warmed up in %.1f s", off_main_thread(engine.warm_up, "warm-up"))
    threading.Thread(target=poses.preload, daemon=True, name="preload-poses").start()  # seconds of imports
    demo = build_app(engine, settings)
    demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
