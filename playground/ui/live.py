"""Live mode in the Prompt tab: every edit of the form draws the picture again, with no click.

How an edit becomes a picture:
1. Each edit of a watched field (prompt, negative prompt, seed, steps, CFG, scheduler, model, and so a word's weight
   typed into the prompt) is stamped with the page's clock at once and the stamp is noted on the server (a
   small unqueued call, as the token counter makes): a live run started before that stamp is stale, and stops at
   its next denoising step.
2. The edit waits DEBOUNCE_MS in the page; an edit made meanwhile takes its place (typing a word makes one run,
   not one a letter, when the keys come faster than that). Then it stamps a hidden `tick`.
3. The tick's change runs the request as it reads then (trigger_mode "always_last": while a run is still
   stopping, the newest edit waits, and only the newest).
4. While it runs, the Prompt tab's big image shows the model's guess (the predicted x0, a few times a second, as
   Generate shows it) once the run has taken QUIET_S; then the picture, with the engine's time beside it. Nothing is
   saved (Generate keeps it as a PNG: same settings, same seed, same picture).
(Gradio's own `cancels` would do step 1 too, but two cancels of one run, as fast typing sends, make its /cancel
route fail with a KeyError and a traceback in the server's log, gradio 6.31.)

Fair to the other visitors: a live run is an ordinary job in the one GPU queue, counted by fairness.py like a
click on Generate. A visitor holds at most one live job, waiting or running, however fast they type: newer edits
replace each other in the page instead of queueing, so other visitors' jobs keep their place in the queue.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from typing import Callable

import gradio as gr

from playground.errors import Cancelled, InvalidRequest
from playground.gpu import ZERO_GPU
from playground.schema import GenerateResult, Progress
from playground.settings import Settings
from playground.ui.common import escaped, heavy, running, stream
from playground.ui.fields import generate_request

# why Live is off on ZeroGPU: each run there is a GPU lease of its own, in a worker forked for it, and the record of
# which edits are stale lives in the main process, which that worker never sees
ZERO_GPU_NOTE = ("off on ZeroGPU: every run there waits for a GPU lease of its own, so a run a keystroke would be "
                 "a queue of leases; press Generate instead")
LIVE_STEPS = 8  # what turning Live on sets the steps to (at most): 0.2 s an image for the offline model on 2 cores
DEBOUNCE_MS = 50  # a key within this long of the last replaces its run before it starts; a later one stops it
# a run's progress and previews show once it has taken this long: a quick run's picture comes sooner without
# (a note each step put a quick run's key-press-to-picture from 0.48 s to 0.57 s on 2 cores)
QUIET_S = 0.4
SESSIONS = 10_000  # the newest edit's stamp is kept for this many sessions (the least recently edited go first)
# a watched field changed: its stamp, at once (Live on)
EDIT_JS = "(on, stamp) => on ? Date.now() : stamp"
# and, if no newer edit comes within DEBOUNCE_MS, the tick's stamp (its change starts the run)
TICK_JS = f"""async (on, tick) => {{
  if (!on) return tick;
  const mine = (window.__playgroundLiveEdit = (window.__playgroundLiveEdit || 0) + 1);
  await new Promise((done) => setTimeout(done, {DEBOUNCE_MS}));
  return window.__playgroundLiveEdit === mine ? Date.now() : tick;
}}"""


def preset(on: bool, steps: int, seed: int | None, images: int) -> tuple:
    """Turning Live on: at most LIVE_STEPS steps, one image, and a fixed seed where it was random (-1), so that
    only the edit changes the picture. Turning it off changes nothing."""
    if not on:
        return gr.skip(), gr.skip(), gr.skip()
    fixed = seed if seed is not None and seed >= 0 else random.randrange(2**31)
    return min(int(steps), LIVE_STEPS), fixed, 1


class Edits:
    """The newest edit's stamp (the page's clock, ms) of each session, for the runs to tell they are stale."""

    def __init__(self, sessions: int = SESSIONS):
        self.sessions, self.newest, self.lock = sessions, OrderedDict(), threading.Lock()

    def note(self, session: str, stamp: float) -> None:
        with self.lock:
            self.newest[session] = max(stamp, self.newest.get(session, stamp))
            self.newest.move_to_end(session)
            while len(self.newest) > self.sessions:
                self.newest.popitem(last=False)

    def stale(self, session: str, stamp: float) -> bool:
        """Whether the session made an edit after `stamp` (the run of that stamp is stale)."""
        with self.lock:
            return self.newest.get(session, stamp) > stamp


class _Either:
    """A cancel flag set by either: the run's own (the browser left) or its staleness."""

    def __init__(self, event: threading.Event, stale: Callable[[], bool]):
        self.event, self.stale = event, stale

    def is_set(self) -> bool:
        return self.event.is_set() or self.stale()


def live_generate(generate: Callable[..., GenerateResult], edits: Edits, session: str, stamp: float, request,
                  on_progress, cancel: threading.Event) -> GenerateResult | None:
    """The generation of the edit stamped `stamp`, or None once a newer edit of the session makes it stale (the
    newer edit's run is on its way): stopped at the next denoising step. Stopped for another reason (the browser
    left): raised, as any run is."""
    stale = lambda: edits.stale(session, stamp)  # noqa: E731
    if stale():
        return None
    try:
        return generate(request, on_progress=on_progress, cancel=_Either(cancel, stale))
    except Cancelled:
        if cancel.is_set():
            raise
        return None


def summary(result: GenerateResult) -> str:
    r = result.request
    return (f"**Live**: “{escaped(r.prompt)}” in {result.seconds:.2f} s in the engine. Seed {r.seed}, {r.scheduler}, "
            f"{r.steps} steps, CFG {r.cfg_scale:g}" + (f" to {r.cfg_stop:g} of the steps" if r.cfg_stop < 1 else "")
            + f", {r.width}x{r.height}. Not saved: **Generate** keeps it as a PNG "
            "(same settings, same picture).")


def checkbox() -> gr.Checkbox:
    """Live's switch: off on ZeroGPU, where it says why (ZERO_GPU_NOTE)."""
    return gr.Checkbox(False, label="Live: draw again at every edit", interactive=not ZERO_GPU,
                       info=ZERO_GPU_NOTE if ZERO_GPU else
                       f"of the prompt, its weights, the seed, steps, CFG or scheduler; turning it on sets {LIVE_STEPS} "
                       "steps and a fixed seed; the picture shows in the big image")


def wire(live: gr.Checkbox, watched: list, inputs: list, generate: Callable[..., GenerateResult], image: gr.Image,
         info: gr.Markdown, settings: Settings, preset_outputs: list):
    """Wire Live: `watched` are the fields whose edits regenerate; `inputs` the generation form in the order of
    on_live's parameters; the previews and the picture go to `image` and the run's note to `info`, which says "Live:
    denoising, step 3 of 8" while it runs (no spinner: one at every key press is noise, and its animation took CPU
    from the run) and names a bad value, if one was typed. `preset_outputs` are the steps, seed and images fields
    turning Live on sets. Returns the run's event (for Stop); on ZeroGPU nothing is wired and it returns None
    (checkbox())."""
    if ZERO_GPU:
        return None
    edits, edit, tick = Edits(), gr.Number(0, visible="hidden"), gr.Number(0, visible="hidden")

    def on_live(stamp, prompt, negative_prompt, seed, steps, cfg_scale, scheduler, width, height, shift, refiner_start,
                skip_layer_guidance, model, cfg_stop, request: gr.Request):
        started = time.monotonic()
        try:
            job = generate_request(prompt=prompt, negative_prompt=negative_prompt, seed=seed, steps=steps,
                                   cfg_scale=cfg_scale, scheduler=scheduler, width=width, height=height, num_images=1,
                                   shift=shift, refiner_start=refiner_start, skip_layer_guidance=skip_layer_guidance,
                                   model=model, cfg_stop=cfg_stop)
            run = lambda req, on_progress, cancel: live_generate(  # noqa: E731
                generate, edits, request.session_hash, float(stamp or 0), req, on_progress, cancel)
            for item in stream(run, job):
                if isinstance(item, GenerateResult):
                    yield item.images[0].image, summary(item)
                elif isinstance(item, Progress):  # the run is on its way (and Stop reads where it got to)
                    # the model's guess so far, as Generate shows it (a few times a second: the Engine's previews)
                    if time.monotonic() - started > QUIET_S:
                        yield (item.preview if item.preview is not None else gr.skip(),
                               f"Live: {running(item).removeprefix('Running: ')}")
                else:  # stale: a newer edit's run comes next
                    yield gr.skip(), gr.skip()
        except (InvalidRequest, gr.Error) as exc:  # a bad value typed: named on Live's own line, the picture kept
            yield gr.skip(), f"⚠️ **Live**: {escaped(str(getattr(exc, 'message', None) or exc))}"

    run = heavy(tick.change, on_live, [tick, *inputs], [image, info], settings, api_visibility="private",
                preprocess=False, trigger_mode="always_last", show_progress="hidden")
    triggers = [box.change for box in watched] + [live.change]
    gr.on([box.change for box in watched], None, [live, edit], edit, js=EDIT_JS, queue=False,
          api_visibility="private")
    # turning Live on or off is an edit whatever its new state: a run in flight when it goes off is stale
    live.change(None, None, edit, js="() => Date.now()", queue=False, api_visibility="private")
    gr.on(triggers, None, [live, tick], tick, js=TICK_JS, queue=False, api_visibility="private")

    def on_edit(stamp, request: gr.Request):
        edits.note(request.session_hash, float(stamp or 0))

    edit.change(on_edit, edit, None, queue=False, api_visibility="private")
    live.change(preset, [live, *preset_outputs], preset_outputs, queue=False, api_visibility="private")
    return run
