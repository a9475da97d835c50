"""ZeroGPU's start-up: app.py in a process set up as ZeroGPU's main process (the `spaces` package from PyPI,
SPACES_ZERO_GPU=true, a device API that answers every call with an empty 200) comes up with its models on
the (emulated) cuda device, and every model handler asks for a lease that grows with its request."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# app.py's own start-up (playground.gpu imported first, then app.build), a report of what it built, then launch
MAIN = """
import json, sys
import app
from playground import gpu
from playground.settings import parse_args
from playground.ui import launch_options
from playground.ui.common import GPU

settings = parse_args(["--port", sys.argv[1]])
models, demo = app.build(settings)
handlers = {}
for fn in demo.fns.values():
    if fn.concurrency_id != GPU:
        continue
    import inspect
    names = list(inspect.signature(fn.fn).parameters)
    asks = getattr(fn.fn, "lease_seconds", None)
    row = {"leased": asks is not None and hasattr(fn.fn, "zerogpu"), "params": names}
    if asks is not None:
        base = [getattr(c, "value", None) for c in fn.inputs]
        def ask(**changes):
            args = list(base)
            for name, value in changes.items():
                args[names.index(name)] = value
            return asks(*args)
        row["default"] = ask()
        if "steps" in names:
            row["steps 4"], row["steps 40"] = ask(steps=4), ask(steps=40)
        if "schedulers" in names:  # a grid: each row is its own run
            rows = base[names.index("schedulers")]
            row["1 row"], row["all rows"] = ask(schedulers=rows[:1]), ask(schedulers=rows)
            row["rows"] = len(rows)
    handlers[fn.api_name or fn.name] = row
from playground.ui import live
live_boxes = [b for b in demo.blocks.values() if getattr(b, "label", None) == "Live: draw again at every edit"]
print("REPORT " + json.dumps({"zero_gpu": gpu.ZERO_GPU, "handlers": handlers,
                              "live": [[b.interactive, b.info == live.ZERO_GPU_NOTE] for b in live_boxes],
                              "devices": [str(e.model.device) for e in models.engines.values()]}), flush=True)
demo.queue(max_size=settings.queue_size).launch(**launch_options(settings))
"""


class DeviceAPI(http.server.BaseHTTPRequestHandler):
    """ZeroGPU's device API, answering nothing: an empty 200 to every call (the start-up report among them)."""

    calls: list[str] = []

    def do_POST(self):
        DeviceAPI.calls.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


def test_the_app_comes_up_as_zerogpus_main_process_with_leases_sized_by_the_request(tmp_path):
    api = http.server.HTTPServer(("127.0.0.1", 0), DeviceAPI)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": f"http://127.0.0.1:{api.server_port}",
           "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "tensors"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-c", MAIN, str(port)], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        api.shutdown()
    text = log.read_text()
    report = json.loads(next(line for line in text.splitlines() if line.startswith("REPORT "))[7:])
    assert report["zero_gpu"] and len(report["devices"]) == 2 and set(report["devices"]) <= {"cuda", "cuda:0"}
    assert "/startup-report" in DeviceAPI.calls  # the start-up ZeroGPU's main process makes before serving
    assert "CUDA has been initialized" not in text and "Low-level CUDA init" not in text
    handlers = report["handlers"]
    assert {"generate", "grid", "control", "walk", "inspect", "attention", "vae_roundtrip", "pose",
            "preprocess"} <= set(handlers)
    for name, row in handlers.items():
        assert row["leased"], f"{name} runs on the model without a ZeroGPU lease"
        assert 10 <= row["default"] <= 120, (name, row)  # LEASE_FLOOR to MAX_GPU_SECONDS
        if "steps" in row["params"]:  # a denoising action: more steps, a longer lease
            assert row["steps 4"] < row["steps 40"], (name, row)
    for name in ("vae_roundtrip", "pose", "preprocess"):  # no denoising: the floor
        assert handlers[name]["default"] == 10, (name, handlers[name])
    assert report["live"] == [[False, True]]  # Live's checkbox off, saying why; its handler not wired
    assert not any("stamp" in row["params"] for row in handlers.values())
    grid = handlers["grid"]
    assert grid["rows"] >= 2 and grid["1 row"] < grid["all rows"], grid
    assert max(r.get("steps 40", 0) for r in handlers.values()) <= 120  # MAX_GPU_SECONDS
