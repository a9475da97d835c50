"""Fair to every visitor: one browser session (one gradio_client) may hold only `settings.session_jobs`
model jobs at once, waiting or running; one more is refused when it asks to join the queue, with the
reason, before it takes a place that somebody else is waiting for.

The check is gradio's event `validator`, which runs when a job asks to join the queue, with the session's
`gr.Request`; the count is read from the app's own queue (`held`), so a job that finished, failed or was
stopped while it waited is counted out at once.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from typing import Callable

import gradio as gr

SETTLE_SECONDS = 1.0  # a job let in is in gradio's queue well within this (the validator returns first)


def held(blocks: gr.Blocks, session: str) -> int:
    """How many jobs of `session` the app's queue holds: waiting in any concurrency group, or running."""
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return 0
    waiting = sum(e.session_hash == session for q in queue.event_queue_per_concurrency_id.values() for e in q.queue)
    running = sum(e.session_hash == session for job in queue.active_jobs if job for e in job)
    return waiting + running


def waiting(blocks: gr.Blocks) -> int:
    """How many jobs wait in the app's queue (gradio's QUEUE_SIZE counts these)."""
    queue = getattr(blocks, "_queue", None)
    return 0 if queue is None else sum(len(q.queue) for q in queue.event_queue_per_concurrency_id.values())


def joined_since(blocks: gr.Blocks, session: str | None, since: float) -> int:
    """How many jobs of `session` (None: of anyone) joined the app's queue since `since` (time.time()), from
    gradio's own record."""
    queue = getattr(blocks, "_queue", None)
    record = getattr(queue, "event_analytics", {}) if queue is not None else {}
    return sum(session in (None, e.get("session_hash")) and e.get("time", 0) >= since for e in list(record.values()))


def from_browser(request) -> bool:
    """Whether the request comes from a web browser (the page) rather than gradio_client or another program."""
    headers = getattr(request, "headers", None) or {}
    return "mozilla" in str(headers.get("user-agent", "")).lower()


class Fairness:
    """The per-session limit of one app (0 = none). `admit` lets a job in or says why not.

    The count is the queue's own (waiting and running jobs of the session) plus the jobs let in a moment ago
    that are not in the queue yet: gradio appends a job after its validator returns, so two jobs asking at
    the same moment would both see the other one missing. Those are the jobs let in within SETTLE_SECONDS
    less the session's jobs that joined the queue in that time.
    """

    def __init__(self, blocks: gr.Blocks, limit: int, queue_size: int = 0):
        self.blocks, self.limit, self.queue_size = weakref.ref(blocks), limit, queue_size
        self._lock = threading.Lock()
        self._let_in: dict[str | None, list[float]] = {}  # session (None: anyone's) -> when its recent jobs were let in

    def admit(self, session: str | None) -> str | None:
        """None when the job may join the queue; else why not."""
        blocks = self.blocks()
        if blocks is None:
            return None
        with self._lock:
            now = time.time()
            full = self._queue_full(blocks, now)
            if full or self.limit <= 0 or not session:
                return full
            recent = [t for t in self._let_in.get(session, []) if now - t <= SETTLE_SECONDS]
            on_the_way = max(0, len(recent) - (joined_since(blocks, session, recent[0]) if recent else 0))
            count = held(blocks, session) + on_the_way
            if count >= self.limit:
                self._let_in[None].pop()  # not on its way after all
                return (f"You already have {count} jobs waiting or running (at most {self.limit} a visitor, so that "
                        "everyone gets a turn). Wait for one to finish, or stop one, then try again.")
            self._let_in[session] = recent + [now]
            if len(self._let_in) > 1000:  # forget sessions whose jobs settled long ago
                self._let_in = {s: v for s, v in self._let_in.items() if v and now - v[-1] <= SETTLE_SECONDS}
            return None

    def _queue_full(self, blocks: gr.Blocks, now: float) -> str | None:
        """gradio checks QUEUE_SIZE before it runs the validator and queues the job after it, so a burst of jobs
        would all pass its check: the same count is made here, with the jobs on their way, under the lock."""
        recent = [t for t in self._let_in.get(None, []) if now - t <= SETTLE_SECONDS]
        self._let_in[None] = recent + [now]  # taken back below if the job is refused
        count = waiting(blocks) + max(0, len(recent) - (joined_since(blocks, None, recent[0]) if recent else 0))
        if self.queue_size and count >= self.queue_size:
            self._let_in[None] = recent
            return f"Queue is full: {count} jobs are waiting (at most {self.queue_size}). Please try again in a moment."
        return None

    def validator(self, inputs) -> Callable:
        """A gradio validator for an event with `inputs`: it takes the same values plus the session's gr.Request
        (gradio passes the request to a parameter annotated gr.Request) and admits the job, or refuses it with
        the reason: to a browser as an error (a message beside the action, its status line's badge), to an API
        client as a validation error (gradio answers 422 with the reason, which gradio_client raises as a
        ValidationError; a browser would paint it on the event's first input as if that value were wrong)."""
        n = len(inputs) if isinstance(inputs, (list, tuple, set)) else (0 if inputs is None else 1)

        def admit(*values):
            request = values[-1]
            refusal = self.admit(getattr(request, "session_hash", None))
            if refusal and (n == 0 or from_browser(request)):
                raise gr.Error(refusal, duration=20, print_exception=False)
            verdicts = [gr.validate(False, refusal) if refusal and i == 0 else None for i in range(n)]
            return verdicts[0] if n == 1 else verdicts

        parameter = inspect.Parameter
        admit.__signature__ = inspect.Signature(
            [parameter(f"value_{i}", parameter.POSITIONAL_OR_KEYWORD) for i in range(n)]
            + [parameter("request", parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)])
        admit.__annotations__ = {"request": gr.Request}
        return admit


_OF: "weakref.WeakKeyDictionary[gr.Blocks, Fairness]" = weakref.WeakKeyDictionary()


def of_app(limit: int, queue_size: int = 0) -> Fairness:
    """The Fairness of the app being built (one per gr.Blocks)."""
    blocks = gr.context.Context.root_block
    if blocks not in _OF:
        _OF[blocks] = Fairness(blocks, limit, queue_size)
    return _OF[blocks]
