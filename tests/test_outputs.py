"""No model: what the playground writes stays bounded (the oldest files go first) and is never half written."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from playground.metadata import Params, read_png, save_png, write_atomically
from playground.outputs import Folder, output_stem, save_images, save_pose
from playground.schema import Generated
from playground.settings import Settings

PARAMS = Params("a red square", "", 2, "DDIM", 7.5, 1, 64, 64, "test")


def noise_png(path, seed: int):
    """A 64x64 PNG that does not compress (about 12 KB), dated `seed` seconds apart."""
    image = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    save_png(image, PARAMS, path)
    os.utime(path, (time.time() - 1000 + seed, time.time() - 1000 + seed))
    return path


def test_the_folder_keeps_under_its_cap_oldest_first(tmp_path):
    files = [noise_png(tmp_path / f"{k:02d}.png", k) for k in range(10)]
    each = files[0].stat().st_size
    folder = Folder(tmp_path, max_mb=4.5 * each / 1e6)
    assert folder.prune() == 6  # the six oldest
    assert sorted(f.name for f in tmp_path.iterdir()) == [f.name for f in files[6:]]
    assert Folder(tmp_path, max_mb=0).prune() == 0 and len(list(tmp_path.iterdir())) == 4  # 0: no limit


def test_every_write_prunes_first_so_a_request_finds_room(tmp_path):
    for k in range(6):
        noise_png(tmp_path / f"old{k}.png", k)
    each = (tmp_path / "old0.png").stat().st_size
    folder = Folder(tmp_path, max_mb=2.5 * each / 1e6)
    made = save_images([Generated(Image.new("RGB", (8, 8)), PARAMS)], folder)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert Path(made[0][0]).name in names and "old5.png" in names and "old0.png" not in names
    assert read_png(made[0][0]).prompt == "a red square"
    assert Folder.of(Settings(output_dir=tmp_path, max_output_mb=3)).max_mb == 3


def test_a_failed_write_leaves_nothing_and_the_old_file_whole(tmp_path):
    path = save_png(Image.new("RGB", (8, 8), "red"), PARAMS, tmp_path / "a.png")

    def crash(tmp):
        tmp.write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, crash)
    assert read_png(path).seed == 1 and [f.name for f in tmp_path.iterdir()] == ["a.png"]  # no .part left
    left = tmp_path / ".b.png.part"  # a write killed mid-way: gone at the next write once it is stale
    left.write_bytes(b"\x89PNG half")
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    pose = save_pose('{"people": []}', Folder(tmp_path))
    assert not left.exists()
    assert pose.read_text() == '{"people": []}\n' and output_stem(tmp_path).parent == tmp_path


def test_requests_writing_and_pruning_at_once_never_fail(tmp_path):
    """Four requests at a time write and prune one folder: a file that vanishes under one of them is skipped."""
    from concurrent.futures import ThreadPoolExecutor

    image = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    folder = Folder(tmp_path, max_mb=0.05)  # a few images' worth: every write prunes

    def work(k):
        for _ in range(25):
            save_images([Generated(image, PARAMS)], folder)
            save_pose("{}", folder)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))  # raises if any write or prune failed
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 0.05e6 + 4 * 20_000
    assert not list(tmp_path.glob(".*.part"))


def test_the_cache_sweep_deletes_old_files_and_keeps_what_the_page_keeps(tmp_path):
    from playground.ui.cache import sweep

    old = tmp_path / "abc" / "image.png"
    example = tmp_path / "def" / "example.png"
    for path in (old, example):
        path.parent.mkdir()
        path.write_bytes(b"x" * 100)
    assert sweep(tmp_path, 3600) == (0, 0)  # nothing is an hour old yet
    files, freed = sweep(tmp_path, 3600, keep={str(example.resolve())}, now=time.time() + 7200)  # two hours on
    assert (files, freed) == (1, 100)
    assert not old.exists() and not old.parent.exists() and example.exists()  # its emptied folder went too


def test_a_built_app_sweeps_gradio_cache_by_age_unless_told_to_keep_it(tiny_model, tiny_dir, tmp_path):
    import threading

    from playground.engine import Engine
    from playground.ui import build_app
    from conftest import tiny_settings

    before = sum(t.name == "cache-sweeper" for t in threading.enumerate())
    build_app(Engine(tiny_model, tiny_settings(tiny_dir, output_dir=tmp_path, cache_hours=0)), tiny_settings(
        tiny_dir, output_dir=tmp_path, cache_hours=0))
    assert sum(t.name == "cache-sweeper" for t in threading.enumerate()) == before
    settings = tiny_settings(tiny_dir, output_dir=tmp_path, cache_hours=2)
    build_app(Engine(tiny_model, settings), settings)
    assert sum(t.name == "cache-sweeper" for t in threading.enumerate()) == before + 1


def test_gradio_writes_returned_images_atomically_so_two_requests_making_one_picture_never_race(tmp_path):
    """Two requests returning the same picture write one cache file (named by its content). While one writes it, a
    browser reading it must get every byte: gradio's own writer truncates in place and a reader got 0 bytes."""
    from PIL import Image

    from gradio import processing_utils
    from playground.ui.cache import atomic_image_writes

    atomic_image_writes()
    image = Image.new("RGB", (512, 512), "red")  # 0.8 MB as BMP: quick to encode, slow enough to write
    path = Path(processing_utils.save_pil_to_cache(image, str(tmp_path), format="bmp"))
    size, short, stop = path.stat().st_size, [], threading.Event()

    def writer():
        while not stop.is_set():
            processing_utils.save_pil_to_cache(image, str(tmp_path), format="bmp")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(100):  # as a server sends a file: its size first, then its bytes
            expected = path.stat().st_size
            with path.open("rb") as f:
                got = len(f.read())
            if got != expected or got != size:
                short.append(got)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not short, f"a reader got {len(short)} short reads of {size} bytes, e.g. {short[:5]}"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
