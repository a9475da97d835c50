"""The one prepared GPU call: benchmarks, a kernel profile, and the offline model trained on CUDA, in one
time budget, with every result written to one output folder small enough to copy back from a remote machine.

    bash benchmarks/gpu_run.sh OUT --budget 540          # on a GPU machine (see BENCHMARKS.md)
    python benchmarks/gpu_run.py OUT --smoke             # CPU, tiny sizes, seconds: what the tests run

Parts, in order, each a subprocess with its own share of the budget, so that one that fails or runs
out of time stops alone and what finished before it is already written:

1. benchmarks: run_all.py (SD 1.5-shaped, 512 px, 25 steps, CFG 7.5; ours vs plain diffusers, the
   4x4 grid vs 16 cells one by one, recording, peak memory) -> BENCHMARKS-gpu.md, and again with
   --compile as a part of its own -> BENCHMARKS-gpu-compile.md;
2. profile: the top CUDA kernels of one generation (torch.profiler) -> profile.txt;
3. training: the shipped offline model imported, then the UNet and both ControlNets trained on on the
   GPU (`playground.tiny.train`, each stage stopping cleanly at its minutes), exported in fp16 ->
   offline-model.tar.part-0, -1 (the tar split under 15 MiB a file), with train.log;
4. evaluation of the exported model on the GPU (half the CPU evaluation's prompts, to fit) -> eval.json.

figures.json gathers every part's status and seconds; at most 8 files come back, each under 16 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PART_BYTES = 15 * 2**20  # parts of at most 16 MiB, a size remote copies take
MAX_FILES = 8

# share of the budget per part, and the smoke mode's arguments (tiny sizes, CPU)
SHARES = {"benchmarks": 0.25, "compile": 0.25, "profile": 0.05, "training": 0.33, "evaluation": 0.12}


def run_part(name: str, cmd: list[str], seconds: float, log: Path | None = None) -> dict:
    """`cmd` as a subprocess, stopped after `seconds`; its status, time and output's tail."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(seconds, 1))
        status, output = ("ok" if done.returncode == 0 else f"failed ({done.returncode})"), done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status = f"stopped at its budget ({seconds:.0f} s)"
        output = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
    if log is not None:
        with log.open("a") as f:
            f.write(f"\n===== {name}: {' '.join(cmd)}\n{output}")
    print(f"[gpu_run] {name}: {status} in {time.monotonic() - start:.0f} s", flush=True)
    return {"status": status, "seconds": round(time.monotonic() - start, 1), "tail": output[-1500:]}


def pack(folder: Path, out: Path, stem: str) -> list[str]:
    """`folder` as a tar split into parts of at most PART_BYTES: `stem.tar.part-0`, `-1`, ...
    (join with `cat stem.tar.part-* > stem.tar`)."""
    tar = out / f"{stem}.tar"
    with tarfile.open(tar, "w") as t:
        t.add(folder, arcname=folder.name)
    data, names = tar.read_bytes(), []
    tar.unlink()
    for k in range(0, len(data), PART_BYTES):
        name = f"{stem}.tar.part-{k // PART_BYTES}"
        (out / name).write_bytes(data[k:k + PART_BYTES])
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the output folder (copied back from the GPU machine)")
    ap.add_argument("--budget", type=float, default=540, help="seconds for all parts together")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check the command in seconds")
    a = ap.parse_args(argv)
    out, started = a.out, time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="gpu-run-"))  # checkpoints and the export; only packed files go to `out`
    log = out / "train.log"
    figures: dict = {"host": platform.node(), "python": platform.python_version(), "smoke": a.smoke, "parts": {}}

    def left(share: str) -> float:
        """This part's share of the budget, or what is left of the whole, whichever is less."""
        return min(SHARES[share] * a.budget, a.budget - (time.monotonic() - started))

    def write() -> None:  # after every part: what finished is on disk even if a later part fails
        figures["seconds"] = round(time.monotonic() - started, 1)
        (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")

    # 1. Benchmarks against plain diffusers, measured in the same process; then again with --compile, as
    #    a part of its own, so that a slow compile cannot cost the plain figures
    bench = ["--model", "sd15-shaped", "--size", "512", "--steps", "25", "--runs", "5"]
    if a.smoke:
        bench = ["--size", "64", "--steps", "1", "--runs", "1", "--no-server"]
    figures["parts"]["benchmarks"] = run_part(
        "benchmarks", [py, "benchmarks/run_all.py", *bench, "--out", str(out / "BENCHMARKS-gpu.md")], left("benchmarks"))
    write()
    if a.smoke:  # tracing alone takes most of a minute on a CPU; tests/test_loading.py checks --compile itself
        figures["parts"]["compile"] = {"status": "skipped in smoke mode", "seconds": 0, "tail": ""}
    else:
        figures["parts"]["compile"] = run_part(
            "compile", [py, "benchmarks/run_all.py", *bench, "--compile", "--out", str(out / "BENCHMARKS-gpu-compile.md")],
            left("compile"))
    write()

    # 2. Where the time goes: the top kernels of one generation
    figures["parts"]["profile"] = run_part(
        "profile", [py, "benchmarks/gpu_profile.py", str(out / "profile.txt"), *(["--smoke"] if a.smoke else [])],
        left("profile"))
    write()

    # 3. The offline model, trained on: import the shipped one, then each stage stops at its minutes
    run = work / "run"
    minutes = max(left("training") - 30, 10) / 60  # export's time kept aside
    stages = [("import", [str(ROOT / "assets" / "offline-model")], None)]
    if a.smoke:
        stages += [(s, ["--steps", "1", "--batch", "2"], None) for s in ("unet", "canny", "openpose")]
    else:
        stages += [("unet", ["--batch", "256", "--lr", "3e-4"], 0.5 * minutes),
                   ("canny", ["--batch", "128"], 0.25 * minutes), ("openpose", ["--batch", "128"], 0.25 * minutes)]
    stages += [("export", [str(work / "offline-model")], None)]
    training = {}
    for stage, extra, stage_minutes in stages:
        budget = stage_minutes * 60 + 60 if stage_minutes else 120
        cmd = [py, "-m", "playground.tiny.train", stage, *extra, "--ckpt-dir", str(run)]
        if stage_minutes:
            cmd += ["--minutes", f"{stage_minutes:.2f}"]
        training[stage] = run_part(f"train {stage}", cmd, min(budget, a.budget - (time.monotonic() - started)), log)
    figures["parts"]["training"] = training
    exported = work / "offline-model"
    if (exported / "model_index.json").is_file():
        figures["model_files"] = pack(exported, out, "offline-model")
    write()

    # 4. How the trained model scores (the same evaluation as on the CPU, fewer prompts in smoke mode)
    if (exported / "model_index.json").is_file():
        counts = (["--prompts", "2", "--control", "1", "--two", "1", "--people", "1", "--analyser", "20", "--focus", "2",
                   "--round-trip", "2"] if a.smoke
                  else ["--prompts", "120", "--control", "20", "--two", "30", "--people", "24"])  # fits its share
        figures["parts"]["evaluation"] = run_part(
            "evaluation", [py, "-m", "playground.tiny.evaluate", "--model", str(exported), *counts,
                           "--json", str(out / "eval.json")], left("evaluation"), log)
    write()

    files = sorted(p.name for p in out.iterdir())
    too_big = [p.name for p in out.iterdir() if p.stat().st_size > 16 * 2**20]
    if len(files) > MAX_FILES or too_big:
        raise SystemExit(f"the output is larger than the copy-back limits: {files}, too big: {too_big}")
    print(f"[gpu_run] wrote {', '.join(files)} in {time.monotonic() - started:.0f} s")
    return figures


if __name__ == "__main__":
    main()
