"""Enrolling degraded copies of the support images (issue 15, lever "use of the enrolled images").

A model owner enrolls clean originals; queries arrive after JPEG or resizing. Here each support image's embedding is
the mean of its L2-normalised embeddings over a fixed set of degraded copies (JPEG 95/75/50/30, resize 0.5/0.75/1.5,
and the clean image), *leaving out the query's own degradation*, so nothing is tuned to the test condition. Queries
are the degraded counterparts of the other images (``evaluate_embeddings(query_embeddings=...)``), against support
of clean images only and against degraded support and queries alike (the two protocols of
``bench_realworld_use.py``). A second use of the same copies keeps them apart: *copies as prototypes* gives each
model one prototype per copy (the mean of its support images' copies of that kind, the query's own left out) and
scores a query by its best-matching prototype of each model, on the same support draw. Embeddings come from
``realworld_cache.py`` (variant ``g2``, the default): ``python benchmarks/realworld_cache.py --jobs g2:clean
g2:jpeg75 ...`` first.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from realworld_cache import DEGRADATIONS, dataset, load

from bench_extractor_realworld import class_split
from common import fmt_ci, machine, update_readme_section, write_result
from modelprint.evaluation import evaluate_embeddings
from modelprint.evaluation.protocols import evaluate_identification, split_support
from modelprint.scores import l2_normalize

COPIES = ["clean", "jpeg95", "jpeg75", "jpeg50", "jpeg30", "resize0.5", "resize0.75", "resize1.5"]
QUERIES = ["jpeg75", "jpeg50", "resize0.5", "resize0.75"]


def score(support: np.ndarray, queries: np.ndarray, labels: list[str], keep: set[str], args: argparse.Namespace
          ) -> dict:
    idx = [i for i, lab in enumerate(labels) if lab in keep]
    r = evaluate_embeddings(support[idx], [labels[i] for i in idx], support=args.support, seed=args.seed,
                            n_boot=1000, pairs=0, query_embeddings=queries[idx]).to_dict()["identification"]
    return {"accuracy": r["accuracy"], "accuracy_ci": r.get("accuracy_ci")}


def score_prototypes(unit: dict[str, np.ndarray], copies: list[str], query: str, labels: list[str], keep: set[str],
                     args: argparse.Namespace) -> dict:
    """Identification with one prototype per copy and model, a query scored by its best prototype of each model;
    the support rows are those :func:`evaluate_embeddings` draws for the same seed."""
    idx = np.array([i for i, lab in enumerate(labels) if lab in keep])
    classes = sorted(keep)
    codes = np.array([classes.index(labels[i]) for i in idx], dtype=np.int64)
    seq_support, _, _, seq_boot, _ = np.random.SeedSequence(args.seed).spawn(5)
    split = split_support(unit["clean"][idx], codes, classes, args.support, seq_support, unit[query][idx])
    xq = unit[query][idx][split.queries]
    scores = np.max([xq @ l2_normalize(np.stack([unit[d][idx][r].mean(axis=0) for r in split.support_rows])).T
                     for d in copies], axis=0)
    r = evaluate_identification(dataclasses.replace(split, query_scores=scores), n_boot=1000,
                                seed=seq_boot.spawn(2)[0])
    return {"accuracy": r.accuracy, "accuracy_ci": r.accuracy_ci}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--variant", default="g2")
    args = parser.parse_args()
    assert set(COPIES) <= set(DEGRADATIONS)
    ds = dataset()
    labels = list(ds.labels)
    emb = {d: load(args.variant, d, len(ds)) for d in COPIES}
    missing = [d for d, e in emb.items() if e is None or not np.isfinite(e).all()]
    if missing:
        raise SystemExit(f"not embedded yet: {', '.join(missing)} (run realworld_cache.py --jobs "
                         + " ".join(f"{args.variant}:{d}" for d in missing) + ")")
    unit = {d: l2_normalize(e, np.float64) for d, e in emb.items()}
    _, report = class_split(labels, args.seed)
    halves = {"all classes": set(labels), "report half": report}
    rows = []
    for query in QUERIES:
        augmented = np.mean([unit[d] for d in COPIES if d != query], axis=0)
        for name, keep in halves.items():
            rows.append({"query": query, "classes": name, "n_classes": len(keep),
                         "clean support": score(unit["clean"], unit[query], labels, keep, args),
                         "degraded support": score(unit[query], unit[query], labels, keep, args),
                         "augmented support": score(augmented, unit[query], labels, keep, args),
                         "copies as prototypes": score_prototypes(unit, [d for d in COPIES if d != query], query,
                                                                  labels, keep, args)})
    clean = {name: score(unit["clean"], unit["clean"], labels, keep, args) for name, keep in halves.items()}
    clean_aug = {name: score(np.mean([unit[d] for d in COPIES], axis=0), unit["clean"], labels, keep, args)
                 for name, keep in halves.items()}
    clean_protos = {name: score_prototypes(unit, COPIES, "clean", labels, keep, args) for name, keep in halves.items()}
    out = {"variant": args.variant, "seed": args.seed, "support": args.support, "copies": COPIES, "rows": rows,
           "clean_queries": {"clean support": clean, "augmented support": clean_aug,
                             "copies as prototypes": clean_protos}, "machine": machine(),
           "command": f"python benchmarks/bench_support_augmentation.py --seed {args.seed} --support {args.support}"}
    path = write_result("support_augmentation", out)
    md = [f"## Enrolling degraded copies of the support images (`{out['command']}`)", "",
          f"`results/{path.name}`. Learned extractor `{args.variant}` on `shared/realworld` (classes with ≥ 8 "
          f"images), support {args.support}, seed {args.seed}; identification accuracy [95% bootstrap interval]. "
          "Augmented support: each support image is the mean of its embeddings over "
          f"{', '.join(COPIES)}, without the query's own degradation; copies as prototypes: one prototype per "
          "copy and model, a query scored by its best one of each model (same copies).", "",
          "| queries | classes | clean support | degraded support | augmented support | copies as prototypes |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['query']} | {r['classes']} ({r['n_classes']}) | "
                  + " | ".join(fmt_ci(r[k]["accuracy"], r[k]["accuracy_ci"])
                               for k in ("clean support", "degraded support", "augmented support",
                                         "copies as prototypes")) + " |")
    for name in halves:
        md.append(f"| clean | {name} | {fmt_ci(clean[name]['accuracy'], clean[name]['accuracy_ci'])} | — | "
                  f"{fmt_ci(clean_aug[name]['accuracy'], clean_aug[name]['accuracy_ci'])} (all copies) | "
                  f"{fmt_ci(clean_protos[name]['accuracy'], clean_protos[name]['accuracy_ci'])} (all copies) |")
    update_readme_section("support_augmentation", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
