"""A room full of people: bad input on every endpoint, concurrent load, a full queue, faults.

All traffic goes to an app launched on 127.0.0.1 by these tests; every loop is bounded.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image
from skimage import data as skimage_data

from playground.engine import Engine
from playground.errors import OutOfMemory
from playground.schema import GenerateRequest, RoundTripRequest
from playground.sampling import Cancelled
from playground.settings import ASSETS

from playground.ui.fairness import SETTLE_SECONDS as SETTLE

ROOT = ASSETS.parent  # the project's folder on the server

from bad_inputs import FIRST, POSE_JSON, VALID, case_id
from conftest import free_port, launched, settled, tiny_settings, wait_until

pytestmark = pytest.mark.slow
SCENE = ASSETS / "examples" / "scene.png"


@pytest.fixture(scope="module")
def app(serve, tiny_model, tmp_path_factory):
    from diffusers import ControlNetModel

    canny = tmp_path_factory.mktemp("controlnet") / "canny"
    ControlNetModel.from_unet(tiny_model.pipe.unet, conditioning_embedding_out_channels=(4, 4, 8, 8)).save_pretrained(canny)
    engine, client = serve(max_grid_cells=6, gpu_concurrency=4, queue_size=64, controlnets={"canny": str(canny)},
                           session_jobs=0)  # 4 clients carry a room's load here; fairness has its own test
    url = client.src if client.src.endswith("/") else client.src + "/"
    person = tmp_path_factory.mktemp("person") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(person)  # a photo with a person: scikit-image ships it
    with httpx.Client(base_url=url, timeout=60) as http:  # uploaded once, like a browser does
        uploaded = {name: http.post("gradio_api/upload", files={"files": path.open("rb")}).json()[0]
                    for name, path in (("SCENE", SCENE), ("PERSON", person))}
    valid = {ep: dict(params) for ep, params in VALID.items()}
    for params in valid.values():
        if params.get("image") in uploaded:
            params["image"] = {"path": uploaded[params["image"]], "meta": {"_type": "gradio.FileData"}}
        if params.get("pose") == "POSE":
            params["pose"] = POSE_JSON
    return engine, client, url, valid


def raw_call(url: str, endpoint: str, data: list) -> tuple[str, str]:
    """POST to gradio's REST call API with plain JSON (NaN allowed, as Python's json writes it)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        event = http.post(f"gradio_api/call{endpoint}", content=json.dumps({"data": data}),
                          headers={"content-type": "application/json"}).json()["event_id"]
        text = http.get(f"gradio_api/call{endpoint}/{event}").text
    kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    datas = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return kinds[-1], datas[-1]


# The whole table runs against the validators in test_validation.py; here one row per parameter per
# endpoint shows that each reaches the browser as the same named error, and the server goes on.
@pytest.mark.parametrize("endpoint,name,value,words", FIRST, ids=[case_id(e, n, v) for e, n, v, _ in FIRST])
def test_bad_input_matrix(app, endpoint, name, value, words):
    _, _, url, valid = app
    data = list({**valid[endpoint], name: value}.values())
    kind, message = raw_call(url, endpoint, data)
    assert kind == "error", f"{endpoint} accepted {name}={value!r}"
    message = json.loads(message)
    message = message["error"] if isinstance(message, dict) else str(message)
    assert "Traceback" not in message
    for server_path in (tempfile.gettempdir() + "/", str(ROOT)):  # nothing of the server's files
        assert server_path not in message, message
    for w in words:
        assert w.lower() in message.lower(), message
    kind, _ = raw_call(url, endpoint, list(valid[endpoint].values()))  # the very next valid call works
    assert kind == "complete"


def test_bad_uploads(app, tmp_path):
    _, client, _, _ = app
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "notes.png").write_text("hello")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    for path, words in ((tmp_path / "broken.png", "broken.png is not a readable image"),
                        (tmp_path / "notes.png", "notes.png is not a readable image")):
        with pytest.raises(Exception, match=words) as err:
            client.predict(handle_file(str(path)), api_name="/vae_roundtrip")
        assert tempfile.gettempdir() + "/" not in str(err.value)  # named by its own file name only
        with pytest.raises(Exception, match=path.name):
            client.predict(handle_file(str(path)), api_name="/restore")
    with pytest.raises(Exception, match="plain.png has no 'parameters' text chunk"):
        client.predict(handle_file(str(tmp_path / "plain.png")), api_name="/restore")
    # 50 megapixels: accepted and fitted to MAX_SIZE (documented), not a crash
    Image.new("RGB", (8660, 5774), (90, 140, 200)).save(tmp_path / "huge.png")
    orig, recon, channels, text = client.predict(handle_file(str(tmp_path / "huge.png")), api_name="/vae_roundtrip")
    assert max(Image.open(orig).size) <= 128 and "48x smaller" in text
    assert client.predict(handle_file(str(SCENE)), api_name="/vae_roundtrip")[3]  # and the next one works


def test_too_many_pixels_is_refused_before_decoding(app, tmp_path, monkeypatch):
    engine, _, _, _ = app
    monkeypatch.setattr(engine.settings, "max_upload_pixels", 1000)
    Image.new("RGB", (100, 20)).save(tmp_path / "wide.png")
    with pytest.raises(Exception, match="wide.png is 100x20 = 0 megapixels; the limit is 0"):
        engine.roundtrip(RoundTripRequest(tmp_path / "wide.png"))


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# Mixed requests across tabs: distinct seeds, schedulers, sizes, prompts.
def load_jobs() -> list[tuple[str, list]]:
    jobs = []
    for k in range(6):
        jobs.append(("/generate", [f"shape {k}", "blurry" if k % 2 else "", 100 + k, 3 + k % 3, 2.0 + k,
                                   ["Euler a", "DPM++ 2M SDE Karras", "UniPC", "Heun", "DDIM", "LMS"][k], 64,
                                   64 + 8 * (k % 2), 1 + k % 2]))
    for k in range(4):
        jobs.append(("/grid", [f"grid {k}", "", 200 + k, 2 + k % 2, [["Euler", "DDIM"], ["Euler a"], ["Heun", "PNDM"],
                                                                    ["DPM++ 2M"]][k], "1, 4, 8", 64, 64, "cfg", 7.5]))
    for k in range(4):
        jobs.append(("/inspect", [f"inspect {k}", "", 300 + k, 3, 3.0 + k, ["Euler a", "DDIM", "UniPC", "LMS"][k], 64,
                                  64, ["the prompt", "the negative prompt", "off", "prompt"][k]]))
    jobs += [("/vae_roundtrip", [handle_file(str(SCENE))])] * 2
    for k in range(2):
        jobs.append(("/control", [handle_file(str(SCENE)), "Canny edges from the photo", "canny", 80 + 20 * k, 200,
                                  "crop", 1.0, 0.0, 1.0, f"control {k}", "", 400 + k, 3, 7.5, "DDIM", 64, 64, 1]))
    return jobs


def fingerprint(endpoint: str, out) -> list[np.ndarray]:
    if endpoint == "/generate":
        return [pixels(item["image"]) for item in out[1]]
    if endpoint in ("/grid", "/control"):
        return [pixels(item["image"]) for item in out[1]]
    if endpoint == "/inspect":
        from safetensors.torch import load_file

        return [pixels(out[0])] + [t.numpy() for t in load_file(out[2]).values()]
    return [pixels(out[1])]


def test_concurrent_load_mixed_across_tabs(app):
    _, _, url, _ = app
    jobs = load_jobs()
    assert len(jobs) >= 16
    clients = [Client(url, verbose=False) for _ in range(4)]
    start = time.perf_counter()
    submitted = [clients[k % 4].submit(*args, api_name=ep) for k, (ep, args) in enumerate(jobs)]
    results = [job.result(timeout=180) for job in submitted]  # raises if any job errored
    elapsed = time.perf_counter() - start
    for (ep, args), out in zip(jobs, results):
        alone = clients[0].predict(*args, api_name=ep)  # the same request, nothing else running
        got, want = fingerprint(ep, out), fingerprint(ep, alone)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want)), (ep, args)
    for c in clients:
        c.close()
    print(f"\n{len(jobs)} concurrent jobs across 5 endpoints: all completed in {elapsed:.1f} s, 0 errors, "
          f"each identical to the same request run alone")


def test_a_session_stays_the_same_size_over_many_jobs(tiny_model, tiny_dir, tmp_path):
    # gradio 6 files one more block in a session each time an event yields gr.skip() and then a value
    # (playground/ui/sessions.py); every streaming endpoint does, so a session grew with every job it ran
    from playground.ui import build_app, launch_options, sessions

    settings = tiny_settings(tiny_dir, port=free_port(), output_dir=tmp_path, controlnets={}, cache_hours=0)
    demo = build_app(Engine(tiny_model, settings), settings)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    jobs = [job for job in load_jobs() if job[0] in ("/generate", "/grid", "/inspect")]
    try:
        client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
        sizes = []
        for _ in range(3):
            for endpoint, args in jobs:
                client.predict(*args, api_name=endpoint)
            sizes.append(sessions.size(demo, client.session_hash))
        client.close()
    finally:
        demo.close()
    assert sizes[0] > 0 and sizes == [sizes[0]] * 3, f"the session's blocks after each round of jobs: {sizes}"


def slow_engine(tiny_model, settings, monkeypatch, seconds: float) -> Engine:
    """An Engine on the tiny model whose every UNet call takes `seconds` longer: jobs wait in the queue."""
    engine = Engine(tiny_model, settings)
    unet = engine.components.unet
    fast = unet.forward

    def slow_forward(*a, **k):
        time.sleep(seconds)
        return fast(*a, **k)

    monkeypatch.setattr(unet, "forward", slow_forward)
    return engine


def noting(action, name: str, served: list):
    """`action`, noting `name` in `served` each time it starts (the order the Engine serves its jobs in)."""
    def run(*args, **kwargs):
        served.append(name)
        return action(*args, **kwargs)
    return run


def outcome(job, timeout: float = 120) -> str:
    """"ok", or the error a gradio_client job ended with."""
    try:
        job.result(timeout=timeout)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return str(exc)


def test_full_queue_says_busy(tiny_model, tiny_dir, tmp_path, monkeypatch):
    settings = tiny_settings(tiny_dir, port=free_port(), output_dir=tmp_path, gpu_concurrency=1, queue_size=1,
                             session_jobs=0)
    engine = slow_engine(tiny_model, settings, monkeypatch, 0.1)  # so that the queue fills
    with launched(engine, settings) as url:
        client = Client(url, verbose=False)
        args = list({**VALID["/generate"], "steps": 20}.values())
        jobs = [client.submit(*args, api_name="/generate") for _ in range(4)]
        outcomes = [outcome(job) for job in jobs]
        # the submits race, so which job got in first varies; what holds: some ran, the rest were told
        busy = [o for o in outcomes if o != "ok"]
        assert "ok" in outcomes and busy and all("queue is full" in o.lower() for o in busy), outcomes
        client.close()


def test_one_visitor_flooding_grids_does_not_hold_up_another(tiny_model, tiny_dir, tmp_path, monkeypatch):
    """SESSION_JOBS=2: a client that submits 8 grids at once gets 2 in and 6 refused with the reason; another
    client's generate then waits for those 2 only; jobs that finished or were stopped are counted out."""
    settings = tiny_settings(tiny_dir, port=free_port(), output_dir=tmp_path, gpu_concurrency=1, queue_size=64,
                             session_jobs=2, max_grid_cells=6)
    engine = slow_engine(tiny_model, settings, monkeypatch, 0.02)
    served: list[str] = []
    for action in ("grid", "generate"):
        monkeypatch.setattr(engine, action, noting(getattr(engine, action), action, served))
    grid = list({**VALID["/grid"], "schedulers": ["Euler", "DDIM", "Heun"], "steps": 6}.values())
    generate = list({**VALID["/generate"], "steps": 4}.values())
    with launched(engine, settings) as url:
        flooder, visitor = Client(url, verbose=False), Client(url, verbose=False)
        quick = list({**VALID["/generate"], "steps": 1}.values())
        for _ in range(6):  # one after another, each done before the next: never refused, however quick
            visitor.predict(*quick, api_name="/generate")
        flooder.predict(*grid, api_name="/grid")
        served.clear()
        flood = [flooder.submit(*grid, api_name="/grid") for _ in range(8)]
        time.sleep(0.5)  # the flood has asked to join
        served.append("the visitor asks")
        visitor.predict(*generate, api_name="/generate")
        outcomes = [outcome(job) for job in flood]
        refused = [o for o in outcomes if o != "ok"]
        assert outcomes.count("ok") == 2, outcomes
        assert all("2 jobs waiting or running" in o and "at most 2" in o for o in refused), refused
        # the order of service: without the limit the visitor would come after 8 grids; with it, after the 2 let in
        assert [s for s in served if s != "the visitor asks"] == ["grid", "grid", "generate"], served
        assert served.index("the visitor asks") < served.index("generate")

        # counted out when stopped: 2 more in, both stopped (gradio_client's cancel stops the session's jobs of the
        # endpoint, the running one and the waiting one), and 2 more are let in at once
        stopped = [flooder.submit(*grid, api_name="/grid") for _ in range(2)]
        time.sleep(0.3)
        stopped[1].cancel()
        time.sleep(SETTLE + 2.0)  # a stopped job ends at its next step: on a loaded CI machine, 1.5 s was once short
        again = [flooder.submit(*grid, api_name="/grid") for _ in range(2)]
        assert [outcome(job) for job in again] == ["ok", "ok"]
        flooder.close(), visitor.close()


def test_out_of_memory_is_a_clear_message_and_the_next_request_works(app, monkeypatch):
    engine, client, _, _ = app
    unet = engine.components.unet
    real = unet.forward
    calls = []

    def oom(*a, **k):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(unet, "forward", oom)
    with pytest.raises(OutOfMemory, match="out of GPU memory while making 1 image"):
        engine.generate(GenerateRequest(prompt="x", steps=2, width=64, height=64))
    with pytest.raises(Exception, match="try a smaller width and height"):
        client.predict(*VALID["/generate"].values(), api_name="/generate")
    with pytest.raises(Exception, match="out of GPU memory while making a row of 2 cells"):
        client.predict(*VALID["/grid"].values(), api_name="/grid")
    monkeypatch.setattr(unet, "forward", real)
    assert len(client.predict(*VALID["/generate"].values(), api_name="/generate")[1]) == 1


def test_cancel_stops_the_work_and_keeps_no_state(app, monkeypatch):
    engine, client, _, _ = app
    unet = engine.components.unet
    real = unet.forward
    calls = []

    def counted(*a, **k):
        calls.append(time.perf_counter())
        time.sleep(0.05)
        return real(*a, **k)

    monkeypatch.setattr(unet, "forward", counted)
    before = dict(vars(engine))
    # directly: a cancel event stops the loop at its next step
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(engine.inspect, GenerateRequest(prompt="x", steps=40, width=64, height=64), None, cancel)
        wait_until(lambda: len(calls) >= 3, what="the loop to start")
        cancel.set()
        with pytest.raises(Cancelled):
            fut.result(timeout=30)
    assert len(calls) < 10 and vars(engine).keys() == before.keys()
    # through the server: cancelling the job stops the denoising too
    calls.clear()
    job = client.submit(*{**VALID["/generate"], "steps": 40}.values(), api_name="/generate")
    wait_until(lambda: len(calls) >= 3, what="the job to start")
    job.cancel()
    assert settled(lambda: len(calls), quiet=0.5) < 40  # the UNet calls stop soon after the cancel


@pytest.mark.slow
def test_a_server_killed_mid_run_leaves_no_half_file_and_restarts_clean(tiny_dir, tmp_path):
    """Kill -9 the app while it writes and denoises; start it again: every PNG still restores, no half file stays."""
    import os
    import signal
    import subprocess
    import sys

    from playground.metadata import read_png

    out, port = tmp_path / "out", free_port()
    env = {**os.environ, "PLAYGROUND_OUTPUT_DIR": str(out), "MAX_STEPS": "500", "MAX_SIZE": "128"}

    def start() -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(tiny_dir), "--device", "cpu",
                                   "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)

        def up() -> bool:
            if server.poll() is not None:
                pytest.fail("the app exited")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=120, what="the app")
        return server

    server = start()
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("a red circle", "", 1, 2, 7.5, "DDIM", 64, 64, 4, api_name="/generate")  # four PNGs written
        job = client.submit("a red circle", "", 2, 500, 7.5, "DDIM", 128, 128, 4, api_name="/generate")
        wait_until(lambda: job.status().code.name in ("PROCESSING", "PROGRESS", "ITERATING"), timeout=60,
                   what="the long run")
        time.sleep(1.0)  # well inside its 500 steps
        os.kill(server.pid, signal.SIGKILL)  # mid-run: no cleanup of any kind
        server.wait(30)
        server = start()
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("a blue square", "", 3, 2, 7.5, "DDIM", 64, 64, 1, api_name="/generate")
    finally:
        server.kill()
        server.wait(30)
    pngs = sorted(out.glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    assert len(pngs) == 5 and [read_png(p).seed for p in pngs] == [1, 2, 3, 4, 3]  # the killed run wrote nothing
    assert not list(out.glob(".*.part"))


def test_an_older_client_that_leaves_out_the_newest_parameters_still_works(app):
    # /generate and /inspect gained parameters at their end (shift, refiner_start, skip_layer_guidance, model, and
    # /generate cfg_stop); a gradio_client script written before sends fewer values, and the client fills in the defaults
    _, client, _, valid = app
    for endpoint in ("/generate", "/inspect"):
        old = [v for name, v in valid[endpoint].items()
               if name not in ("shift", "refiner_start", "skip_layer_guidance", "model", "cfg_stop")]
        assert client.predict(*old, api_name=endpoint)
