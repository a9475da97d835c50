"""One visitor's session over many jobs: its blocks in gradio's state and the server's RSS, with and without
playground/ui/sessions.py's fix (gradio 6 files one more component in a session each time a streaming handler
yields gr.skip() and then a value).

    python benchmarks/session_growth.py --calls 200            # with the fix, as the app runs
    python benchmarks/session_growth.py --calls 200 --no-fix   # without it

The app (on the tests' tiny random-weight model) runs in this process; one gradio_client session calls
/inspect, and every 50 calls the RSS and the session's block count are printed.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import free_port, tiny_settings  # noqa: E402
from playground.engine import Engine  # noqa: E402
from playground.loading import load_model  # noqa: E402
from playground.tiny import arch, untrained  # noqa: E402
from playground.ui import build_app, launch_options, sessions  # noqa: E402


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--no-fix", action="store_true", help="leave gradio's session state as gradio 6 has it")
    a = p.parse_args()
    if a.no_fix:
        sessions.keep_ids = lambda: None
    from gradio_client import Client

    folder = tempfile.mkdtemp()
    untrained.write(folder, arch.TEST, seed=0, dtype=torch.float32)
    settings = tiny_settings(folder, port=free_port(), output_dir=tempfile.mkdtemp(), cache_hours=0)
    demo = build_app(Engine(load_model(settings), settings), settings)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    client = Client(f"http://127.0.0.1:{settings.port}/", verbose=False)
    print(f"{'without' if a.no_fix else 'with'} the fix: calls, RSS (MiB), the session's blocks")
    for k in range(a.calls + 1):
        client.predict("a red circle", "", 5, 3, 3.0, "DDIM", 64, 64, "the prompt", api_name="/inspect")
        if k % 50 == 0:
            gc.collect()
            print(k, f"{rss_mib():.1f}", sessions.size(demo, client.session_hash), flush=True)
    client.close()
    demo.close()


if __name__ == "__main__":
    main()
