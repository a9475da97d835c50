"""GPU leases on Hugging Face ZeroGPU Spaces: `spaces.GPU` when the `spaces` package is there, else a no-op.

ZeroGPU lends a GPU per call: each wrapped handler runs in a worker forked for its lease, for at most the
seconds it asked for. Its CUDA emulation has two conditions this module is the place for:
- `spaces` must be imported before anything touches torch's accelerator (diffusers does, on import), so
  app.py imports this module first;
- models are placed on the device on the main thread at start-up (ZeroGPU's emulation holds there only),
  and nothing loads inside a lease (a forked worker's loads are lost with it).
"""

from __future__ import annotations

from typing import Callable, TypeVar

try:  # present on Hugging Face Spaces (and in the test environment)
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

F = TypeVar("F", bound=Callable)

# this process is ZeroGPU's main process (the Space's hardware is ZeroGPU: SPACES_ZERO_GPU=true)
ZERO_GPU: bool = spaces is not None and bool(spaces.config.Config.zero_gpu)


def lease(fn: F, seconds: Callable[..., int]) -> F:
    """`fn` wrapped so that, on ZeroGPU, each call runs with a GPU attached for `seconds(*args, **kwargs)`
    seconds at most (called with the handler's own arguments). Elsewhere `fn` itself. The wrapper keeps the
    function it asks with as `.lease_seconds`, so what each handler asks for can be read back."""
    if spaces is None or not ZERO_GPU:
        return fn
    wrapped = spaces.GPU(duration=seconds)(fn)
    wrapped.lease_seconds = seconds
    return wrapped
