"""Zero-shot accuracy against the size of the synthetic pool the extractor is trained on (issue 15's scaling curve).

One rendered pool (the cached spectra of an `modelprint extractor train` run, ``--spectra DIR``) is cut into nested
subsets of whole architectures (both seeds of an architecture stay together; the quarter lies inside the half),
and the extractor is trained on each from scratch with the same steps, seed and validation set (the run's held-out
architectures), so pool size is the only thing that changes. Each point reports the held-out synthetic 5-shot
accuracy of its selected checkpoint and, on ../shared/realworld (classes with >= 8 images, support 5, whole-image
inference, 95% bootstrap intervals), clean identification, JPEG q75 on support and queries, and clean support with
JPEG q75 queries, from bench_robust_training.py's cached spectra (computed here if missing).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_robust_training import condition_spectra, protocol, query_only

from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.extractor.data import SpectraSet
from modelprint.extractor.train import TrainConfig, train_extractor
from modelprint.io import Dataset
from modelprint.io.pool import cache_dir
from modelprint.methods import load_method
from modelprint.seeding import seed_everything
from modelprint.synthesis.space import parse_model_id

CONDITIONS = ("clean", "jpeg q75")


def nested_subsets(model_ids: list[str], fractions: list[float], seed: int) -> dict[float, list[int]]:
    """Label indices of the models of the first ``fraction`` of the architectures, in one seeded order (nested)."""
    archs = sorted({parse_model_id(m)[0].id for m in model_ids})
    order = list(np.random.default_rng(seed).permutation(archs))
    subsets = {}
    for f in fractions:
        keep = set(order[: max(8, round(f * len(order)))])
        subsets[f] = [i for i, m in enumerate(model_ids) if parse_model_id(m)[0].id in keep]
    return subsets


def one_file(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one {pattern}, found {len(found)}")
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spectra", type=Path, required=True,
                        help="an `extractor train` output folder holding spectra-train-*.npz and spectra-val-*.npz")
    parser.add_argument("--out", type=Path, default=Path("out/pool-scaling"), help="where the extractors are trained")
    parser.add_argument("--fractions", default="0.25,0.5,1", help="shares of the training architectures")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    seed_everything(args.seed)
    train_file, val_file = one_file(args.spectra, "spectra-train-*.npz"), one_file(args.spectra, "spectra-val-*.npz")
    train, val = SpectraSet.load(train_file), SpectraSet.load(val_file)
    fractions = sorted(float(f) for f in args.fractions.split(","))
    subsets = nested_subsets(train.model_ids, fractions, args.seed)
    ds = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    labels, shipped = ds.labels, load_method("learned")
    spectra = {c: condition_spectra(shipped, c, ds.paths, cache_dir() / "bench-robust-training") for c in CONDITIONS}
    points = []
    for f in fractions:
        keep = subsets[f]
        folder = args.out / f"{len(keep)}-models"
        start = time.process_time()
        history = train_extractor(train.subset_models(keep), folder, TrainConfig(steps=args.steps, seed=args.seed),
                                  val=val)
        method = load_method("learned", weights=folder / "extractor.safetensors")
        vec = {c: method.embed_spectra([s[None] for s in spectra[c]]) for c in CONDITIONS}
        point = {"fraction": f, "n_train_models": len(keep), "n_pool_models": len(keep) + len(val.model_ids),
                 "best": history["best"], "cpu_seconds": time.process_time() - start,
                 "clean": protocol(vec["clean"], labels, args.seed, args.support, args.boot),
                 "jpeg q75": protocol(vec["jpeg q75"], labels, args.seed, args.support, args.boot),
                 "clean support, jpeg q75 queries": query_only(vec["clean"], vec["jpeg q75"], labels, set(labels),
                                                               args.seed, args.support, args.boot)}
        points.append(point)
        print(len(keep), point["best"], {k: round(point[k]["identification_accuracy"], 3)
                                         for k in (*CONDITIONS, "clean support, jpeg q75 queries")}, flush=True)
    result = {"spectra": {"train": train_file.name, "val": val_file.name},
              "n_val_models": len(val.model_ids), "steps": args.steps, "seed": args.seed, "support": args.support,
              "dataset": "shared/realworld, classes with >= 8 images", "n_images": len(ds), "points": points,
              "machine": machine()}
    path = write_result("pool_scaling", result)
    rows = ["| training generators (pool) | held-out synthetic 5-shot (step) | clean: identification [95% CI] | AUC "
            "| JPEG q75: identification [95% CI] | clean support, JPEG q75 queries |", "|---|---|---|---|---|---|"]
    for p in points:
        c, j, q = p["clean"], p["jpeg q75"], p["clean support, jpeg q75 queries"]
        rows.append(f"| {p['n_train_models']} ({p['n_pool_models']}) | {p['best']['val_accuracy']:.3f} "
                    f"({p['best']['step']}) | {fmt_ci(c['identification_accuracy'], c['identification_accuracy_ci'])} "
                    f"| {c['verification_auc']:.3f} | "
                    f"{fmt_ci(j['identification_accuracy'], j['identification_accuracy_ci'])} | "
                    f"{fmt_ci(q['identification_accuracy'], q['identification_accuracy_ci'])} |")
    given = args.spectra.name if args.spectra.is_absolute() else args.spectra.as_posix()
    md = (f"## Pool-size scaling (`python benchmarks/bench_pool_scaling.py --spectra {given} "
          f"--fractions {args.fractions} --steps {args.steps} --seed {args.seed}`)\n\n"
          f"Nested subsets of whole architectures of one rendered pool (`{train_file.name}`), each trained from "
          f"scratch for {args.steps} steps, checkpoint chosen on the same {len(val.model_ids)} held-out generators; "
          f"`shared/realworld` {len(ds)} images, support {args.support}. Result: "
          f"`{path.relative_to(path.parents[1])}`.\n\n" + "\n".join(rows) + "\n")
    update_readme_section("pool_scaling", md)
    print(md)


if __name__ == "__main__":
    main()
