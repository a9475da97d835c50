"""The benchmark harness at a reduced size on CPU: it runs, and writes the table it promises."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_run_all_smoke(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    out = run_all.main(["--size", "64", "--steps", "2", "--runs", "1", "--out", str(tmp_path / "B.md")])
    text = out.read_text()
    for row in ("one image: diffusers StableDiffusionPipeline", "one image: ours (Engine.generate)",
                "4x4 grid: ours, batched per scheduler", "inspector: recording every step",
                "inspector: + cross-attention maps",
                "process start -> first image", "later request, through the server"):
        assert row in text, row
    ratios = [float(r) for r in re.findall(r"\| (\d+\.\d+)x \|", text)]
    assert len(ratios) >= 8 and all(0 < r < 20 for r in ratios)
    assert "hardware:" in text and "torch 2." in text
