"""Measure the fallback "unknown" thresholds of :mod:`modelprint.gallery.fallback` on held-out classes.

A measurement of the methods (it embeds images with them), so it lives here, above the gallery that reads its
result.

The classes are synthetic generators (:mod:`modelprint.synthesis`, trained exactly like the extractor's pool) of
architectures *outside* the paper's space the shipped extractor was trained on: each has at least one factor of the
extended space only (pixel-shuffle upsampling, LeakyReLU/GELU/SiLU, group norm, 3 blocks). Each generator is applied
to its own held-out real photo crops (the real pool's holdout split), quantised to 8 bits like a saved image. For
every prototype size ``k`` and ``repeats`` seeded splits per class, the genuine scores are each remaining image of a
class against the prototype of ``k`` of its images (the gallery's prototype: normalised mean of normalised
embeddings), and the threshold is the gallery's rule (:func:`~modelprint.gallery.calibration.accept_threshold`) at
``target_tpr``. Also recorded: the share of images rejected at that threshold by the other classes' prototypes.
``fused`` is measured from its views' embeddings (its default views, combined by :meth:`FusedMethod.combine`).

Rebuild (about 3 minutes of CPU): ``python -m modelprint.evaluation.fallback --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from modelprint import __version__
from modelprint.atomic import write_text
from modelprint.gallery.calibration import DEFAULT_TARGET_TPR, accept_threshold
from modelprint.gallery.fallback import FALLBACK_FILE, FORMAT
from modelprint.io.pool import RealPool
from modelprint.methods import load_method
from modelprint.scores import l2_normalize
from modelprint.synthesis import Architecture, all_architectures, model_id

SUPPORTS = (1, 2, 3, 5, 8, 12, 16)
COMMAND = "python -m modelprint.evaluation.fallback --seed {seed} --classes {classes} --per-class {per_class}"


def held_out_architectures(n: int, seed: int) -> list[Architecture]:
    """``n`` architectures of the extended space that are not in the paper's (training) space, chosen by ``seed``."""
    paper = set(all_architectures("paper"))
    candidates = [a for a in all_architectures("extended") if a not in paper]
    pick = np.random.default_rng(seed).choice(len(candidates), size=n, replace=False)
    return sorted(candidates[i] for i in pick)


def support_thresholds(
    x: np.ndarray, labels: np.ndarray, supports: tuple[int, ...], repeats: int, target_tpr: float, seed: int
) -> dict[str, dict]:
    """Per prototype size ``k``: the threshold accepting ``target_tpr`` of the genuine scores, and what it does.

    ``impostor_reject_rate`` is the share of images whose best *other* class's prototype falls below the threshold:
    how often an image of a model that is not enrolled would be answered "unknown".
    """
    x = l2_normalize(x)
    classes = np.unique(labels)
    out: dict[str, dict] = {}
    for k in supports:
        rng = np.random.default_rng(seed)
        genuine, impostor = [], []
        for _ in range(repeats):
            splits = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
            protos = l2_normalize(np.stack([x[idx[:k]].mean(axis=0) for idx in splits]))
            for ci, idx in enumerate(splits):
                sims = x[idx[k:]] @ protos.T
                genuine.append(sims[:, ci])
                impostor.append(np.delete(sims, ci, axis=1).max(axis=1))
        g, imp = np.concatenate(genuine), np.concatenate(impostor)
        t, _ = accept_threshold(g, target_tpr)
        out[str(k)] = {
            "threshold": t,
            "n_genuine": int(len(g)),
            "genuine_accept_rate": float(np.mean(g >= t)),
            "impostor_reject_rate": float(np.mean(imp < t)),
        }
    return out


def class_images(archs: list[Architecture], per_class: int, size: int, seed: int, pool_dir: Path) -> list[np.ndarray]:
    """Per architecture, ``per_class`` uint8 images: its own held-out photo crops passed through its generator."""
    import torch

    from modelprint.synthesis import apply_generator, load_synthetic, synthesize_pool

    torch.set_num_threads(1)  # like the pool's workers: the generators' weights depend on the thread count
    synthesize_pool(pool_dir, archs=archs, seeds=[seed])  # the pool's own settings; resumable
    crops = RealPool().crops(len(archs) * per_class, size=size, seed=seed + 1, split="holdout")
    return [
        apply_generator(load_synthetic(pool_dir, model_id(a, seed)), crops[i * per_class : (i + 1) * per_class])
        for i, a in enumerate(archs)
    ]


def measure(
    *, seed: int = 0, classes: int = 16, per_class: int = 24, size: int = 128, repeats: int = 5,
    target_tpr: float = DEFAULT_TARGET_TPR, work: Path = Path("out/fallback"), out: Path = FALLBACK_FILE,
) -> dict:
    """Measure the thresholds of ``learned``, ``spectral`` and ``fused`` and write them to ``out`` atomically."""
    start = time.perf_counter()
    archs = held_out_architectures(classes, seed)
    images = class_images(archs, per_class, size, seed, work / "pool")
    labels = np.repeat(np.arange(classes), per_class)
    pixels = [im.astype(np.float32) / 255.0 for cls in images for im in cls]
    learned, spectral = load_method("learned"), load_method("spectral")
    fused = load_method("fused")  # default views: learned and spectral, as below
    views = [
        np.concatenate([m.embed(pixels[i : i + 16]) for i in range(0, len(pixels), 16)]) for m in (learned, spectral)
    ]
    embeddings = {learned.tag: views[0], spectral.tag: views[1], fused.tag: fused.combine(views)}
    doc = {
        "format": FORMAT,
        "rule": (
            f"threshold = largest t accepting >= {target_tpr:g} of genuine scores (cosine similarity of an image to "
            "the prototype of k other images of its class, the normalised mean of their normalised embeddings), "
            "as a gallery calibrates 'unknown'; over "
            f"{repeats} seeded random splits per class and k"
        ),
        "command": COMMAND.format(seed=seed, classes=classes, per_class=per_class),
        "seed": seed,
        "target_tpr": target_tpr,
        "data": {
            "classes": classes,
            "images_per_class": per_class,
            "image_size": size,
            "description": (
                "synthetic generators (modelprint.synthesis, the extractor pool's training settings, one torch "
                "thread) of "
                "architectures outside the paper space the extractor was trained on, each applied to its own "
                "crops of held-out real photos (RealPool holdout split), 8-bit"
            ),
            "architectures": [model_id(a, seed) for a in archs],
            "real_photos": [p.name for p in RealPool().sources("holdout")],
        },
        "modelprint_version": __version__,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "methods": {
            tag: {"by_support": support_thresholds(x, labels, SUPPORTS, repeats, target_tpr, seed)}
            for tag, x in embeddings.items()
        },
    }
    doc["seconds"] = round(time.perf_counter() - start, 1)
    write_text(out, json.dumps(doc, indent=1) + "\n")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--work", type=Path, default=Path("out/fallback"), help="where the generators are trained")
    parser.add_argument("--out", type=Path, default=FALLBACK_FILE)
    args = parser.parse_args()
    doc = measure(seed=args.seed, classes=args.classes, per_class=args.per_class, work=args.work, out=args.out)
    for tag, entry in doc["methods"].items():
        print(tag.split("@")[0], {k: round(v["threshold"], 4) for k, v in entry["by_support"].items()})
    print(f"wrote {args.out} in {doc['seconds']} s")


if __name__ == "__main__":
    main()
