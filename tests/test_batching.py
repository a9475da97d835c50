"""Visitors sharing the denoiser: each job's picture is the one it gets alone (at most 1/255 a pixel, as the Grid's
batched cells are held), whether the jobs start together or one joins a running batch, with different prompts,
seeds, guidance scales and schedulers, and a neighbour stopped midway; the room benchmark runs in its quick form."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from playground.batching import Batcher, Standing, Turn
from playground.engine import Engine
from playground.errors import Cancelled
from playground.schema import GenerateRequest

from conftest import tiny_settings, wait_until

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

# different prompts, negatives, seeds, CFG scales (one unguided, one guided only half the way), schedulers (a
# stochastic one, a second-order one with two evaluations a step) and counts of images
REQUESTS = [
    GenerateRequest(prompt="a red circle", seed=1, steps=6, cfg_scale=7.5, scheduler="DPM++ 2M Karras"),
    GenerateRequest(prompt="a blue square on grass", negative_prompt="blurry", seed=2, steps=6, cfg_scale=3.0,
                    scheduler="Euler a"),
    GenerateRequest(prompt="two green triangles", seed=3, steps=4, cfg_scale=1.0, scheduler="DDIM"),
    GenerateRequest(prompt="a yellow star", seed=4, steps=5, cfg_scale=12.0, scheduler="Heun", num_images=2),
    GenerateRequest(prompt="a purple moon", seed=5, steps=6, cfg_scale=5.0, cfg_stop=0.5, scheduler="UniPC"),
]


@pytest.fixture(scope="module")
def alone(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir), batcher=None)


@pytest.fixture
def shared(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir), batcher=Batcher(max_samples=16))


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(g.image, dtype=np.int16) for g in result.images]


def assert_same(got, want, what: str) -> None:
    for k, (a, b) in enumerate(zip(pixels(got), pixels(want), strict=True)):
        worst = int(np.abs(a - b).max())
        assert worst <= 1, f"{what}, image {k}: {worst}/255 from the same request run alone"


def run_all(engine: Engine, requests: list[GenerateRequest], cancels=None, on_progress=None) -> list:
    """Each request on its own thread (as the app runs them); results (or the error raised) in order."""
    out = [None] * len(requests)

    def one(k):
        try:
            out[k] = engine.generate(requests[k], on_progress=on_progress(k) if on_progress else None,
                                     cancel=cancels[k] if cancels else None)
        except Exception as exc:  # noqa: BLE001  (compared by the test)
            out[k] = exc

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a job never finished"
    return out


def run_in_line(engine: Engine, requests: list[GenerateRequest], cancels=None, on_progress=None) -> list:
    """run_all with every job in line, in the order given, before the first round."""
    batcher, out, threads = engine.batcher, [None] * len(requests), []

    def one(k):
        out[k:k + 1] = run_all(engine, requests[k:k + 1], cancels[k:k + 1] if cancels else None,
                               (lambda _: on_progress(k)) if on_progress else None)

    with batcher.turn:
        for k in range(len(requests)):
            threads.append(threading.Thread(target=one, args=(k,)))
            threads[-1].start()
            wait_until(lambda: batcher.counts()[0] == k + 1, what=f"job {k} in line")
    for t in threads:
        t.join(120)
    return out


def test_the_requests_differ(alone):
    """A job handed another's prompt, seed, scale or timestep would show: every picture differs from the others."""
    first = [pixels(alone.generate(r))[0] for r in REQUESTS]
    for i in range(len(first)):
        for j in range(i):
            assert np.abs(first[i] - first[j]).max() > 8, (i, j)


def test_jobs_that_start_together(alone, shared):
    batcher = shared.batcher
    results = run_in_line(shared, REQUESTS)  # every job is in line before the first round
    assert batcher.most == len(REQUESTS)  # the first round carried them all
    for req, got in zip(REQUESTS, results):
        assert_same(got, alone.generate(req), req.prompt)


def test_jobs_that_join_a_running_batch(alone, shared):
    long = GenerateRequest(prompt="a long walk home", seed=9, steps=16, cfg_scale=6.0, scheduler="Euler")
    later = REQUESTS[:3]
    seen: list[tuple[str, int]] = []  # (job, step) in the order the steps were made
    results: dict = {}
    threads: list[threading.Thread] = []

    def note(name):
        def on_progress(p):
            seen.append((name, p.step))
            if name == "long" and p.step == 4 and not threads:  # mid-run: the later jobs arrive
                threads.append(threading.Thread(target=lambda: results.update(later=run_all(
                    shared, later, on_progress=lambda k: note(f"later {k}")))))
                threads[0].start()
                wait_until(lambda: shared.batcher.counts()[0] == len(later), what="the later jobs in line")
        return on_progress

    results["long"] = shared.generate(long, on_progress=note("long"))
    threads[0].join(120)
    # they joined at the next round, the long job's fifth step, and ran beside it
    fifth = seen.index(("long", 5))
    assert set(seen[fifth + 1: fifth + 4]) == {(f"later {k}", 1) for k in range(3)}, seen
    assert max(seen.index((f"later {k}", 1)) for k in range(3)) < seen.index(("long", 16))
    assert_same(results["long"], alone.generate(long), long.prompt)
    for req, got in zip(later, results["later"]):
        assert_same(got, alone.generate(req), req.prompt)


def test_a_stopped_neighbour_leaves_the_others_as_they_were(alone, shared):
    cancels = [threading.Event() for _ in REQUESTS]
    stopped = 1  # Euler a, the stochastic one, stopped at its third step

    def on_progress(k):
        def note(p):
            if k == stopped and p.step == 3:
                cancels[k].set()
        return note

    results = run_in_line(shared, REQUESTS, cancels, on_progress)  # together from the first round
    assert isinstance(results[stopped], Cancelled) and "step 3 of 6" in str(results[stopped])
    for k, (req, got) in enumerate(zip(REQUESTS, results)):
        if k != stopped:
            assert_same(got, alone.generate(req), req.prompt)
    assert shared.batcher.counts() == (0, 0)


def test_a_full_batch_makes_jobs_wait_in_order_and_says_where_they_stand(alone, tiny_model, tiny_dir):
    engine = Engine(tiny_model, tiny_settings(tiny_dir), batcher=Batcher(max_samples=2))
    reqs = [REQUESTS[0], REQUESTS[3], REQUESTS[2], REQUESTS[1]]  # 1 + 2 + 1 + 1 images through a batch of 2
    labels: dict[int, list[str]] = {k: [] for k in range(len(reqs))}
    results = run_in_line(engine, reqs, on_progress=lambda k: lambda p: labels[k].append(p.label) if p.step == 0
                          else None)
    for req, got in zip(reqs, results):
        assert_same(got, alone.generate(req), req.prompt)
    assert not labels[0]  # the first job had its place at once
    assert labels[1][0].startswith("waiting: 0 jobs ahead") and labels[2][0].startswith("waiting: 1 job ahead")
    assert "about" in labels[3][-1]


def test_a_generate_spaces_its_previews_by_the_jobs_sharing_its_rounds(shared, monkeypatch):
    """The Prompt tab's generate asks its Engine's batcher how many jobs share the rounds: with (as if) a thousand,
    only its first and last steps bring a preview; with none, every step of a 0.2 s interval would."""
    from playground import engine as engine_mod

    monkeypatch.setattr(engine_mod, "PREVIEW_INTERVAL", 1e-9)
    seen = []
    shared.generate(REQUESTS[0], on_progress=seen.append)
    assert all(p.preview is not None for p in seen) and len(seen) == REQUESTS[0].steps
    monkeypatch.setattr(shared.batcher, "counts", lambda: (0, 1e12))
    seen = []
    shared.generate(REQUESTS[0], on_progress=seen.append)
    assert [p.preview is not None for p in seen] == [True] + [False] * (len(seen) - 2) + [True]


def test_where_a_job_stands_follows_the_batch():
    b = Batcher(max_samples=2)
    assert b.standing(10) == Standing(ahead=0, running=0, seconds=None)  # nothing measured yet
    b._round_s = 0.5
    assert b.standing(10).seconds == 0  # room: it starts at the next round


@pytest.mark.nomodel
def test_the_turn_goes_in_the_order_asked():
    turn, order, threads = Turn(), [], []
    with turn:
        for k in range(5):
            threads.append(threading.Thread(target=lambda k=k: (turn.__enter__(), order.append(k), turn.__exit__())))
            threads[-1].start()
            wait_until(lambda: turn._next == k + 2, what=f"thread {k} in line")
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_the_room_reports_the_machine_flat_out_beside_the_room(monkeypatch):
    """--flat-out adds both settings with no thinking between pictures; the report sets their images a minute side by
    side (the room's own line stays the room's)."""
    sys.path.insert(0, str(BENCH))
    try:
        import room
    finally:
        sys.path.remove(str(BENCH))
    ran = []

    def fake(setting, learners, seconds, think, drain):
        ran.append((setting.name, think))
        made = {"batching off": 30.0, "batching on": 40.0, "off, flat out": 50.0, "on, flat out": 80.0}[setting.name]
        return dict(setting=setting.name, learners=learners, seconds=seconds, images_a_minute=made, wait_median=1.0,
                    wait_p95=2.0, wait_max=3.0, generates=4, unfinished_generates=0, grids=1, lives=0, unfinished=0,
                    grid_wait_median=4.0, live_wait_median=float("nan"), errors=[], load_mean=1.0, load_max=2.0)

    monkeypatch.setattr(room, "run_setting", fake)
    text = room.main(["--flat-out"])
    assert ran == [("batching off", (10.0, 30.0)), ("batching on", (10.0, 30.0)), ("off, flat out", (0.0, 0.0)),
                   ("on, flat out", (0.0, 0.0))]
    assert "1.33x the images a minute of one job at a time" in text
    assert "Flat out (no learner thinking between pictures): 1.60x" in text


@pytest.mark.slow
def test_room_benchmark_quick(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import room
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "B.md"
    text = room.main(["--quick", "--out", str(out)])
    for row in ("images a minute", "wait, median", "wait, 95th percentile", "wait, longest"):
        assert row in out.read_text(), row
    assert "batching off" in text and "batching on" in text
