"""Embeddings of ../shared/realworld (classes with ≥ 8 images) per method variant and degradation, cached on disk.

``python benchmarks/realworld_cache.py --jobs base:clean g2:jpeg75 ...`` embeds what is not cached yet, saving every
few images, so a killed run resumes where it stopped. The cache lives in ``out/realworld_use/`` (never committed);
each file records the method's tag, and a cache made by another method version is recomputed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import BENCH_DIR, shared_dir
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg, resize
from modelprint.io.images import to_uint8
from modelprint.methods import load_method

CACHE = BENCH_DIR.parent / "out" / "realworld_use"
VARIANTS = {"base": {}, "g2": {"tile_grid": 2, "block": 128}, "g3": {"tile_grid": 3, "block": 128},
            "g2b192": {"tile_grid": 2, "block": 192}, "flip": {"flips": True},
            "g2flip": {"tile_grid": 2, "block": 128, "flips": True}}
DEGRADATIONS = {"clean": [], "jpeg95": [("jpeg", 95)], "jpeg75": [("jpeg", 75)], "jpeg50": [("jpeg", 50)],
                "jpeg30": [("jpeg", 30)], "resize0.5": [("resize", 0.5)], "resize0.75": [("resize", 0.75)],
                "resize1.5": [("resize", 1.5)], "resize0.5+jpeg75": [("resize", 0.5), ("jpeg", 75)]}


def dataset() -> Dataset:
    return Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)


def degrade(image: np.ndarray, steps: list[tuple[str, float]]) -> np.ndarray:
    for kind, value in steps:
        d = jpeg(to_uint8(image), int(value)) if kind == "jpeg" else resize(to_uint8(image), value)
        d = d.astype(np.float32) / 255
        image = d if min(d.shape[:2]) >= 32 else resize(to_uint8(d), 32 / min(d.shape[:2])).astype(np.float32) / 255
    return image


def cache_path(variant: str, degradation: str) -> Path:
    return CACHE / f"emb-{variant}-{degradation}.npz"


def load(variant: str, degradation: str) -> np.ndarray | None:
    """The cached embeddings (all images) or ``None`` when not (fully) computed."""
    p = cache_path(variant, degradation)
    if not p.exists():
        return None
    z = np.load(p)
    return z["vectors"] if bool(z["complete"]) else None


def compute(variant: str, degradation: str, paths: list[Path], save_every: int = 25) -> np.ndarray:
    method = load_method("learned", **VARIANTS[variant])
    p = cache_path(variant, degradation)
    done: list[np.ndarray] = []
    seconds = 0.0
    if p.exists():
        z = np.load(p)
        if str(z["tag"]) == method.tag:
            done, seconds = list(z["vectors"]), float(z["seconds"])
            if bool(z["complete"]):
                return np.asarray(z["vectors"])
    p.parent.mkdir(parents=True, exist_ok=True)

    def save(complete: bool) -> None:
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=np.asarray(done, dtype=np.float32), tag=method.tag, complete=complete, seconds=seconds)
        tmp.replace(p)

    for i in range(len(done), len(paths)):
        img = degrade(load_image(paths[i]), DEGRADATIONS[degradation])
        t0 = time.perf_counter()
        done.append(method.embed([img])[0])
        seconds += time.perf_counter() - t0
        if (i + 1) % save_every == 0:
            save(False)
            print(f"{variant}:{degradation} {i + 1}/{len(paths)} {seconds:.0f}s", flush=True)
    save(True)
    return np.asarray(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", nargs="+", required=True, help="variant:degradation pairs, in order")
    args = parser.parse_args()
    ds = dataset()
    for job in args.jobs:
        variant, degradation = job.split(":")
        t0 = time.perf_counter()
        compute(variant, degradation, ds.paths)
        print(json.dumps({"job": job, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
