"""What the tabs share: the GPU group every heavy event joins, request errors shown as gr.Error, and
running an Engine action in a worker thread while the handler streams its progress."""

from __future__ import annotations

import functools
import inspect
import queue
import threading
from typing import Any, Callable, Iterator

import gradio as gr

from playground.errors import Cancelled, InvalidRequest
from playground.gpu import gpu
from playground.requests import Progress
from playground.settings import Settings

GPU = "gpu"  # the one concurrency group every tab's model work goes through


def heavy(triggers, fn: Callable, inputs, outputs, settings: Settings, **kwargs):
    """Wire `fn` to one trigger (`button.click`, `event.then`) or a list of them as model work: a ZeroGPU
    lease (`gpu`), and the one concurrency group shared by every tab, `settings.gpu_concurrency` at once."""
    kwargs.update(concurrency_id=GPU, concurrency_limit=settings.gpu_concurrency)
    if isinstance(triggers, (list, tuple)):
        return gr.on(triggers, gpu(fn), inputs, outputs, **kwargs)
    return triggers(gpu(fn), inputs, outputs, **kwargs)


def shows_errors(fn: Callable) -> Callable:
    """A handler whose request errors (InvalidRequest: a bad value, named) are shown as gr.Error beside the
    action, for plain handlers and generators alike."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except InvalidRequest as exc:
                raise gr.Error(str(exc)) from None
        return stream_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from None
    return wrapper

# Components with elem_classes=["pixels"] show small images (the offline model's 128 px) whole, at a
# whole-number scale that fits their box, with nearest-neighbour sampling: every pixel the model made
# is a crisp square, not a blur that looks like detail it did not make. The CSS gives the sampling;
# the script in the page's head picks the scale when an image loads and when the window resizes.
PIXELS_CSS = """
.pixels img {image-rendering: pixelated;}
"""
PIXELS_JS = """<script>
(() => {
  const LARGEST = 256;  // images up to this many pixels a side get a whole-number scale
  function fit(img) {
    const w = img.naturalWidth, h = img.naturalHeight, box = img.parentElement;
    if (!w || !box || Math.max(w, h) > LARGEST) return;
    img.style.width = img.style.height = img.style.maxWidth = img.style.maxHeight = "";
    const r = box.getBoundingClientRect();
    const k = Math.max(1, Math.floor(Math.min(r.width / w, r.height / h)));
    Object.assign(img.style, {width: `${w * k}px`, height: `${h * k}px`, maxWidth: "none", maxHeight: "none",
                              objectFit: "fill", margin: "auto"});
  }
  const all = () => document.querySelectorAll(".pixels img").forEach(fit);
  document.addEventListener("load", (e) => {
    if (e.target.tagName === "IMG" && e.target.closest(".pixels")) fit(e.target);
  }, true);
  let timer;
  window.addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(all, 100); });
})();
</script>"""


def stream(action: Callable[..., Any], request: Any) -> Iterator[Progress | Any]:
    """Yield Progress (the newest only) while `action(request, on_progress=, cancel=)` runs, then its result.

    A request error is raised as it is (the handler's `shows_errors` shows it), any other as gr.Error. When the consumer stops early (the browser
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
                    raise item  # named by the handler's shows_errors
                if isinstance(item, Cancelled):
                    raise gr.Error(f"Stopped: {item}")
                raise gr.Error(f"{type(item).__name__}: {item}")
            else:
                yield item
                return
    finally:
        cancel.set()
