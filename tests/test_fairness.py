"""The per-visitor limit's count, on a stand-in for gradio's queue (the launched-app test is in
test_reliability.py: one client floods grids while another's generate goes through)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from playground.ui.fairness import Fairness


class FakeBlocks:
    """What Fairness reads of a gr.Blocks: its queue's waiting events, running jobs and join record."""

    def __init__(self):
        self._queue = SimpleNamespace(event_queue_per_concurrency_id={"gpu": SimpleNamespace(queue=[])},
                                      active_jobs=[None, None], event_analytics={})

    def join(self, session: str) -> None:  # what gradio does after the validator let a job in
        event = SimpleNamespace(session_hash=session)
        self._queue.event_queue_per_concurrency_id["gpu"].queue.append(event)
        self._queue.event_analytics[len(self._queue.event_analytics)] = {"time": time.time(), "session_hash": session}

    def finish_all(self) -> None:
        self._queue.event_queue_per_concurrency_id["gpu"].queue.clear()


def test_jobs_let_in_count_before_gradio_queues_them():
    blocks = FakeBlocks()
    fair = Fairness(blocks, limit=2)
    # three ask at once: none is in the queue yet when the next asks
    assert fair.admit("a") is None and fair.admit("a") is None
    refusal = fair.admit("a")
    assert refusal and "2 jobs waiting or running" in refusal and "at most 2" in refusal
    assert fair.admit("b") is None  # another visitor is not held up


def test_jobs_in_the_queue_count_and_finished_ones_do_not():
    blocks = FakeBlocks()
    fair = Fairness(blocks, limit=2)
    for _ in range(2):
        assert fair.admit("a") is None
        blocks.join("a")
    assert fair.admit("a")  # two waiting
    blocks.finish_all()
    for _ in range(6):  # one after another, each finished before the next asks: never refused
        assert fair.admit("a") is None
        blocks.join("a")
        blocks.finish_all()


def test_no_limit_and_no_session_let_everything_in():
    blocks = FakeBlocks()
    assert all(Fairness(blocks, limit=0).admit("a") is None for _ in range(10))
    assert all(Fairness(blocks, limit=1).admit(None) is None for _ in range(10))


def test_a_burst_cannot_pass_the_queue_size_before_its_jobs_are_queued():
    blocks = FakeBlocks()
    fair = Fairness(blocks, limit=0, queue_size=3)
    assert [fair.admit(f"s{k}") for k in range(3)] == [None] * 3  # three visitors at once, none queued yet
    refusal = fair.admit("s3")
    assert refusal and refusal.startswith("Queue is full") and "at most 3" in refusal
