"""Gradio's cache, deleted by age: every file in it older than CACHE_HOURS, not only the ones gradio tracks.

Gradio's own `delete_cache` deletes the files it moved into its cache (uploads, files a handler returned),
but not the images it wrote there from a handler's PIL images and arrays (every preview, channel tile and
attention map): measured over a 500-request soak, the cache grew without bound with `delete_cache` alone.
The sweeper walks the cache folder itself, keeps what the page's components keep there for good (example
images, default values), and deletes the rest once it is older than the age.

Gradio also writes each image it returns to a file named by its content, in place (`write_bytes`: truncate, then
write). Two requests that return the same picture (two visitors clicking the same example with the same seed)
then race: one browser read the file while the other request had truncated it, and got 0 of its 1,551 bytes (1
request in 500 of the soak). `atomic_image_writes` makes that write a temp file renamed over the old one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from pathlib import Path

import gradio as gr
from gradio import processing_utils

from playground.metadata import write_atomically

log = logging.getLogger("playground")


def kept(blocks: gr.Blocks) -> set[str]:
    """Files the page's components keep in the cache for as long as the app runs (examples, default values)."""
    keep = set(getattr(blocks, "keep_in_cache", set()))
    for block in blocks.blocks.values():
        keep.update(getattr(block, "keep_in_cache", set()))
    return {str(Path(p).resolve()) for p in keep}


def sweep(folder: Path, age_seconds: float, keep: set[str] = frozenset(), now: float | None = None
          ) -> tuple[int, int]:
    """Delete the files under `folder` last changed more than `age_seconds` before `now`, except `keep`, and the
    folders left empty; (files deleted, bytes freed). A file that vanishes meanwhile (gradio's own deletion) is
    skipped."""
    cutoff, files, freed = (time.time() if now is None else now) - age_seconds, 0, 0
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            path = Path(root) / name
            try:
                stat = path.lstat()
                if max(stat.st_mtime, stat.st_ctime) < cutoff and str(path.resolve()) not in keep:
                    path.unlink()
                    files, freed = files + 1, freed + stat.st_size
            except FileNotFoundError:
                continue
        for name in dirs:
            try:
                (Path(root) / name).rmdir()  # only when empty
            except OSError:
                pass
    return files, freed


def start_sweeping(blocks: gr.Blocks, age_seconds: float, every_seconds: float) -> threading.Thread:
    """Sweep `blocks`' cache folder every `every_seconds` in a daemon thread, while the app object lives."""
    app = weakref.ref(blocks)
    folder = Path(blocks.GRADIO_CACHE)

    def loop():
        while True:
            time.sleep(every_seconds)
            demo = app()
            if demo is None:
                return
            files, freed = sweep(folder, age_seconds, kept(demo))
            del demo
            if files:
                log.info("deleted %d cached files (%.1f MB) older than %.0f min", files, freed / 1e6, age_seconds / 60)

    thread = threading.Thread(target=loop, daemon=True, name="cache-sweeper")
    thread.start()
    return thread


def _write(path: Path, data: bytes, tries: int = 3) -> str:
    """`data` to `path` atomically (its folder made first); the resolved path, as gradio's writer returns. The
    sweep may remove the empty folder between the mkdir and the write: made again then."""
    for attempt in range(tries):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return str(write_atomically(path, lambda tmp: tmp.write_bytes(data)).resolve())
        except FileNotFoundError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def _save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio.processing_utils.save_pil_to_cache, same file name (the content's hash), written atomically."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    return _write(Path(cache_dir) / processing_utils.hash_bytes(data) / f"{name}.{format}", data)


def atomic_image_writes() -> None:
    """Have gradio write returned images to its cache atomically (every component calls it through the module, so
    replacing the module's function reaches all of them: Image, Gallery, AnnotatedImage). Idempotent."""
    processing_utils.save_pil_to_cache = _save_pil_to_cache
