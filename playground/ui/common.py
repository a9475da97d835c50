"""What the tabs share: running an Engine action in a worker thread while the handler streams."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

import gradio as gr

from playground.requests import InvalidRequest, Progress
from playground.sampling import Cancelled

# Components with elem_classes=["pixels"] scale images with nearest-neighbour sampling: the offline
# model's 128 px images show their real pixels as crisp squares, not a blur that looks like detail
# the model did not make. (Image views keep gradio's scale-down, so they are shown whole, 1:1; the
# galleries use object_fit="contain" and fit_columns=False, so a lone image is never cropped.)
PIXELS_CSS = """
.pixels img {image-rendering: pixelated;}
"""


def stream(action: Callable[..., Any], request: Any) -> Iterator[Progress | Any]:
    """Yield Progress (the newest only) while `action(request, on_progress=, cancel=)` runs, then its result.

    Errors come out as gr.Error with the Engine's message. When the consumer stops early (the browser
    left, or Stop cancelled the event), the action is cancelled at its next step.
    """
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work():
        try:
            events.put(("done", action(request, on_progress=lambda p: events.put(("step", p)), cancel=cancel)))
        except BaseException as exc:  # handed over to the request's own thread and raised there
            events.put(("error", exc))

    threading.Thread(target=work, daemon=True, name=getattr(action, "__name__", "action")).start()
    try:
        while True:
            kind, item = events.get()
            while kind == "step" and not events.empty():  # skip stale progress, keep the newest
                kind, item = events.get()
            if kind == "step":
                yield item
            elif kind == "error":
                if isinstance(item, InvalidRequest):
                    raise gr.Error(str(item))
                if isinstance(item, Cancelled):
                    raise gr.Error(f"Stopped: {item}")
                raise gr.Error(f"{type(item).__name__}: {item}")
            else:
                yield item
                return
    finally:
        cancel.set()
