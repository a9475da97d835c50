"""Visitors share the denoiser: generate jobs from different requests step together through one denoiser call.

Continuous batching, as LLM servers do it and as StreamDiffusion's Stream Batch does it for denoising steps: each job
is a `sampling.Run` with its own scheduler, timesteps, latents, prompts, seeds and guidance scales; at every round the
runs of the batch (those of one model and latent size) go through the denoiser as one call, each sample at its own
timestep (the denoiser takes one a sample), and each run then takes its own guidance and scheduler step and reports
to its own observer. A job that arrives while a batch runs joins it at the next round; one that ends, fails or is
stopped leaves at the next round, and the others go on. A job's picture is the one it would get alone (to float
rounding: the tests hold it to 1/255 a pixel), whatever else shares its rounds.

Nobody owns a thread for it: the thread of each waiting job (ui.common.stream runs every action on one of its own)
takes a turn at driving the rounds; the driver drives until its own job is done and then hands over to the next
waiting one. (A thread that lived as long as the process would keep its OpenMP team alive: see threads.py.)

Rounds take the device's `Turn` like any other model work while sharing is on: every action's loop then takes it step
by step (sampling.denoise's `turn`), in the order asked, so a grid and a batch interleave instead of fighting for the
cores.

The batch holds at most `max_samples` images (a job of four images is four); a job that does not fit waits, in the
order it came, and hears where it stands (`Standing`: jobs ahead and an estimate of the wait from the rounds' measured
speed). What cannot share a call runs alone as before (`fits`): a ControlNet, SDXL's refiner hand-off, skip-layer
guidance, given starting latents.

    BATCH_JOBS=16   the most images one shared call carries (0 or unset: off; off on ZeroGPU, where each call is its
                    own GPU lease)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from playground import gpu, schedulers
from playground.errors import Cancelled
from playground.families.conditioning import Conditioning
from playground.sampling import Components, Denoised, Job, Observer, Run, advance, finish, model_input, start

DEFAULT_SAMPLES = 16  # one U-Net call of the bundled model costs 37.5 ms a CFG pair alone, 23.7 ms a pair at 16
SMOOTHING = 0.2  # weight of the newest round in the measured seconds a round


class Turn:
    """The device's turn: a lock taken in the order it was asked for (threading.Lock lets the thread that just let go
    take it again at once, which would starve the others). Not reentrant."""

    def __init__(self):
        self._cv = threading.Condition()
        self._next = 0  # the ticket the next caller draws
        self._serving = 0  # the ticket whose turn it is

    def __enter__(self) -> "Turn":
        with self._cv:
            mine, self._next = self._next, self._next + 1
            while mine != self._serving:
                self._cv.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()


@dataclass(frozen=True)
class Standing:
    """Where a job stands before it starts: jobs ahead of it in line, jobs in the batch, and the wait to expect
    (seconds; None until a round has been measured)."""

    ahead: int
    running: int
    seconds: float | None


@dataclass(eq=False)
class Ticket:
    """One job handed to the batcher, from the thread that waits for it."""

    c: Components
    job: Job
    observer: Observer | None
    cancel: threading.Event | None
    waiting: Callable[[Standing], None] | None
    run: Run | None = None
    error: BaseException | None = None
    done: bool = False  # denoised (its thread decodes) or failed
    told: Standing | None = None  # what `waiting` heard last
    planned: int | None = None  # model evaluations of the whole job (counted once)

    @property
    def samples(self) -> int:
        return len(self.job.prompts)

    def evaluations(self) -> int:
        """Model evaluations it has left to make."""
        if self.run is not None:
            return self.run.total - self.run.i
        if self.planned is None:
            self.planned = schedulers.evaluations(self.job.scheduler, self.c.scheduler_config, self.job.steps)
        return self.planned


def cat(conds: list[Conditioning]) -> Conditioning:
    """Several runs' conditioning as one batch, rows in order (each run's [uncond..., cond...] kept together)."""
    added = conds[0].added
    return Conditioning(torch.cat([c.embeds for c in conds]),
                        {k: torch.cat([c.added[k] for c in conds]) for k in added} if added else None)


def changed(told: Standing | None, now: Standing) -> bool:
    """Whether a waiting job should hear `now` after `told`: a place gained, or the estimate moved by a second."""
    shape = lambda s: (s.ahead, s.running, s.seconds is None)  # noqa: E731
    if told is None or shape(told) != shape(now):
        return True
    return told.seconds is not None and abs(told.seconds - now.seconds) >= 1.0


def shares(ticket: Ticket) -> tuple:
    """What runs must have in common to share a denoiser call: the denoiser, the latents' shape and dtype, the text
    sequence's shape, and the added conditioning's keys."""
    run = ticket.run
    return (id(ticket.c.denoiser), tuple(run.latents.shape[1:]), run.latents.dtype, tuple(run.cond.embeds.shape[1:]),
            tuple(sorted(run.cond.added or ())))


class Batcher:
    def __init__(self, max_samples: int = DEFAULT_SAMPLES):
        if max_samples < 1:
            raise ValueError(f"a batch needs room for at least 1 image, got max_samples={max_samples}")
        self.max_samples = max_samples
        self.turn = Turn()  # the device's: every model action takes it step by step while sharing is on
        self._lock = threading.Condition()
        self._queue: deque[Ticket] = deque()  # waiting for a place in the batch, in the order they came
        self._batch: list[Ticket] = []  # in the batch
        self._driving = False
        self._round_s: float | None = None  # measured seconds a round (smoothed)
        self.rounds = 0  # rounds run so far
        self.most = 0  # the most jobs one round has carried

    @staticmethod
    def fits(job: Job) -> bool:
        """Whether `job` can share the denoiser: no ControlNet, no refiner hand-off, no skip-layer guidance (each
        needs a call of its own) and noise drawn from its own seeds."""
        return (job.control is None and job.end >= 1 and job.start <= 0 and not job.skip_layers
                and job.init_latents is None)

    # -- a job's side ---------------------------------------------------------------------------
    def denoise(self, c: Components, job: Job, observer: Observer | None = None,
                cancel: threading.Event | None = None, waiting: Callable[[Standing], None] | None = None) -> Denoised:
        """`sampling.denoise` of `job`, sharing the denoiser with every other job here: the same result (to float
        rounding), its own observer, Cancelled at its next round once `cancel` is set. `waiting` hears where the
        job stands while the batch is full."""
        if not self.fits(job):
            raise ValueError("this job cannot share the denoiser (a ControlNet, hand-off, skip layers or given "
                             "latents): run it with sampling.denoise")
        ticket = Ticket(c, job, observer, cancel, waiting)
        with self._lock:
            self._queue.append(ticket)
        while True:
            with self._lock:
                while self._driving and not ticket.done:
                    self._lock.wait()
                if ticket.done:
                    break
                self._driving = True
            try:  # drive until this job is done; then the next waiting thread takes over
                while not ticket.done:
                    self._round()
            except BaseException as exc:  # noqa: BLE001  (a failure outside any one job's part: this job's)
                with self._lock:
                    self._leave(ticket, exc)
            finally:
                with self._lock:
                    self._driving = False
                    self._lock.notify_all()
        if ticket.error is not None:
            raise ticket.error
        with torch.no_grad(), self.turn:  # 8. decode, on this job's own thread
            return finish(c, ticket.run)

    def counts(self) -> tuple[int, int]:
        """(jobs waiting for a place, jobs in the batch) now."""
        with self._lock:
            return len(self._queue), len(self._batch)

    def standing(self, evaluations: int = 25, samples: int = 1) -> Standing:
        """Where a job of `samples` images and `evaluations` model evaluations would stand if it came now."""
        with self._lock:
            return self._standing(len(self._queue), evaluations, samples)

    # -- the driver's side ------------------------------------------------------------------------
    @torch.no_grad()
    def _round(self) -> None:
        """One model evaluation for every job in the batch, after letting in the waiting jobs that fit."""
        began = time.perf_counter()
        with self.turn:
            # 1. Stopped jobs leave; waiting jobs come in while their images fit (one alone may exceed the cap)
            with self._lock:
                for ticket in [*self._batch, *self._queue]:
                    if ticket.cancel is not None and ticket.cancel.is_set():
                        i, total = (ticket.run.i, ticket.run.total) if ticket.run else (0, ticket.evaluations())
                        self._leave(ticket, Cancelled(f"cancelled at step {i} of {total}"))
                rows, joined = sum(t.samples for t in self._batch), []
                while self._queue and (rows + self._queue[0].samples <= self.max_samples or not self._batch):
                    joined.append(self._queue.popleft())
                    self._batch.append(joined[-1])
                    rows += joined[-1].samples
                batch = list(self._batch)
                waiting = [(t, self._standing(k, t.evaluations(), t.samples)) for k, t in enumerate(self._queue)]

            # 2. Newcomers: a fresh scheduler each, prompts encoded, noise drawn from their own seeds
            for ticket in joined:
                self._guard(ticket, lambda t=ticket: setattr(t, "run", start(t.c, t.job)))

            # 3. One denoiser call for each group of runs that can share one; then each run's own step
            groups: dict[tuple, list[Ticket]] = {}
            for ticket in batch:
                if not ticket.done:
                    groups.setdefault(shares(ticket), []).append(ticket)
            for group in groups.values():
                self._evaluate(group)

            # 4. Finished jobs leave the batch (their threads decode)
            with self._lock:
                for ticket in batch:
                    if not ticket.done and ticket.run.done:
                        self._leave(ticket)
                self.rounds += 1
                self.most = max(self.most, len(batch))
                seconds = time.perf_counter() - began
                self._round_s = seconds if self._round_s is None else (
                    (1 - SMOOTHING) * self._round_s + SMOOTHING * seconds)
        for ticket, where in waiting:  # 5. tell the waiting jobs where they stand, when it changed
            if ticket.waiting is not None and changed(ticket.told, where):
                ticket.told = where
                self._guard(ticket, lambda t=ticket, w=where: t.waiting(w))

    def _evaluate(self, group: list[Ticket]) -> None:
        """One denoiser call for `group` (x_t of each run at its own timestep), then each run's guidance, scheduler
        step and observer."""
        c = group[0].c
        try:
            inputs = [model_input(t.run) for t in group]  # (rows_k, C, h, w) each: 2B_k with CFG, else B_k
            timesteps = [t.run.timesteps[t.run.i].float().expand(len(x)) for t, x in zip(group, inputs)]
            out = c.family.denoise(c, torch.cat(inputs), torch.cat(timesteps), cat([t.run.cond for t in group]))
        except BaseException as exc:  # noqa: BLE001  (out of memory, say: every job of the call gets it)
            with self._lock:
                for ticket in group:
                    self._leave(ticket, exc)
            return
        for ticket, part in zip(group, out.split([len(x) for x in inputs])):
            self._guard(ticket, lambda t=ticket, o=part: advance(t.c, t.run, o, t.observer))

    def _guard(self, ticket: Ticket, fn: Callable[[], object]) -> None:
        """fn(); an error fails `ticket` alone."""
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001  (handed to the job's own thread, raised there)
            with self._lock:
                self._leave(ticket, exc)

    def _leave(self, ticket: Ticket, error: BaseException | None = None) -> None:
        """`ticket` leaves the batch or the line (call with the lock held), done or failed; its thread wakes."""
        if ticket.done:
            return
        ticket.error, ticket.done = error, True
        if ticket in self._batch:
            self._batch.remove(ticket)
        if ticket in self._queue:
            self._queue.remove(ticket)
        self._lock.notify_all()

    def _standing(self, position: int, evaluations: int, samples: int) -> Standing:
        """Where the job at `position` in line stands (with the lock held): rounds until places for its images free
        up, the batch's jobs ending in turn and those before it taking their places, at the measured speed."""
        running = [[t.evaluations(), t.samples] for t in self._batch]
        line = [(t.evaluations(), t.samples) for t in list(self._queue)[:position]] + [(evaluations, samples)]
        rows, rounds = sum(n for _, n in running), 0
        while True:
            while line and (rows + line[0][1] <= self.max_samples or not running):
                left, n = line.pop(0)
                running.append([left, n])
                rows += n
                if not line:
                    seconds = None if self._round_s is None else rounds * self._round_s
                    return Standing(ahead=position, running=len(self._batch), seconds=seconds)
            step = min(left for left, _ in running)
            rounds += step
            for r in running:
                r[0] -= step
            rows -= sum(n for left, n in running if left <= 0)
            running = [r for r in running if r[0] > 0]


_SHARED: dict[int, Batcher] = {}
_SHARED_LOCK = threading.Lock()


def shared(max_samples: int) -> Batcher | None:
    """The process's one Batcher (every loaded model's jobs share its rounds and the device's turn); None when
    `max_samples` is 0 or on ZeroGPU, where each call is its own GPU lease and nothing can join it."""
    if max_samples <= 0 or gpu.ZERO_GPU:
        return None
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED[0] = Batcher(max_samples)
        return _SHARED[0]
