"""What the tabs share: the GPU group every heavy event joins, request errors shown as gr.Error, and
running an Engine action in a worker thread while the handler streams its progress."""

from __future__ import annotations

import ctypes
import functools
import inspect
import queue
import re
import threading
import time
from typing import Any, Callable, Iterator

import gradio as gr

from playground.errors import Cancelled, InvalidRequest
from playground.gpu import lease
from playground.schema import Progress
from playground.settings import Settings
from playground.ui import fairness

GPU = "gpu"  # the one concurrency group every tab's model work goes through


def heavy(triggers, fn: Callable, inputs, outputs, settings: Settings, counted: bool = True,
          evaluations: Callable[[dict], int] | None = None, **kwargs):
    """Wire `fn` to one trigger (`button.click`, `event.then`) or a list of them as model work: a ZeroGPU
    lease sized by its cost (`lease_seconds`), and the one concurrency group shared by every tab,
    `settings.gpu_concurrency` at once; each browser session may hold `settings.session_jobs` of them at once
    (fairness.py). `counted=False` for the small follow-ups of a job already let in (the inspector's x0 decode as
    the visitor scrubs: one pending at a time, trigger_mode "always_last"), which a visitor must never see refused.
    `evaluations(values)`: the model evaluations a call costs, from its values by name, where `model_evaluations`
    cannot read them (a grid's cells)."""
    # with batching on, as many jobs as a batch holds are let in at once (they meet in the batcher's rounds, which
    # take the device's turn step by step, so the cores are not oversubscribed)
    kwargs.update(concurrency_id=GPU, concurrency_limit=max(settings.gpu_concurrency, settings.batch_jobs))
    if counted:
        kwargs["validator"] = fairness.of_app(settings.session_jobs, settings.queue_size).validator(inputs)
    leased = lease(fn, lease_seconds(fn, settings, evaluations))
    if isinstance(triggers, (list, tuple)):
        return gr.on(triggers, leased, inputs, outputs, **kwargs)
    return triggers(leased, inputs, outputs, **kwargs)


LEASE_FLOOR = 10  # seconds: a call with no denoising (a VAE round trip, one x0 decode, a pose) and the lease's start


def model_evaluations(values: dict) -> int:
    """The denoiser calls a handler's values ask for, read by their API names: steps for each image (or each
    frame of a walk); 0 for a handler that does not denoise. A value that is not a number counts as its default
    (the Engine names it as bad before any work starts)."""
    def whole(name: str, default: int) -> int:
        try:
            return max(0, int(float(values.get(name, default))))
        except (TypeError, ValueError):
            return default
    if "steps" not in values:
        return 0
    return whole("steps", 25) * max(1, whole("num_images", 1), whole("frames_count", 1))


def lease_seconds(fn: Callable, settings: Settings, evaluations: Callable[[dict], int] | None = None) -> Callable[..., int]:
    """What a call of `fn` asks ZeroGPU for, from its own arguments: `settings.gpu_step_seconds` for each model
    evaluation at 512x512 (scaled by the request's pixels), on top of LEASE_FLOOR, at most
    `settings.max_gpu_seconds`. A shorter lease is served sooner: ZeroGPU queues by the duration asked for."""
    signature = inspect.signature(fn)

    def seconds(*args, **kwargs) -> int:
        try:  # partial: gradio adds its own arguments (a gr.Request, a gr.Progress) where the handler takes them
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:  # not a call the handler takes: gradio names it; ask for the most
            return settings.max_gpu_seconds
        bound.apply_defaults()
        values = bound.arguments
        calls = (evaluations or model_evaluations)(values)
        try:
            pixels = int(values.get("width", 512)) * int(values.get("height", 512)) / (512 * 512)
        except (TypeError, ValueError):
            pixels = 1.0
        asked = LEASE_FLOOR + calls * settings.gpu_step_seconds * max(pixels, 0.25)
        return int(min(settings.max_gpu_seconds, max(LEASE_FLOOR, round(asked))))
    return seconds


ERROR_SECONDS = 20  # long enough to read a message and fix the value; a toast that never left would cover outputs


def error(message: str) -> gr.Error:
    """A message for the page, shown for ERROR_SECONDS (or until closed), while the action's status line keeps
    the error badge and every output keeps what it showed."""
    return gr.Error(message, duration=ERROR_SECONDS, print_exception=False)


def shows_errors(fn: Callable) -> Callable:
    """A handler whose request errors (InvalidRequest: a bad value, named) are shown as a message, for plain
    handlers and generators alike; the API returns them as errors."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except InvalidRequest as exc:
                raise error(str(exc)) from None
        return stream_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InvalidRequest as exc:
            raise error(str(exc)) from None
    return wrapper


def status_line() -> gr.Markdown:
    """A line under an action's buttons that shows its progress while it runs (so the outputs stay in view) and
    its error badge if it fails; not an output of any event (the API's outputs stay as they are)."""
    return gr.Markdown("", elem_classes=["status-line"])


def running(p: Progress, unit: str = "step") -> str:
    """An action's info line while it runs (Stop reads it back); a job waiting for a place in a shared batch says
    where it stands ("Waiting: 2 jobs ahead, about 6 s")."""
    if p.step == 0 and p.label.startswith("waiting"):
        return f"Waiting: {p.label.removeprefix('waiting: ')}"
    return f"Running: {p.label}, {unit} {p.step} of {p.total}"


def stopped(note: str | None) -> str:
    """The info line after Stop: at which step it stopped, from what the line said last."""
    found = re.search(r"(step|model evaluation) (\d+) of (\d+)", note or "")
    if not found:
        return "**Stopped** before the first step."
    return (f"**Stopped** at {found[1]} {found[2]} of {found[3]}: nothing was finished or saved. The preview shows "
            "its last view before the stop; any finished images beside it are from an earlier run.")


def stopped_again(note: str | None) -> str:
    """stopped(), once more a moment later: a progress line already on its way when Stop was clicked may have
    replaced the first note (it then says the later step); a note already there stays as it is."""
    time.sleep(0.5)
    return stopped(note)


def stop_button(stop: gr.Button, event, note: gr.Markdown) -> None:
    """Stop cancels `event` (or a list of events: at their next denoising step) and says in its info line `note`
    where it stopped."""
    events = list(event) if isinstance(event, (list, tuple)) else [event]
    stop.click(stopped, note, note, cancels=events, api_visibility="private", queue=False).then(
        stopped_again, note, note, api_visibility="private", queue=False)

# Components with elem_classes=["pixels"] show small images (the offline model's 128 px) whole, at a
# whole-number scale that fits their box, with nearest-neighbour sampling: every pixel the model made
# is a crisp square, not a blur that looks like detail it did not make. The CSS gives the sampling;
# the script in the page's head picks the scale when an image loads and when the window resizes.
PIXELS_CSS = """
.pixels img {image-rendering: pixelated;}
"""
# A component's label sits above what it shows, never over the top of an image, a plot or an upload box;
# a status line shows gradio's place in the queue ("queue: 2/3 | 1.2/7.6s") in its height, beside a small spinner;
# a plot's axis labels are drawn whole, below the plot; a gallery's captions are read whole, under their images, and
# every row of a gallery is in view (gradio 6 boxes a gallery at 550 px and scrolls inside it, cutting its last row).
LABELS_CSS = """
.block label[data-testid="block-label"].float {position: static; margin-bottom: 4px;}
.block:has(> label[data-testid="block-label"].float) {display: flex; flex-direction: column;}
.block:has(> label[data-testid="block-label"].float) > .image-container {flex: 1 1 0; min-height: 0;}
.status-line {min-height: 2.2em; font-size: 0.9em;}
.status-line [data-testid="status-tracker"].full {flex-direction: row !important; justify-content: center !important;
                                                   gap: 8px;}
.status-line [data-testid="status-tracker"].full svg {width: 1.4em !important; height: 1.4em !important;}
.status-line [data-testid="status-tracker"] .meta-text-center {position: static !important; transform: none !important;}
.thumbnail-item {display: flex !important; flex-direction: column !important; height: auto !important;
                 aspect-ratio: auto !important;}
.thumbnail-item .caption-label {position: static !important; transform: none !important; margin: 4px auto 0 !important;
                                max-width: 100% !important; white-space: normal !important; overflow: visible !important;
                                text-overflow: clip !important;}
.grid-wrap.fixed-height {height: auto !important; max-height: none !important; overflow: visible !important;}
.vega-embed svg.marks {overflow: visible;}
.block:has(> .vega-embed) {overflow: visible !important; padding-bottom: 36px !important;}
"""
PIXELS_JS = """<script>
(() => {
  const LARGEST = 256;  // images up to this many pixels a side get a whole-number scale
  function fit(img) {
    const w = img.naturalWidth, h = img.naturalHeight, box = img.parentElement;
    // clear the size set for the image shown before (a larger one is drawn by the page's own rules)
    for (const k of ["width", "height", "maxWidth", "maxHeight", "objectFit", "margin"]) img.style[k] = "";
    if (!w || !box || Math.max(w, h) > LARGEST) return;
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


try:
    _LIBC = ctypes.CDLL("libc.so.6")  # glibc: malloc_trim
except OSError:  # another C library (macOS, musl): nothing to trim
    _LIBC = None


def trim_memory() -> None:
    """Give the memory a finished job freed back to the system (glibc's malloc_trim): glibc otherwise keeps freed
    blocks in its per-thread arenas, and every job runs on a thread of its own, so the server's resident size
    would count memory it no longer uses. (Not measured on its own: it went in with the MediaPipe fix.)"""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def stream(action: Callable[..., Any], request: Any) -> Iterator[Progress | Any]:
    """Yield Progress (the newest only) while `action(request, on_progress=, cancel=)` runs, then its result.

    A request error is raised as it is (the handler's `shows_errors` shows it), any other as gr.Error. When the
    consumer stops early (the browser left, or Stop cancelled the event), the action is cancelled at its next step.
    """
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work():
        try:
            events.put(("done", action(request, on_progress=lambda p: events.put(("step", p)), cancel=cancel)))
        except BaseException as exc:  # handed over to the request's own thread and raised there
            events.put(("error", exc))
        finally:
            trim_memory()

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
                    raise error(f"Stopped: {item}")
                raise error(f"{type(item).__name__}: {item}")
            else:
                yield item
                return
    finally:
        cancel.set()
