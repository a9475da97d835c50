"""Diffusion Playground: read settings, load the one pipeline, build the UI, launch."""

import logging

from playground.engine import Engine
from playground.loading import load_model
from playground.settings import parse_args
from playground.ui import build_app, launch_options


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_args()
    engine = Engine(load_model(settings), settings)
    logging.getLogger("playground").info(engine.banner())
    demo = build_app(engine, settings)
    demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
