"""What the tabs share: the GPU group every heavy event joins, request errors shown as gr.Error, and
running an Engine action in a worker thread while the handler streams its progress."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import inspect
import queue
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

import gradio as gr
from gradio.context import LocalContext

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
    cannot read them (a grid's cells). With `show_progress_on=line`, its errors are named on that line (noted())."""
    # with batching on, as many jobs as a batch holds are let in at once (they meet in the batcher's rounds, which
    # take the device's turn step by step, so the cores are not oversubscribed)
    kwargs.update(concurrency_id=GPU, concurrency_limit=max(settings.gpu_concurrency, settings.batch_jobs))
    if counted:
        kwargs["validator"] = fairness.of_app(settings.session_jobs, settings.queue_size).validator(inputs)
    return wired(triggers, lease(fn, lease_seconds(fn, settings, evaluations)), inputs, outputs, **kwargs)


def wired(triggers, fn: Callable, inputs, outputs, **kwargs):
    """`fn` wired to one trigger or a list of them; with `show_progress_on=line`, its errors are named on that line,
    beside the action (noted())."""
    line = kwargs.get("show_progress_on")
    if line is not None:
        fn = kept_for(fn, line)
    if isinstance(triggers, (list, tuple)):
        event = gr.on(triggers, fn, inputs, outputs, **kwargs)
    else:
        event = triggers(fn, inputs, outputs, **kwargs)
    if line is not None:
        noted(event, triggers, line)
    return event


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


def escaped(text: str) -> str:
    """`text` shown as it is in Markdown (a prompt's `*`, `_`, brackets and backslashes are not formatting)."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def status_line() -> gr.Markdown:
    """A line under an action's buttons that shows its progress while it runs (so the outputs stay in view) and
    the message of its error if it fails (noted()); not an output of the action (the API's outputs stay as they are)."""
    return gr.Markdown("", elem_classes=["status-line"])


class Kept:
    """The newest error message of each session's actions (by status line), until the line shows it."""

    def __init__(self, sessions: int = 10_000):
        self.sessions, self.messages, self.lock = sessions, OrderedDict(), threading.Lock()

    def put(self, session: str, line: int, message: str | None) -> None:
        with self.lock:
            self.messages[session, line] = message
            self.messages.move_to_end((session, line))
            while len(self.messages) > self.sessions:
                self.messages.popitem(last=False)

    def take(self, session: str, line: int) -> str | None:
        with self.lock:
            return self.messages.pop((session, line), None)


KEPT = Kept()


def session() -> str | None:
    """The browser session of the event being handled on this thread (gradio sets it), or None outside one."""
    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None)


def kept_for(fn: Callable, line: gr.Markdown) -> Callable:
    """`fn`, whose errors (gr.Error) are kept for `line` and raised with no pop-up: gradio's pop-ups gather every
    tab's errors in one box at the corner, far from the action. The API gets the message as before; outside a
    browser session (no session to show it to) the pop-up stays."""
    def start() -> None:  # a message of an earlier call not shown yet (the browser left) is no longer news
        who = session()
        if who is not None:
            KEPT.take(who, line._id)

    def kept(exc: gr.Error) -> gr.Error:
        who = session()
        if who is None:
            return exc
        KEPT.put(who, line._id, exc.message)
        return gr.Error(exc.message, duration=exc.duration, visible=False, title=exc.title, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream_wrapper(*args, **kwargs):
            start()
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as exc:
                raise kept(exc) from None
        return stream_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start()
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            raise kept(exc) from None
    return wrapper


def noted(event, triggers, line: gr.Markdown) -> None:
    """Name the error of `event` (its fn wrapped by kept_for) on `line`, beside the action, in that tab only; the
    next run of the action (`triggers`, one or a list) clears it."""
    def show(request: gr.Request):
        message = KEPT.take(request.session_hash, line._id)
        return f"⚠️ {escaped(message)}" if message else gr.skip()

    event.failure(show, None, line, queue=False, api_visibility="private", show_progress="hidden")
    gr.on(list(triggers) if isinstance(triggers, (list, tuple)) else [triggers], None, None, line, js="() => ''",
          queue=False, api_visibility="private", show_progress="hidden")


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
# every row of a gallery is in view (gradio 6 boxes a gallery at 550 px and scrolls inside it, cutting its last row);
# an image with elem_classes=["toolbar-above"] (one with words drawn along its top) has its buttons in a row above it.
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
.toolbar-above .image-container {display: flex; flex-direction: column;}
.toolbar-above .image-container > .icon-button-wrapper {position: static !important; align-self: flex-end;
                                                        margin: 0 0 4px 0 !important;}
.toolbar-above .image-container > button {flex: 1 1 0; min-height: 0;}
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
                older = item
                kind, item = events.get()
                # and the newest preview: previews come a few times a second, between steps that carry none
                if kind == "step" and item.preview is None and older.preview is not None:
                    item = dataclasses.replace(item, preview=older.preview)
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
