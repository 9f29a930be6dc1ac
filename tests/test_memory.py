"""Peak memory is bounded by one image, in subprocesses (issue 11, item 4).

A batch used to decode all its images before embedding them: 16 large images cost 16 times one. Now each image is
decoded, embedded and dropped before the next, and a file's header is checked before its body is read.

The batch test embeds with the ``learned`` extractor in sliding-window mode, which embeds a few 128² windows
whatever the image size, so that decoding (what this test is about) dominates and 16 images of 3000² take seconds.
Whole-image mode with ``tile_grid=0`` runs the residual denoiser over every pixel: one 8000² image alone takes about
150 s and peaks at about 2.6 GB on a laptop-class CPU, too slow for the suite (the default ``tile_grid=2`` runs it on
four blocks only).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 3000  # 9 Mpx: 108 MB as float32 RGB, the size of everything the old batches multiplied by 16
PEAK = """import atexit, resource, sys
atexit.register(lambda: print("peak-kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))"""
EMBED = PEAK + """
from modelprint.api import collect_paths, embed_paths
from modelprint.methods import load_method
emb = embed_paths(load_method("learned", window=None), collect_paths(sys.argv[1:]))
assert len(emb.paths) == len(sys.argv) - 1, emb.errors
"""
CLI = PEAK + "\nimport runpy\nrunpy.run_module('modelprint.cli.main', run_name='__main__')"


def _peak_mb(code: str, *args: str | Path) -> tuple[float, subprocess.CompletedProcess]:
    """Peak resident memory (MB) of a fresh Python running ``code`` with ``args``."""
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = res.stderr.splitlines()
    assert lines and lines[-1].startswith("peak-kb "), res.stderr[-2000:]
    return int(lines[-1].split()[1]) / 1024, res


def test_a_batch_of_16_large_images_peaks_like_one(tmp_path: Path) -> None:
    tile = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # compresses well: 0.5 MB files
    reps = SIDE // 64 + 1
    one = tmp_path / "one" / "00.png"
    one.parent.mkdir()
    Image.fromarray(np.tile(tile, (reps, reps, 1))[:SIDE, :SIDE]).save(one, compress_level=1)
    folder = tmp_path / "sixteen"
    folder.mkdir()
    for i in range(16):
        shutil.copy(one, folder / f"{i:02d}.png")
    alone, _ = _peak_mb(EMBED, one)
    batch, _ = _peak_mb(EMBED, *sorted(folder.iterdir()))
    assert batch < 1.2 * alone, f"16 images peaked at {batch:.0f} MB, one alone at {alone:.0f} MB"


def test_huge_non_images_cost_no_memory(tmp_path: Path, small_gallery: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    huge = {tmp_path / "2gb.png": "not read", tmp_path / "600mb.png": "not an image"}  # over / under the byte limit
    for path, size in zip(huge, (2 << 30, 600 << 20)):
        with open(path, "wb") as fh:
            fh.truncate(size)  # sparse: costs no disk
    baseline, _ = _peak_mb(CLI, "identify", "--gallery", small_gallery, empty)
    peak, res = _peak_mb(CLI, "identify", "--gallery", small_gallery, *huge)
    assert res.returncode == 1
    assert all(f"{path}: " in res.stderr and reason in res.stderr for path, reason in huge.items()), res.stderr
    assert peak - baseline < 100, f"{peak:.0f} MB for 2.6 GB of non-images, {baseline:.0f} MB for an empty file"
