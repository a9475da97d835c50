"""Live mode's server side: which run is stale, how a stale run stops, what turning Live on sets (ui/live.py), and
the app's model work kept off the main thread (threads.py). The browser side is in test_browser.py."""

from __future__ import annotations

import threading

import pytest

from playground.engine import Engine
from playground.errors import Cancelled
from playground.limits import Limits
from playground.schema import GenerateRequest
from playground.threads import off_main_thread
from playground.ui.live import LIVE_STEPS, Edits, escaped, live_generate, preset

from conftest import tiny_settings


def test_a_run_is_stale_once_its_session_made_a_newer_edit_and_only_then():
    edits = Edits()
    assert not edits.stale("a", 100.0)  # no edit noted yet: the run goes on
    edits.note("a", 100.0)
    assert not edits.stale("a", 100.0) and not edits.stale("a", 150.0)  # its own edit (or a later one) noted
    edits.note("a", 200.0)
    assert edits.stale("a", 150.0) and not edits.stale("b", 150.0)  # another session's runs are not touched
    edits.note("a", 120.0)  # a note that arrives late never turns the clock back
    assert edits.stale("a", 150.0)


def test_the_edits_kept_are_bounded_least_recently_edited_first():
    edits = Edits(sessions=3)
    for k, session in enumerate("abcd"):
        edits.note(session, float(k))
    edits.note("b", 10.0)
    edits.note("e", 11.0)
    assert list(edits.newest) == ["d", "b", "e"]


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir))


REQUEST = GenerateRequest(prompt="a red circle", seed=3, steps=10, cfg_scale=5.0)


def test_a_live_run_that_a_newer_edit_makes_stale_stops_at_its_next_step(engine):
    edits, steps = Edits(), []

    def on_progress(p):
        steps.append(p.step)
        if p.step == 3:
            edits.note("me", 2000.0)  # the visitor typed again while step 3 ran

    got = live_generate(engine.generate, edits, "me", 1000.0, REQUEST, on_progress, threading.Event())
    assert got is None and max(steps) <= 4  # stopped, well before its 10 steps
    assert live_generate(engine.generate, edits, "me", 1000.0, REQUEST, on_progress, threading.Event()) is None
    steps.clear()
    fresh = live_generate(engine.generate, edits, "me", 3000.0, REQUEST, lambda p: None, threading.Event())
    plain = engine.generate(REQUEST)
    assert fresh is not None and fresh.images[0].image.tobytes() == plain.images[0].image.tobytes()


def test_a_live_run_stopped_for_another_reason_is_stopped_as_any_run_is(engine):
    cancel = threading.Event()

    def on_progress(p):
        if p.step == 2:
            cancel.set()  # the browser left

    with pytest.raises(Cancelled):
        live_generate(engine.generate, Edits(), "me", 1.0, REQUEST, on_progress, cancel)


def test_turning_live_on_sets_few_steps_one_image_and_a_fixed_seed():
    steps, seed, images = preset(True, 25, -1, 3)
    assert (steps, images) == (LIVE_STEPS, 1) and seed >= 0
    assert preset(True, 4, 7, 1) == (4, 7, 1)  # fewer steps and a seed already set are kept
    off = preset(False, 25, -1, 3)
    assert all(isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1 for v in off)  # untouched


def test_the_live_note_shows_the_prompt_as_typed_not_as_markdown():
    assert escaped("a *red* [black] (big) \\ _x_") == "a \\*red\\* \\[black\\] (big) \\\\ \\_x\\_"


def test_model_work_runs_off_the_main_thread_and_its_errors_come_back():
    assert off_main_thread(lambda: threading.current_thread() is threading.main_thread()) is False
    with pytest.raises(ValueError, match="bad"):
        off_main_thread(lambda: (_ for _ in ()).throw(ValueError("bad")))


def test_app_loads_its_model_off_the_main_thread(monkeypatch):
    """app.py's startup: the model loads on a thread of its own (threads.py says why: 2.3x on every request)."""
    import app

    where = []
    monkeypatch.setattr(app, "load_models", lambda s: where.append(threading.current_thread()) or ["model"])
    # an Engine as Models sees one: its model's name and its limits
    monkeypatch.setattr(app, "Engine", lambda model, s: type("E", (), {"model": type("M", (), {"name": model}),
                                                                      "limits": Limits()})())
    monkeypatch.setattr(app, "banner", lambda model: "")
    monkeypatch.setattr(app.poses, "preload", lambda: None)
    monkeypatch.setattr(app, "build_app", lambda engine, s: (_ for _ in ()).throw(SystemExit(0)))
    monkeypatch.setattr("sys.argv", ["app.py", "--model", "bundled"])
    with pytest.raises(SystemExit):
        app.main()
    assert where and where[0] is not threading.main_thread()



def test_progress_skipped_while_the_page_was_busy_keeps_its_preview():
    """A handler that falls behind gets the newest step only (ui/common.py's stream), and still the newest preview:
    previews come a few times a second, between steps that carry none."""
    from PIL import Image

    from playground.schema import Progress
    from playground.ui.common import stream

    picture, gates = Image.new("RGB", (8, 8), "red"), [threading.Event() for _ in range(3)]

    def action(request, on_progress, cancel):
        on_progress(Progress(1, 4, None))
        gates[0].wait(10)  # the handler is still busy with step 1 while steps 2 to 4 come
        on_progress(Progress(2, 4, picture))
        on_progress(Progress(3, 4, None))
        on_progress(Progress(4, 4, None))
        gates[1].set()
        gates[2].wait(10)
        return "done"

    shown = stream(action, None)
    assert next(shown).step == 1
    gates[0].set()
    gates[1].wait(10)
    newest = next(shown)
    gates[2].set()
    assert (newest.step, newest.preview) == (4, picture) and next(shown) == "done"
