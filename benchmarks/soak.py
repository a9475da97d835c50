"""A soak: hundreds of mixed requests against the app served as app.py serves it, with its memory, threads
and disk watched from outside.

The app runs in its own process on the bundled model (`python app.py --model bundled`), its output folder
capped small (MAX_OUTPUT_MB 2: about a third of what the run writes) so that pruning runs for most of it. Four clients (a new gradio_client session
every 40 of their requests, as visitors come and go) send every endpoint in turn, with the bad-input
table's rows and runs stopped midway among them. Every 25 requests the server's resident memory (RSS), its
thread count and the sizes of both folders are sampled. After the warm-up (the first `--warmup` requests)
RSS may grow by less than 10%, and the thread count must come back to where it was. Gradio's cache is kept
through the run unless `--cache-hours` asks for it to be swept by age meanwhile.

    python benchmarks/soak.py --requests 500 --write     # figures into BENCHMARKS.md (section "Soak")
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from bad_inputs import FIRST, POSE_JSON, VALID  # noqa: E402  (the tests' table of valid and bad calls)
from sections import write_section  # noqa: E402

SCENE = ROOT / "assets" / "examples" / "scene.png"
GROWTH_LIMIT = 0.10  # resident memory after warm-up may grow by less than this
THREAD_SLACK = 4  # threads at the end (idle) above the post-warm-up count that still count as stable
THREADS_A_CLIENT = 2  # under load, each client's jobs may add this many worker threads for a while
OVER_CAP_MB = 0.25  # the cap is applied after each write: one result (a grid's PNGs) may stand over it until then
MARK_START, MARK_END = "<!-- soak:start -->", "<!-- soak:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:  # deleted while walking (the pruning under test)
            pass
    return total / 1e6


@dataclass
class Sample:
    requests: int
    seconds: float
    rss_mb: float
    threads: int
    outputs_mb: float
    cache_mb: float


@dataclass
class Tally:
    ok: int = 0
    refused_as_expected: int = 0  # bad inputs answered with a named error
    stopped: int = 0  # runs cancelled midway
    failures: list[str] = field(default_factory=list)  # anything else: a valid call that failed, a leak
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            if kind == "failure":
                self.failures.append(detail)
            else:
                setattr(self, kind, getattr(self, kind) + 1)

    @property
    def total(self) -> int:
        return self.ok + self.refused_as_expected + self.stopped + len(self.failures)


class Server:
    """app.py on the bundled model in its own process, on 127.0.0.1, with its folders in `work` and `env` (settings)
    on top of the app's defaults; the room benchmark launches it too."""

    def __init__(self, work: Path, env: dict, start_seconds: float = 300):
        self.work, self.port = work, free_port()
        self.outputs, self.cache = work / "outputs", work / "gradio-cache"
        full = {**os.environ, "PLAYGROUND_OUTPUT_DIR": str(self.outputs), "GRADIO_TEMP_DIR": str(self.cache),
                "SESSION_JOBS": "3", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **env}
        self.log = (work / "server.log").open("w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "bundled", "--host",
                                      "127.0.0.1", "--port", str(self.port)], cwd=work, env=full, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + start_seconds  # a loaded 2-core machine can take minutes
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"the app did not start: see {work / 'server.log'}")
        self.process = psutil.Process(self.proc.pid)

    def sample(self, requests: int, started: float) -> Sample:
        return Sample(requests, time.monotonic() - started, self.process.memory_info().rss / 2**20,
                      self.process.num_threads(), folder_mb(self.outputs), folder_mb(self.cache))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def own_copy(path: Path, work: Path, k: int) -> Path:
    """Client k's copy of an image, one pixel different: each client's results differ from the others'.

    Visitors send their own photos; the soak does too. (Gradio files a picture in its cache by its content; two
    requests that made the same picture once raced on that file and one client fetched an empty file, 1 request
    in 500: ui/cache.py now writes it atomically, and the other endpoints' results still coincide across clients.)"""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image.putpixel((0, 0), (k * 40 % 256, 7, 7))
    out = work / f"{path.stem}-{k}.png"
    image.save(out)
    return out


def valid_calls(person: Path, url: str | None = None, scene: Path = SCENE, k: int = 0) -> dict[str, list]:
    """One valid argument list per endpoint (the bad-input table's), uploads as files for gradio_client; or,
    with `url`, uploaded there once (as a browser does) and named by gradio's FileData, for plain HTTP calls.
    Client `k` draws its pose at its own width."""
    from gradio_client import handle_file

    files = {"SCENE": handle_file(str(scene)), "PERSON": handle_file(str(person))}
    if url:
        with httpx.Client(base_url=url, timeout=60) as http:
            files = {name: {"path": http.post("gradio_api/upload", files={"files": path.open("rb")}).json()[0],
                            "meta": {"_type": "gradio.FileData"}} for name, path in (("SCENE", scene), ("PERSON", person))}
    calls = {}
    for endpoint, params in VALID.items():
        params = dict(params)
        if params.get("image") in files:
            params["image"] = files[params["image"]]
        if params.get("pose") == "POSE":
            params["pose"] = POSE_JSON
        if endpoint == "/draw_pose":
            params["width"] = 64 + 8 * k
        calls[endpoint] = list(params.values())
    calls["/vae_roundtrip"] = [files["SCENE"], ""]  # the image, the model ("": the first)
    return calls


def raw_bad_call(url: str, endpoint: str, data: list) -> str:
    """A bad call over plain HTTP (NaN and wrong types as JSON): the message it got back, or "" if none."""
    with httpx.Client(base_url=url, timeout=60) as http:
        joined = http.post(f"gradio_api/call{endpoint}", content=json.dumps({"data": data}),
                           headers={"content-type": "application/json"})
        if "event_id" not in joined.json():
            return f"(not queued: HTTP {joined.status_code} {joined.text[:200]})"
        event = joined.json()["event_id"]
        text = http.get(f"gradio_api/call{endpoint}/{event}").text
    kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    datas = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return datas[-1] if kinds and kinds[-1] == "error" else ""


def leaks(message: str) -> bool:
    """Whether a message shows anything of the server: a traceback or one of its paths."""
    return "Traceback" in message or tempfile.gettempdir() + "/" in message or str(ROOT) in message


def visitor(url: str, quota: int, seed: int, calls: dict, raw: dict, tally: Tally, counter, per_session: int = 40
            ) -> None:
    """One client's share: valid calls over every endpoint, bad rows, and runs stopped midway."""
    from gradio_client import Client

    rng, client, done = random.Random(seed), None, 0
    valid_names = [ep for ep in calls if ep != "/pose"] * 3 + ["/pose"]  # the detector is the slow one
    while done < quota:
        if client is None or done % per_session == 0:
            if client is not None:
                client.close()
            client = Client(url, verbose=False)  # a new visitor
        roll = rng.random()
        try:
            if roll < 0.15:  # a bad value on some endpoint
                endpoint, name, value, words = rng.choice(FIRST)
                data = list({**dict(zip(VALID[endpoint], raw[endpoint])), name: value}.values())
                message = raw_bad_call(url, endpoint, data)
                # named: the table's first words (the parameter and value; the rest are the tiny test model's ranges)
                if message and not leaks(message) and words[0].lower() in message.lower():
                    tally.add("refused_as_expected")
                else:
                    tally.add("failure", f"{endpoint} {name}={value!r}: {message[:200]!r}")
            elif roll < 0.22:  # a long run, stopped midway
                job = client.submit(*{**dict(zip(VALID["/generate"], calls["/generate"])), "steps": 50}.values(),
                                    api_name="/generate")
                time.sleep(rng.uniform(0.05, 0.4))
                job.cancel()
                try:
                    job.result(timeout=60)
                except Exception:  # noqa: BLE001  (stopped: no result, as expected)
                    pass
                tally.add("stopped")
            else:
                endpoint = rng.choice(valid_names)
                args = list(calls[endpoint])
                if "seed" in VALID.get(endpoint, {}):  # a new seed: new files every time
                    args[list(VALID[endpoint]).index("seed")] = rng.randrange(10_000)
                client.predict(*args, api_name=endpoint)
                tally.add("ok")
        except Exception as exc:  # noqa: BLE001
            tally.add("failure", f"{type(exc).__name__}: {str(exc)[:200]}")
        done += 1
        counter()
    client.close()


def run(requests: int = 500, clients: int = 4, warmup: int = 100, every: int = 25, max_output_mb: float = 2.0,
        cache_hours: float = 0.0, same_images: bool = False) -> dict:
    from skimage import data as skimage_data
    from PIL import Image

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    person = work / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(person)
    server = Server(work, {"MAX_OUTPUT_MB": str(max_output_mb), "CACHE_HOURS": str(cache_hours),
                           # the limits the bad-input table's messages are written for (tests/conftest.py's tiny_settings)
                           "MAX_STEPS": "50", "MAX_SIZE": "128", "MAX_IMAGES": "4", "MAX_GRID_CELLS": "6"}, 180)
    tally, samples, lock = Tally(), [], threading.Lock()
    started = time.monotonic()
    sent = [0]

    def counter():
        with lock:
            sent[0] += 1
            if sent[0] % every == 0:
                samples.append(server.sample(sent[0], started))

    try:
        samples.append(server.sample(0, started))
        mine = [(SCENE, person) if same_images else (own_copy(SCENE, work, k), own_copy(person, work, k))
                for k in range(clients)]
        calls = [valid_calls(p, None, s, 0 if same_images else k) for k, (s, p) in enumerate(mine)]
        raw = valid_calls(person, server.url)
        share = [requests // clients + (k < requests % clients) for k in range(clients)]
        threads = [threading.Thread(target=visitor, args=(server.url, share[k], 1000 + k, calls[k], raw, tally,
                                                          counter)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(2.0)  # idle: the last jobs' worker threads have ended
        samples.append(server.sample(sent[0], started))
        alive = server.proc.poll() is None
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    after = [s for s in samples if s.requests >= warmup]
    base = after[0]
    result = {
        "requests": tally.total, "clients": clients, "seconds": round(time.monotonic() - started, 1),
        "ok": tally.ok, "bad_inputs_named": tally.refused_as_expected, "stopped": tally.stopped,
        "failures": tally.failures, "server_alive": alive, "warmup": warmup,
        "rss_after_warmup_mb": round(base.rss_mb, 1), "rss_end_mb": round(after[-1].rss_mb, 1),
        "rss_max_mb": round(max(s.rss_mb for s in after), 1),
        "rss_growth": round(max(s.rss_mb for s in after) / base.rss_mb - 1, 4),
        "threads_after_warmup": base.threads, "threads_end": after[-1].threads,
        "threads_max": max(s.threads for s in after),
        "outputs_cap_mb": max_output_mb, "outputs_max_mb": round(max(s.outputs_mb for s in samples), 2),
        "cache_hours": cache_hours, "cache_max_mb": round(max(s.cache_mb for s in samples), 2),
        "cache_end_mb": round(samples[-1].cache_mb, 2),
        "samples": [vars(s) for s in samples],
    }
    result["passed"] = passed(result)
    return result


def threads_stable(r: dict) -> bool:
    """No thread leak: idle at the end within THREAD_SLACK of the count after warm-up, and under load within
    THREADS_A_CLIENT a client of it."""
    return (r["threads_end"] <= r["threads_after_warmup"] + THREAD_SLACK
            and r["threads_max"] <= r["threads_after_warmup"] + THREADS_A_CLIENT * r["clients"])


def passed(r: dict) -> bool:
    return (not r["failures"] and r["server_alive"] and r["rss_growth"] < GROWTH_LIMIT and threads_stable(r)
            and r["outputs_max_mb"] <= r["outputs_cap_mb"] + OVER_CAP_MB)


def report(r: dict) -> str:
    verdict = lambda ok: "met" if ok else "NOT MET"  # noqa: E731
    rows = [
        ("requests (every endpoint; bad inputs; runs stopped midway)",
         f"{r['requests']}: {r['ok']} valid, {r['bad_inputs_named']} bad (each named, no server path), "
         f"{r['stopped']} stopped; {len(r['failures'])} failed", "0 failed", verdict(not r["failures"])),
        (f"resident memory after warm-up ({r['warmup']} requests) -> largest after it",
         f"{r['rss_after_warmup_mb']} -> {r['rss_max_mb']} MiB ({100 * r['rss_growth']:+.1f}%), "
         f"{r['rss_end_mb']} at the end", f"< {GROWTH_LIMIT:.0%} growth", verdict(r["rss_growth"] < GROWTH_LIMIT)),
        ("server threads after warm-up -> most after it (under load) -> at the end (idle)",
         f"{r['threads_after_warmup']} -> {r['threads_max']} -> {r['threads_end']}",
         f"end within {THREAD_SLACK}, load within {THREADS_A_CLIENT * r['clients']}", verdict(threads_stable(r))),
        ("outputs/ at most", f"{r['outputs_max_mb']} MB", f"cap {r['outputs_cap_mb']} MB (MAX_OUTPUT_MB)",
         verdict(r["outputs_max_mb"] <= r["outputs_cap_mb"] + OVER_CAP_MB)),
        ("gradio cache at most -> at the end", f"{r['cache_max_mb']} -> {r['cache_end_mb']} MB",
         f"pruned by age (CACHE_HOURS={r['cache_hours']})" if r["cache_hours"] else "kept through the run "
         "(CACHE_HOURS=0)", "-"),
    ]
    lines = [f"{r['clients']} clients, {r['requests']} requests in {r['seconds']} s, the bundled model on this "
             f"machine's CPU (`python benchmarks/soak.py --requests {r['requests']} --write`):", "",
             "| what | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "RSS (MiB) and threads every 25 requests: " + ", ".join(
        f"{s['requests']}: {s['rss_mb']:.0f}/{s['threads']}" for s in r["samples"])]
    return "\n".join(lines)


def write(text: str, path: Path) -> None:
    """Put `text` in BENCHMARKS.md's soak section (made at the end the first time)."""
    write_section(path, "soak", "## Soak: memory, threads and disk over hundreds of requests", text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--cache-hours", type=float, default=0.0,
                    help="CACHE_HOURS for the app (0: gradio's cache kept through the run; 0.02: swept every 72 s)")
    ap.add_argument("--same-images", action="store_true",
                    help="every client sends the same images and pose: requests that make one picture at once")
    ap.add_argument("--write", action="store_true", help="put the figures in BENCHMARKS.md")
    ap.add_argument("--json", type=Path, help="also save every figure as JSON")
    a = ap.parse_args(argv)
    r = run(a.requests, a.clients, a.warmup, cache_hours=a.cache_hours, same_images=a.same_images)
    text = report(r)
    print(text)
    for failure in r["failures"][:20]:
        print("FAILED:", failure)
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    if a.write:
        write(text, ROOT / "BENCHMARKS.md")
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
