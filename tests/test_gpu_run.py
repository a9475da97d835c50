"""The prepared GPU call, run on the CPU at tiny sizes: every part runs, stops at its budget, and
writes what can be copied back from a remote machine (at most 8 files, each under 16 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_run  # noqa: E402


def test_a_part_stops_at_its_budget_and_says_so(tmp_path):
    log = tmp_path / "log"
    slow = gpu_run.run_part("sleeper", [sys.executable, "-c", "import time; print('began'); time.sleep(30)"], 1.0, log)
    assert slow["status"] == "stopped at its budget (1 s)" and slow["seconds"] < 10
    failed = gpu_run.run_part("failer", [sys.executable, "-c", "raise SystemExit(3)"], 10, log)
    assert failed["status"] == "failed (3)" and "===== failer" in log.read_text()


def test_pack_splits_under_the_file_limit_and_joins_back(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 400)  # 100 kB
    monkeypatch.setattr(gpu_run, "PART_BYTES", 40_000)
    out = tmp_path / "out"
    out.mkdir()
    names = gpu_run.pack(folder, out, "model")
    assert names == [f"model.tar.part-{k}" for k in range(len(names))] and len(names) >= 3
    assert all((out / n).stat().st_size <= 40_000 for n in names)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join((out / n).read_bytes() for n in names))
    with tarfile.open(joined) as t:
        assert t.extractfile("model/weights.bin").read() == bytes(range(256)) * 400


@pytest.mark.slow
def test_the_command_in_smoke_mode_writes_every_result(tmp_path):
    out = tmp_path / "OUT"
    # each part's budget is its share of --budget: room for a busy machine
    done = subprocess.run(["bash", "benchmarks/gpu_run.sh", str(out), "--smoke", "--budget", "1500"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 * 2**20 for f in files), files
    figures = json.loads((out / "figures.json").read_text())
    parts = {p: figures["parts"][p] for p in ("benchmarks", "profile", "evaluation")}
    assert all(part["status"] == "ok" for part in parts.values()), {p: (v["status"], v.get("tail", "")[-1500:])
                                                                    for p, v in parts.items()}
    assert figures["parts"]["compile"]["status"] == "skipped in smoke mode"
    assert {s: p["status"] for s, p in figures["parts"]["training"].items()} == dict.fromkeys(
        ("import", "unet", "canny", "openpose", "export"), "ok")
    assert "| 4x4 grid: ours, batched per scheduler |" in (out / "BENCHMARKS-gpu.md").read_text()
    assert "Self CPU" in (out / "profile.txt").read_text()
    joined = tmp_path / "model.tar"
    joined.write_bytes(b"".join((out / n).read_bytes() for n in figures["model_files"]))
    with tarfile.open(joined) as t:
        names = t.getnames()
    assert "offline-model/model_index.json" in names and "offline-model/controlnet-openpose/config.json" in names
    scores = json.loads((out / "eval.json").read_text())
    assert scores["prompts"] == 2 and scores["control_images"] == 1  # every part of it, each at its smoke size
    assert scores["round_trip_scenes"] == 2 and scores["focus_prompts"] == 2 and scores["people"] == 1
