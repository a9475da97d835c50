"""GPU leases on Hugging Face ZeroGPU Spaces: `spaces.GPU` when the `spaces` package is there, else a no-op."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

try:  # present on Hugging Face Spaces only
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None


def gpu(fn: F, duration: int = 120) -> F:
    """Wrap an event handler so that, on ZeroGPU, it runs with a GPU attached for up to `duration` s."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)
