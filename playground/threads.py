"""Model work off the main thread, so that every worker thread gets torch's full speed.

Measured on this project's 2-core machine (torch 2.14.1, GNU OpenMP): once the main thread has run one
multi-threaded torch operation, its OpenMP team lives as long as the process, and every other thread that runs
torch afterwards gets about 2.3x slower (a 64-channel 3x3 convolution: 150 us on the main thread, 350-385 us on a
worker thread; one 8-step offline generation 0.19 s against 0.45-0.6 s). A thread's own team goes when the thread
ends, so threads that come and go leave no such trace. The app loads its models on a thread of their own (this
module) and every request runs on a worker thread (ui.common.stream), so the main thread never makes a team.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def off_main_thread(fn: Callable[[], T], name: str = "loading") -> T:
    """fn() run on a thread of its own, waited for; its result, or its exception raised here."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
