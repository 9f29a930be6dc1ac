"""Embeddings of ../shared/realworld (classes with ≥ 8 images) per method variant and degradation, cached on disk.

``python benchmarks/realworld_cache.py --jobs base:clean g2:jpeg75 ...`` embeds what is not cached yet, saving every
few images, so a killed run resumes where it stopped; the classes of the selection half (the split of
bench_extractor_realworld.py) come first, so levers can be chosen before a slow pass ends. The cache lives in
``out/realworld_use/`` (never committed); each file records the method's tag, and a cache made by another method
version is recomputed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench_extractor_realworld import class_split
from common import BENCH_DIR, shared_dir
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg, resize
from modelprint.io.images import to_uint8
from modelprint.methods import load_method

CACHE = BENCH_DIR.parent / "out" / "realworld_use"
VARIANTS = {"base": {"tile_grid": 0}, "g2": {"tile_grid": 2, "block": 128}, "g3": {"tile_grid": 3, "block": 128},
            "g2b192": {"tile_grid": 2, "block": 192}, "flip": {"tile_grid": 0, "flips": True},
            "g2flip": {"tile_grid": 2, "block": 128, "flips": True},
            "g2d4": {"tile_grid": 2, "block": 128, "symmetries": "d4"}}
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


def _read(p: Path) -> tuple[list[int], list[np.ndarray], str, float]:
    z = np.load(p)
    index = z["index"].tolist() if "index" in z else list(range(len(z["vectors"])))
    return index, list(z["vectors"]), str(z["tag"]), float(z["seconds"])


def load(variant: str, degradation: str, n: int) -> np.ndarray | None:
    """The cached embeddings ``(n, d)`` in dataset order, NaN rows where not computed yet; ``None`` if none."""
    p = cache_path(variant, degradation)
    if not p.exists():
        return None
    index, vectors, _, _ = _read(p)
    if not index:
        return None
    out = np.full((n, len(vectors[0])), np.nan, dtype=np.float32)
    out[index] = np.asarray(vectors)
    return out


def compute(variant: str, degradation: str, paths: list[Path], order: list[int], save_every: int = 25) -> None:
    method = load_method("learned", **VARIANTS[variant])
    p = cache_path(variant, degradation)
    index: list[int] = []
    done: list[np.ndarray] = []
    seconds = 0.0
    if p.exists():
        cached_index, cached, tag, cached_seconds = _read(p)
        if tag == method.tag:
            index, done, seconds = cached_index, cached, cached_seconds
    p.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=np.asarray(done, dtype=np.float32), index=np.asarray(index, dtype=np.int64),
                 tag=method.tag, seconds=seconds)
        tmp.replace(p)

    todo = [i for i in order if i not in set(index)]
    for k, i in enumerate(todo, start=1):
        img = degrade(load_image(paths[i]), DEGRADATIONS[degradation])
        t0 = time.perf_counter()
        done.append(method.embed([img])[0])
        index.append(i)
        seconds += time.perf_counter() - t0
        if k % save_every == 0 or k == len(todo):
            save()
            print(f"{variant}:{degradation} {len(index)}/{len(paths)} {seconds:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", nargs="+", required=True, help="variant:degradation pairs, in order")
    args = parser.parse_args()
    ds = dataset()
    first, _ = class_split(ds.labels, 0)
    order = sorted(range(len(ds)), key=lambda i: (ds.labels[i] not in first, i))
    for job in args.jobs:
        variant, degradation = job.split(":")
        t0 = time.perf_counter()
        compute(variant, degradation, ds.paths, order)
        print(json.dumps({"job": job, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
