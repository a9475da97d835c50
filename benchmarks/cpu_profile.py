"""Where one offline generation's time goes on this machine's CPU: text encoder, U-Net, scheduler, VAE decode,
live previews, safety checker, and the rest (our loop's Python, tensor copies, the framework), with diffusers'
own pipeline on the same model and settings beside it. Each part is timed by wrapping it (perf_counter around
every call), over several runs after a warm-up.

    python benchmarks/cpu_profile.py                 # 128 px, DPM++ 2M Karras, 25 steps, CFG 7.5, 2 threads
    python benchmarks/cpu_profile.py --write         # and put the table in BENCHMARKS.md ("CPU profile")
    python benchmarks/cpu_profile.py --compile --write   # the same with --compile ("CPU profile, compiled")

With --compile, diffusers' pipeline beside it is its own, loaded afresh from the model's folder and run eagerly
(the compiled modules are ours alone).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import diffusers  # noqa: E402

from playground import schedulers  # noqa: E402
from playground.engine import Engine  # noqa: E402
from playground.loading import compile_model, load_model  # noqa: E402
from playground.schema import GenerateRequest
from playground.settings import Settings  # noqa: E402
from sections import write_section  # noqa: E402

PROMPT = "a large red square at the top left on a black background"


def wrap(owner, name: str, bucket: dict, key: str) -> None:
    """Time every call of owner.name into bucket[key] (seconds) and count them."""
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            bucket[key] += time.perf_counter() - start
            bucket[key + " calls"] += 1

    setattr(owner, name, timed)


def reference_pipeline(pipe, scheduler: str) -> diffusers.StableDiffusionPipeline:
    """diffusers' own StableDiffusionPipeline on the loaded model's modules, with `scheduler` made as ours is."""
    reference = diffusers.StableDiffusionPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=schedulers.make(scheduler, pipe.scheduler.config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    return reference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true")
    p.add_argument("--compile", action="store_true", help="ours through --compile (inductor), warmed up first")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    settings = Settings(model="bundled", device="cpu")
    model = load_model(settings)
    engine = Engine(model, settings)
    if a.compile:
        reference = diffusers.StableDiffusionPipeline.from_pretrained(model.source, dtype=torch.float32)
        compile_model(model)
        compiled_in = engine.warm_up()
    req = GenerateRequest(prompt=PROMPT, seed=1, steps=25, cfg_scale=7.5, scheduler="DPM++ 2M Karras")
    pipe = model.pipe

    bucket: dict = defaultdict(float)
    wrap(pipe.text_encoder, "forward", bucket, "text encoder")
    wrap(pipe.unet, "forward", bucket, "U-Net")
    wrap(pipe.vae, "decode", bucket, "VAE decode")
    spec = schedulers.REGISTRY[req.scheduler]
    wrap(getattr(diffusers, spec.cls), "step", bucket, "scheduler step")
    wrap(engine, "preview", bucket, "live previews")
    if getattr(pipe, "safety_checker", None) is not None:
        wrap(pipe, "run_safety_checker", bucket, "safety checker")

    engine.generate(req, on_progress=lambda _: None)  # warm-up
    bucket.clear()
    start = time.perf_counter()
    for _ in range(a.runs):
        engine.generate(req, on_progress=lambda _: None)  # with progress and previews, as the Prompt tab runs
    ours = (time.perf_counter() - start) / a.runs
    parts = {k: v / a.runs for k, v in bucket.items() if not k.endswith(" calls")}
    calls = {k.removesuffix(" calls"): v / a.runs for k, v in bucket.items() if k.endswith(" calls")}

    reference = reference_pipeline(reference if a.compile else pipe, req.scheduler)
    size = model.native_size
    run = lambda: reference(PROMPT, num_inference_steps=25, guidance_scale=7.5, height=size, width=size,  # noqa: E731
                            generator=torch.Generator().manual_seed(1), output_type="np")
    run()
    bucket.clear()
    start = time.perf_counter()
    for _ in range(a.runs):
        run()
    theirs = (time.perf_counter() - start) / a.runs

    how = (f"compiled (`--compile`: inductor, static shapes, frozen weights, C++ wrapper; compiled and warmed up "
           f"in {compiled_in:.0f} s)" if a.compile else "eager")
    rows = [f"| {name} | {1000 * t:.1f} | {100 * t / ours:.1f}% | {calls.get(name, 0):g} |"
            for name, t in sorted(parts.items(), key=lambda kv: -kv[1])]
    rest = ours - sum(parts.values())
    table = "\n".join([
        f"One offline generation ({size} px, DPM++ 2M Karras, 25 steps, CFG 7.5, previews on as in the Prompt "
        f"tab), {a.threads} threads, ours {how}, mean of {a.runs} runs after a warm-up "
        f"(`python benchmarks/cpu_profile.py{' --compile' if a.compile else ''}`):",
        "",
        "| part | ms a generation | share | calls |",
        "|---|---|---|---|",
        *rows,
        f"| the rest (our loop's Python, copies, the framework) | {1000 * rest:.1f} | {100 * rest / ours:.1f}% | |",
        f"| **ours, in all** | **{1000 * ours:.1f}** | 100% | |",
        f"| diffusers' StableDiffusionPipeline, same model and settings (no previews, eager) | {1000 * theirs:.1f} | "
        f"ours = {ours / theirs:.2f}x this | |",
    ])
    print(table)
    if a.write:
        key, title = (("cpu-profile-compiled", "## CPU profile, compiled: the exact path through --compile") if a.compile
                      else ("cpu-profile", "## CPU profile: where one offline generation's time goes"))
        write_section(ROOT / "BENCHMARKS.md", key, title, table)


if __name__ == "__main__":
    main()
