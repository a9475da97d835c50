"""A workshop room: N learners on one machine, each sending a generate every 10-30 s (a third of them one grid too),
against the app served as app.py serves it, with jobs one at a time and with visitors sharing the denoiser, side by
side in one run.

Each setting launches the app on 127.0.0.1 in its own process on the bundled U-Net model (`python app.py --model
bundled`), at the app's defaults unless the setting says otherwise. Every learner is a gradio_client session of its
own: it thinks 10-30 s, sends a generate (the API's defaults: the form's), waits for its picture, and again, for
`--minutes`; one learner in three sends one grid (the Grid tab's defaults) instead of one of its generates. Nothing
is sent after the time is up, and the jobs sent are waited for, a bounded time. Reported: the images made a minute
(generates' images and grids' cells, from the first send to the last picture) and the wait from sending a generate to
its picture: median, 95th percentile, longest.

    python benchmarks/room.py --learners 30 --write                  # off and on, into BENCHMARKS.md ("Room")
    python benchmarks/room.py --learners 30 --facilitator --write    # and what a facilitator can set
    python benchmarks/room.py --learners 30 --flat-out --write       # and what the machine makes flat out
    python benchmarks/room.py --quick                                # seconds: 3 learners, a few jobs each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from sections import write_section  # noqa: E402
from soak import Server  # noqa: E402  (app.py launched in its own process)

BEFORE_P95 = 73.7  # s: thirty learners' 95th-percentile wait with every job alone, measured before sharing
BATCH = 16  # images one shared call carries (BATCH_JOBS) and jobs let into the engine at once (GPU_CONCURRENCY)


@dataclass(frozen=True)
class Setting:
    name: str
    env: dict = field(default_factory=dict)  # the app's environment (its settings)
    generate: dict = field(default_factory=dict)  # what learners change on the form (steps, size)
    live: bool = False  # learners type with Live on: a few 8-step runs before each generate
    think: tuple[float, float] | None = None  # seconds between a learner's jobs, when not the room's 10-30


OFF = Setting("batching off", {"BATCH_JOBS": "0", "GPU_CONCURRENCY": "1"})
ON = Setting("batching on", {"BATCH_JOBS": str(BATCH), "GPU_CONCURRENCY": str(BATCH)})
FACILITATOR = [
    Setting("on, 12 steps", ON.env, {"steps": 12}),
    Setting("on, 8 steps", ON.env, {"steps": 8}),
    Setting("on, 12 steps, Live on", ON.env, {"steps": 12}, live=True),
]
# the machine flat out: every learner sends again as soon as its picture comes, so the images a minute are what the
# machine can make, not what thirty people thinking between pictures ask for
FLAT_OUT = [replace(OFF, name="off, flat out", think=(0.0, 0.0)), replace(ON, name="on, flat out", think=(0.0, 0.0))]
LIVE_STEPS = 8  # what turning Live on sets the steps to (ui/live.py)


@dataclass
class Done:
    kind: str  # "generate", "grid" or "live"
    sent: float
    seconds: float
    images: int
    error: str = ""


def learner(url: str, k: int, setting: Setting, start: float, seconds: float, think: tuple[float, float],
            grid: bool, done: list, lock: threading.Lock, drain: float) -> None:
    """One learner: think, send, wait for the picture, until `seconds` after `start` (then no new job)."""
    from gradio_client import Client

    rng = random.Random(1000 + k)
    client = Client(url, verbose=False)
    grid_turn = rng.randrange(1, 3) if grid else -1  # which of its turns is a grid
    turn = 0
    try:
        time.sleep(rng.uniform(0, think[1]))  # the room does not all press at once
        while time.monotonic() - start < seconds:
            jobs = [("live", {"steps": LIVE_STEPS, "seed": rng.randrange(10_000)})] * 3 if setting.live else []
            kind = "grid" if turn == grid_turn else "generate"
            jobs.append((kind, {"seed": rng.randrange(10_000), **(setting.generate if kind == "generate" else {})}))
            for what, args in jobs:
                sent = time.monotonic()
                if sent - start >= seconds:
                    break
                endpoint = "/grid" if what == "grid" else "/generate"
                prompt = f"a {rng.choice(['red', 'blue', 'green'])} {rng.choice(['circle', 'square', 'star'])}"
                job = None
                try:
                    job = client.submit(prompt=prompt, negative_prompt="", api_name=endpoint, **args)
                    out = job.result(timeout=max(5.0, start + seconds + drain - time.monotonic()))
                    images = len(out[1]) if isinstance(out, (list, tuple)) and len(out) > 1 and isinstance(
                        out[1], list) else 1
                    record = Done(what, sent - start, time.monotonic() - sent, images)
                except TimeoutError:  # still waiting when the run ended: its wait is at least this long
                    record = Done(what, sent - start, time.monotonic() - sent, 0, "unfinished")
                    job.cancel()
                except Exception as exc:  # noqa: BLE001  (counted, never hidden)
                    record = Done(what, sent - start, time.monotonic() - sent, 0, f"{type(exc).__name__}: {exc}"[:200])
                with lock:
                    done.append(record)
                if what == "live":
                    time.sleep(rng.uniform(1.0, 2.0))  # the next edit
            turn += 1
            time.sleep(rng.uniform(*think))
    finally:
        client.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the nearest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_setting(setting: Setting, learners: int, seconds: float, think: tuple[float, float], drain: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="room-"))
    server = Server(work, setting.env)
    done, lock = [], threading.Lock()
    load: list[float] = []
    try:
        psutil.cpu_percent(None)
        start = time.monotonic()
        threads = [threading.Thread(target=learner, args=(server.url, k, setting, start, seconds, think, k % 3 == 0,
                                                          done, lock, drain), daemon=True) for k in range(learners)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) and time.monotonic() - start < seconds + drain + 30:
            time.sleep(2.0)
            load.append(os.getloadavg()[0])
        for t in threads:
            t.join(1.0)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    ok = [d for d in done if not d.error]
    unfinished = [d for d in done if d.error == "unfinished"]
    # an unfinished generate's wait counts as the time it had waited when the run ended (a lower bound)
    generates = [d.seconds for d in ok + unfinished if d.kind == "generate"]
    first = min((d.sent for d in done), default=0.0)
    last = max((d.sent + d.seconds for d in ok), default=first + 1)
    images = sum(d.images for d in ok)
    return {
        "setting": setting.name, "env": setting.env, "generate": setting.generate, "live": setting.live,
        "learners": learners, "seconds": seconds, "jobs": len(done), "unfinished": len(unfinished),
        "errors": [d.error for d in done if d.error and d.error != "unfinished"],
        "generates": len(generates), "unfinished_generates": sum(d.kind == "generate" for d in unfinished),
        "grids": sum(d.kind == "grid" for d in ok), "lives": sum(d.kind == "live" for d in ok),
        "images": images, "images_a_minute": 60 * images / max(last - first, 1e-9),
        "wait_median": statistics.median(generates) if generates else float("nan"),
        "wait_p95": percentile(generates, 95), "wait_max": max(generates, default=float("nan")),
        "grid_wait_median": statistics.median([d.seconds for d in ok if d.kind == "grid"] or [float("nan")]),
        "live_wait_median": statistics.median([d.seconds for d in ok if d.kind == "live"] or [float("nan")]),
        "load_mean": sum(load) / len(load) if load else float("nan"), "load_max": max(load, default=float("nan")),
    }


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def report(results: list[dict], command: str) -> str:
    names = [r["setting"] for r in results]
    cell = lambda v, unit="": "-" if v != v else f"{v:.1f}{unit}"  # noqa: E731  (NaN: none made)
    rows = [
        ("images a minute", [cell(r["images_a_minute"]) for r in results]),
        ("wait, median (send -> picture)", [cell(r["wait_median"], " s") for r in results]),
        ("wait, 95th percentile", [cell(r["wait_p95"], " s") for r in results]),
        ("wait, longest", [cell(r["wait_max"], " s") for r in results]),
        ("generates / grids / Live runs done", [f"{r['generates'] - r['unfinished_generates']} / {r['grids']} / "
                                                f"{r['lives']}" for r in results]),
        ("jobs still waiting when the run ended (their wait counted as waited so far)",
         [str(r["unfinished"]) for r in results]),
        ("grid's wait, median", [cell(r["grid_wait_median"], " s") for r in results]),
        ("Live run's wait, median", [cell(r["live_wait_median"], " s") for r in results]),
        ("errors", [str(len(r["errors"])) for r in results]),
        ("load average while it ran: mean / most", [f"{r['load_mean']:.1f} / {r['load_max']:.1f}" for r in results]),
    ]
    r0 = results[0]
    lines = [f"{r0['learners']} learners for {r0['seconds']:.0f} s each setting, the bundled U-Net model at the app's "
             f"defaults unless the column says otherwise, on {machine()} (`{command}`):", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {a} | " + " | ".join(b) + " |" for a, b in rows]
    by = {r["setting"]: r for r in results}
    if OFF.name in by and ON.name in by:
        off, on = by[OFF.name], by[ON.name]
        gain = on["images_a_minute"] / off["images_a_minute"] if off["images_a_minute"] else float("nan")
        lines += ["", f"Sharing the denoiser: {gain:.2f}x the images a minute of one job at a time (goal: at least "
                  f"1.5x); the 95th-percentile wait {on['wait_p95']:.1f} s against {off['wait_p95']:.1f} s alone "
                  f"(goal with thirty learners: at most {BEFORE_P95 / 2:.2f} s, half of the {BEFORE_P95} s measured "
                  "before sharing)."]
    if FLAT_OUT[0].name in by and FLAT_OUT[1].name in by:
        off, on = (by[s.name]["images_a_minute"] for s in FLAT_OUT)
        lines += ["", f"Flat out (no learner thinking between pictures): {on / off:.2f}x the images a minute of one "
                  "job at a time."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--drain", type=float, default=180.0, help="seconds after the last send that jobs are waited for")
    ap.add_argument("--facilitator", action="store_true", help="also the settings a facilitator can choose")
    ap.add_argument("--flat-out", action="store_true", help="also both with no thinking: what the machine can make")
    ap.add_argument("--quick", action="store_true", help="3 learners, 20 s, thinking 1-3 s: a check that it runs")
    ap.add_argument("--write", action="store_true", help="put the table in BENCHMARKS.md")
    ap.add_argument("--out", type=Path, help="write the table here (--write: BENCHMARKS.md)")
    ap.add_argument("--json", type=Path, help="also save every figure as JSON")
    ap.add_argument("--threads", type=int, help="the app's torch threads (OMP_NUM_THREADS); default: torch's own")
    a = ap.parse_args(argv)
    settings = [OFF, ON] + (FACILITATOR if a.facilitator else []) + (FLAT_OUT if a.flat_out else [])
    if a.threads:  # the app's processes inherit it (and the report's torch, which says so)
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    if a.quick:
        learners, seconds, think, drain = 2, 10.0, (1.0, 2.0), 60.0
        settings = [replace(s, generate={"steps": 4}) for s in (OFF, ON)]
    else:
        learners, seconds, think, drain = a.learners, 60 * a.minutes, (10.0, 30.0), a.drain
    command = "python benchmarks/room.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = [run_setting(s, learners, seconds, s.think or think, drain) for s in settings]
    text = report(results, command.strip())
    print(text)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    out = a.out or (ROOT / "BENCHMARKS.md" if a.write else None)
    if out is not None:
        if not out.exists():
            out.write_text("# Benchmarks\n")
        write_section(out, "room", "## Room: thirty learners on one machine", text)
    return text


if __name__ == "__main__":
    main()
