"""What the tabs share: running an Engine action in a worker thread while the handler streams."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from playground.engine import InvalidRequest, Progress
from playground.sampling import Cancelled


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


def output_stem(out_dir: Path) -> Path:
    """A fresh, sortable file stem in the output folder (made if missing): 20261126-131427-2cfb48."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
