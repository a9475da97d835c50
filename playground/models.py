"""The loaded models, each with its own Engine: every request goes to the Engine of the model it names.

A process may load several models (with no GPU and no `--model`, both offline ones: the U-Net and the MMDiT). Each
request names its model (`model`, "" for the first loaded), so no request can change another's: `Models` hands it
to that model's Engine, whose door checks it once, the model's name included (a name that is not loaded goes to
the first model's door, which names the loaded ones), and fills the name in so that its result (a trajectory
scrubbed later, a PNG's "Model") says which model made it. The actions have the Engine's own names and signatures,
so a tab is wired to `Models` exactly as it would be to one Engine.

A grid can take its rows from several models (`GridRequest.models`): each model runs its own rows with the chosen
schedulers that fit it (or its default one), from the same seed, and a steps axis compares every cell with its own
model's reference run.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from playground import schedulers
from playground.parts import Anatomy
from playground.batching import Standing
from playground.engine import Engine, OnProgress
from playground.schema import (
    ControlRequest, GenerateRequest, GridRequest, GridResult, PoseRequest, Progress, RoundTripRequest, TokenCount,
    TokenRequest, Trajectory, WalkRequest,
)
from playground.validation import resolve_seed


def base_of(req):
    """The GenerateRequest inside any request (a GenerateRequest is its own)."""
    return req if isinstance(req, GenerateRequest) else req.base


def model_of(req) -> str:
    """The model a request names ("": the first loaded): its own field, or its base generation's."""
    return req.model if hasattr(req, "model") else req.base.model


class Models:
    def __init__(self, engines: list[Engine]):
        names = [e.model.name for e in engines]
        if not engines or len(set(names)) != len(names):
            raise ValueError(f"Models needs one Engine a model name, got {names}")
        self.engines = {e.model.name: e for e in engines}
        for e in engines:  # each door checks a request's model among every loaded one
            e.limits = replace(e.limits, models=tuple(names))

    # -- which model --------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.engines)

    @property
    def first(self) -> Engine:
        return next(iter(self.engines.values()))

    def pick(self, name: str = "") -> Engine:
        """The Engine of the model called `name`; the first loaded for "" or a name that is not loaded (whose door
        then refuses the request, naming the loaded models)."""
        return self.engines.get(name, self.first) if isinstance(name, str) else self.first

    # -- actions: the Engine's, on the model the request names --------------------------------
    def generate(self, req: GenerateRequest, on_progress: OnProgress | None = None,
                 cancel: threading.Event | None = None):
        return self.pick(model_of(req)).generate(req, on_progress, cancel)

    def control(self, req: ControlRequest, on_progress: OnProgress | None = None, cancel: threading.Event | None = None):
        return self.pick(model_of(req)).control(req, on_progress, cancel)

    def inspect(self, req, on_progress: OnProgress | None = None, cancel: threading.Event | None = None) -> Trajectory:
        return self.pick(model_of(req)).inspect(req, on_progress, cancel)

    def attention(self, req, on_progress: OnProgress | None = None, cancel: threading.Event | None = None):
        return self.pick(model_of(req)).attention(req, on_progress, cancel)

    def walk(self, req: WalkRequest, on_progress: OnProgress | None = None, cancel: threading.Event | None = None):
        return self.pick(model_of(req)).walk(req, on_progress, cancel)

    def preprocess(self, req: ControlRequest):
        return self.pick(model_of(req)).preprocess(req)

    def detect_pose(self, req: ControlRequest):
        return self.pick(model_of(req)).detect_pose(req)

    def draw_pose(self, req: PoseRequest):
        return self.pick(model_of(req)).draw_pose(req)

    def count_tokens(self, req: TokenRequest) -> TokenCount:
        return self.pick(model_of(req)).count_tokens(req)

    def roundtrip(self, req: RoundTripRequest):
        return self.pick(model_of(req)).roundtrip(req)

    def standing(self, model: str = "", steps: int = 25, images: int = 1) -> Standing | None:
        """Where a generate of `steps` steps and `images` images on `model` would stand if it came now (jobs ahead of
        it for a place in the shared batch, the wait to expect); None where jobs do not share the denoiser."""
        engine = self.pick(model)
        if engine.batcher is None:
            return None
        config = dict(engine.model.pipe.scheduler.config)
        return engine.batcher.standing(schedulers.evaluations(engine.model.family.default_scheduler, config, steps),
                                       images)

    def controlnet_source(self, kind: str, model: str = "") -> str:
        return self.pick(model).annotators.source(kind)

    # -- a recorded trajectory goes back to the model that made it ------------------------------
    def step_view(self, traj: Trajectory, index: int):
        return self.pick(traj.request.model).step_view(traj, index)

    def decode_x0(self, traj: Trajectory, index: int):
        return self.pick(traj.request.model).decode_x0(traj, index)

    def attention_view(self, traj: Trajectory, index: int, token=0, resolution: str | None = "all"):
        return self.pick(traj.request.model).attention_view(traj, index, token, resolution)

    def anatomy(self) -> list[Anatomy]:
        """Every loaded model's parts, counted from its own modules."""
        return [engine.anatomy() for engine in self.engines.values()]

    # -- grids, whose rows may come from several models ---------------------------------------
    def rows(self, req: GridRequest) -> list[tuple[Engine, GridRequest]]:
        """Each model's share of a grid: its Engine and the request of its rows (the chosen schedulers that fit
        it, else its default), one seed for all; a grid of one model is its request as it came."""
        if not isinstance(req.models, (list, tuple)):  # not a list: named at the first model's door
            return [(self.first, req)]
        names = [n for k, n in enumerate(req.models) if n not in req.models[:k]]  # a model ticked twice is one
        if len(names) <= 1:
            one = replace(req, models=(), base=replace(req.base, model=names[0])) if names else req
            return [(self.pick(model_of(one)), one)]
        seed = resolve_seed(req.base.seed)
        shares = []
        for name in names:
            engine = self.pick(name)
            fitting = tuple(s for s in req.schedulers if s in engine.limits.schedulers)
            rows = fitting or (engine.model.family.default_scheduler,)
            shares.append((engine, replace(req, models=(), schedulers=rows,
                                           base=replace(req.base, model=name, seed=seed))))
        return shares

    def grid_evaluations(self, req: GridRequest) -> dict[str, int]:
        """Model evaluations of each row ("model · scheduler" when the rows come from several models)."""
        shares = self.rows(req)
        if len(shares) == 1:
            engine, one = shares[0]
            return engine.grid_evaluations(one)
        return {f"{engine.model.name} · {row}": n for engine, one in shares
                for row, n in engine.grid_evaluations(one).items()}

    def grid(self, req: GridRequest, on_progress: OnProgress | None = None,
             cancel: threading.Event | None = None) -> GridResult:
        shares = self.rows(req)
        if len(shares) == 1:
            engine, one = shares[0]
            return engine.grid(one, on_progress, cancel)
        # 1. One progress bar over every model's rows
        costs = [sum(engine.grid_evaluations(one).values()) for engine, one in shares]
        results, done = [], 0
        for (engine, one), cost in zip(shares, costs):
            name = engine.model.name

            def report(p: Progress, done=done, name=name):
                on_progress(replace(p, step=done + p.step, total=sum(costs), label=f"{name} · {p.label}"))

            # 2. Each model runs its own rows (a steps axis: against its own reference run)
            results.append((name, engine.grid(one, report if on_progress else None, cancel)))
            done += cost
        # 3. One result, rows labelled by model
        return GridResult(
            request=replace(results[0][1].request, models=tuple(n for n, _ in results),
                            schedulers=tuple(dict.fromkeys(s for _, r in results for s in r.request.schedulers)),
                            base=replace(results[0][1].request.base, model="")),
            cells=[[replace(c, model=n) for c in row] for n, r in results for row in r.cells],
            sigmas={f"{n} · {s}": v for n, r in results for s, v in r.sigmas.items()},
            seconds=sum(r.seconds for _, r in results), reference=results[0][1].reference,
            flow_sigmas=all(r.flow_sigmas for _, r in results),
            flow_rows=frozenset(f"{n} · {s}" for n, r in results if r.flow_sigmas for s in r.sigmas))
