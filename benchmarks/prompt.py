"""Prompt path speed: our Engine vs diffusers' StableDiffusionPipeline, plus cold start of the app.

Same process, same components, same scheduler and seed, alternating A/B, median after a warm-up.
Then the app itself: process start -> first image through gradio_client, and later requests.

    python benchmarks/prompt.py                   # bundled model on this machine
    python benchmarks/prompt.py --runs 7 --steps 25 --size 128 --no-server
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playground import schedulers  # noqa: E402
from playground.engine import Engine  # noqa: E402
from playground.schema import GenerateRequest
from playground.loading import load_model  # noqa: E402
from playground.settings import Settings  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def diffusers_call(engine: Engine, req: GenerateRequest):
    """A function making req's image with diffusers' own StableDiffusionPipeline on the same components."""
    base = engine.model.pipe
    ref = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
                                  scheduler=base.scheduler, safety_checker=None, feature_extractor=None,
                                  requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)

    def theirs():
        ref.scheduler = schedulers.make(req.scheduler, base.scheduler.config)
        ref(req.prompt, negative_prompt=req.negative_prompt, num_inference_steps=req.steps, guidance_scale=req.cfg_scale,
            height=req.height, width=req.width, generator=torch.Generator("cpu").manual_seed(req.seed))

    return theirs


def loop_vs_diffusers(engine: Engine, req: GenerateRequest, runs: int) -> dict[str, float]:
    variants = {
        "diffusers StableDiffusionPipeline": diffusers_call(engine, req),
        "ours (Engine.generate)": lambda: engine.generate(req),
        "ours + live preview every step": lambda: engine.generate(req, on_progress=lambda p: None),
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(runs):  # alternate so drift hits every variant alike
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(req: GenerateRequest, runs: int, model: str) -> dict[str, float]:
    from gradio_client import Client

    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--model", model],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        client = None
        while client is None:
            if time.perf_counter() - start > 300 or proc.poll() is not None:
                raise RuntimeError("app did not start")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                time.sleep(0.25)
        ready = time.perf_counter() - start
        args = (req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale, req.scheduler, req.width,
                req.height, 1)
        client.predict(*args, api_name="/generate")
        first = time.perf_counter() - start
        later = [timed(lambda: client.predict(*args, api_name="/generate")) for _ in range(runs)]
        client.close()
        return {"process start -> server ready": ready, "process start -> first image": first,
                "later request, through the server (median)": statistics.median(later)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", type=int, default=0, help="0 = the model's native size")
    ap.add_argument("--scheduler", default="DPM++ 2M Karras")
    ap.add_argument("--no-server", action="store_true")
    a = ap.parse_args()

    settings = Settings(model=a.model)
    engine = Engine(load_model(settings), settings)
    size = a.size or engine.native_size
    req = GenerateRequest(prompt="a red circle on a blue background", negative_prompt="blurry", seed=1,
                          steps=a.steps, cfg_scale=7.5, scheduler=a.scheduler, width=size, height=size)
    print(f"# Prompt path, {engine.model.name} {size}x{size}, {a.steps} steps {a.scheduler}, CFG 7.5")
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {engine.model.device}, {time.strftime('%Y-%m-%d')}\n")
    print("| what | seconds per image | ratio to diffusers |\n|---|---|---|")
    res = loop_vs_diffusers(engine, req, a.runs)
    base = res["diffusers StableDiffusionPipeline"]
    for k, v in res.items():
        print(f"| {k} | {v:.3f} | {v / base:.2f}x |")
    if not a.no_server:
        for k, v in server(req, a.runs, a.model).items():
            print(f"| {k} | {v:.2f} | |")


if __name__ == "__main__":
    main()
