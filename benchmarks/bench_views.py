"""DIRE feature views and learned fusion: a quick identification number per view, equal vs learned fusion, and cost.

Smoke numbers on small data, not a benchmark of the method: every `--data` folder (one sub-folder of images per
model, e.g. the bundled demo set or a zoo's `samples/`) is split per model into the first `--val` images
(validation: the fusion weights are fit there and nowhere else) and the next `--test` images (test: identification
with `--support` support images per model, 95% bootstrap interval, and 10 support draws). Views: `learned`,
`spectral`, `dire-stats`, `dire-fourier`, `dire-cnn`; fusions of all five with equal weights and with the weights
learned on the validation images. Cost: seconds per image of each view at 256² and 1024² (fresh images, one at a
time, after a warm-up image), on this machine's load.

    python benchmarks/bench_views.py --data src/modelprint/demo/images --data out/zoo/samples --seed 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench_extractor_realworld import embed_all, protocol
from common import fmt_ci, machine, update_readme_section, write_result
from modelprint.io import Dataset, load_image
from modelprint.methods import load_method
from modelprint.methods.fusion import fit_weights
from modelprint.seeding import configure_torch_threads, seed_everything

VIEWS = ("learned", "spectral", "dire-stats", "dire-fourier", "dire-cnn")


def split(folder: Path, n_val: int, n_test: int) -> tuple[dict, dict]:
    """Per model: (validation images, test images), in file order."""
    ds = Dataset.from_path(folder)
    val, test = {}, {}
    for label in ds.classes:
        paths = sorted(s.path for s in ds if s.label == label)[: n_val + n_test]
        if len(paths) < n_val + 2:
            continue
        images = [load_image(p) for p in paths]
        val[label], test[label] = images[:n_val], images[n_val:]
    return val, test


def fuse(embeddings: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The fused method's combination: each view L2-normalised, scaled by √w, concatenated."""
    w = np.asarray(weights) / np.sum(weights)
    return np.concatenate([np.sqrt(wi) * e / np.linalg.norm(e, axis=1, keepdims=True)
                           for wi, e in zip(w, embeddings, strict=True) if wi > 0], axis=1)


def run_dataset(folder: Path, methods: dict, args: argparse.Namespace) -> dict:
    val, test = split(folder, args.val, args.test)
    labels_val = [m for m, ims in val.items() for _ in ims]
    labels_test = [m for m, ims in test.items() for _ in ims]
    emb_val, emb_test, rows = {}, {}, {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        emb_val[name] = embed_all(method, [im for ims in val.values() for im in ims])
        emb_test[name] = embed_all(method, [im for ims in test.values() for im in ims])
        rows[name] = protocol(emb_test[name], labels_test, args.seed, args.support)
        rows[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{folder.name} {name}: {rows[name]['identification_accuracy']:.3f}", flush=True)
    equal = [1.0] * len(methods)
    fit = fit_weights([emb_val[n] for n in methods], labels_val, resolution=0.1)
    rows["fused-equal"] = protocol(fuse([emb_test[n] for n in methods], equal), labels_test, args.seed, args.support)
    rows["fused-learned"] = protocol(fuse([emb_test[n] for n in methods], list(fit.weights)), labels_test, args.seed,
                                     args.support)
    return {"data": str(folder), "models": len(test), "val_per_model": args.val,
            "test_images": len(labels_test), "support": args.support,
            "learned_weights": dict(zip(methods, fit.weights, strict=True)), "fit": fit.to_dict(), "results": rows}


def costs(methods: dict, seed: int, sides: tuple[int, ...] = (256, 1024)) -> dict:
    """Seconds per image at each of ``sides`` (two fresh images each, after one warm-up)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, method in methods.items():
        method.embed([rng.random((64, 64, 3), dtype=np.float32)])
        out[name] = {}
        for side in sides:
            images = [rng.random((side, side, 3), dtype=np.float32) for _ in range(2)]
            t0 = time.perf_counter()
            for im in images:
                method.embed([im])
            out[name][f"{side}"] = round((time.perf_counter() - t0) / len(images), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append", required=True)
    ap.add_argument("--val", type=int, default=6)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--support", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    seed_everything(args.seed)
    configure_torch_threads()
    methods = {name: load_method(name) for name in VIEWS}
    result = {"machine": machine(), "settings": vars(args) | {"data": [str(d) for d in args.data]},
              "versions": {n: m.tag for n, m in methods.items()}, "cost_seconds_per_image": costs(methods, args.seed),
              "datasets": [run_dataset(d, methods, args) for d in args.data]}
    write_result("views", result)
    if not args.no_readme:
        update_readme_section("views", readme(result))


def readme(result: dict) -> str:
    lines = ["## DIRE feature views and learned fusion (smoke numbers)", "",
             "`python benchmarks/bench_views.py` (`results/views.json`). Tiny data: each view's identification "
             "accuracy on the test images (support per model as given, 95% interval), equal vs learned fusion of "
             "all five views (weights fit on the validation images only). Cost in seconds per image, one core "
             "shared with other jobs.", ""]
    for d in result["datasets"]:
        lines += [f"**{d['data']}**: {d['models']} models, {d['test_images']} test images, support {d['support']}, "
                  f"{d['val_per_model']} validation images per model; learned weights "
                  + ", ".join(f"{k} {v:g}" for k, v in d["learned_weights"].items()), "",
                  "| method | identification | mean of 10 draws | verification AUC |", "|---|---|---|---|"]
        for name, r in d["results"].items():
            lines.append(f"| {name} | {fmt_ci(r['identification_accuracy'], r['identification_accuracy_ci'])} | "
                         f"{r['accuracy_10_draws_mean']:.3f} ± {r['accuracy_10_draws_std']:.3f} | "
                         f"{r['verification_auc']:.3f} |")
        lines.append("")
    lines += ["| view | s/image 256² | s/image 1024² |", "|---|---|---|"]
    for name, c in result["cost_seconds_per_image"].items():
        lines.append(f"| {name} | {c['256']} | {c['1024']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
