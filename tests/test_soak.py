"""Weeks on a Space, compressed: 500 mixed requests against app.py in its own process (benchmarks/soak.py),
with its resident memory, threads and disk watched from outside."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import soak  # noqa: E402

pytestmark = pytest.mark.slow


def test_500_mixed_requests_keep_memory_threads_and_disk_flat():
    r = soak.run(requests=500, clients=4, warmup=100)
    print("\n" + soak.report(r))
    assert r["requests"] >= 500 and r["server_alive"]
    assert not r["failures"], r["failures"][:10]
    assert r["ok"] > 300 and r["bad_inputs_named"] > 40 and r["stopped"] > 10  # every kind of traffic was there
    assert r["rss_growth"] < soak.GROWTH_LIMIT, r["samples"]
    assert soak.threads_stable(r), r["samples"]
    assert r["outputs_max_mb"] <= r["outputs_cap_mb"] + soak.OVER_CAP_MB, r["samples"]
    # gradio's cache is kept through this run (CACHE_HOURS=0): its sweep by age has its own tests (test_outputs.py)
