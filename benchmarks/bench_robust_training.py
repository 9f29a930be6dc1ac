"""Robustness of the learned extractor's weights to JPEG and resizing: the shipped weights against candidate weights
(e.g. trained with `modelprint extractor train --augment robust`) on ../shared/realworld, in the same run.

Protocol of bench_extractor_realworld.py (classes with >= 8 images, support 5, whole-image inference, 95% bootstrap
intervals). Every image degraded (support and queries alike: JPEG q95/75/50/30, resize 0.5/0.75/1.5x bicubic, resize
0.5x then JPEG q75), and clean support with degraded queries (the usual case: a model owner enrolls originals, the
queries went through JPEG or a resize on the way). Weights are compared on a random half of the classes (the
selection half: the choice to ship is made there) and reported on the other half too. The residual spectra of each
condition do not depend on the weights: they are computed once and cached (``--cache``), so a killed run resumes
and another candidate costs only its network passes. ``--spectra-only`` fills the cache and stops. ``--max-side N``
embeds only the centre N² of each (degraded) image, a cheaper protocol whose numbers are not those of the full
images (the residual's cost grows with the pixels; 1024² images are a third of the data set's pixels).
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import numpy as np

from bench_extractor_realworld import class_split
from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.atomic import atomic_path
from modelprint.evaluation.protocols import evaluate_embeddings, evaluate_identification, split_support
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg, resize
from modelprint.io.images import to_uint8
from modelprint.io.pool import cache_dir
from modelprint.methods import load_method
from modelprint.scores import l2_normalize
from modelprint.seeding import seed_everything

#: Every image degraded: the operations applied in order.
CONDITIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "clean": (), "jpeg q95": (("jpeg", 95),), "jpeg q75": (("jpeg", 75),), "jpeg q50": (("jpeg", 50),),
    "jpeg q30": (("jpeg", 30),), "resize 0.5x": (("resize", 0.5),), "resize 0.75x": (("resize", 0.75),),
    "resize 1.5x": (("resize", 1.5),), "resize 0.5x + jpeg q75": (("resize", 0.5), ("jpeg", 75)),
}
#: Clean support, queries degraded: the query condition.
QUERY_ONLY = {"clean support, jpeg q75 queries": "jpeg q75", "clean support, jpeg q50 queries": "jpeg q50",
              "clean support, resize 0.5x queries": "resize 0.5x"}


def degrade(image: np.ndarray, ops: tuple[tuple[str, float], ...], max_side: int = 0) -> np.ndarray:
    """``image`` (float RGB in [0, 1]) through ``ops``; a result under 32 px is upscaled to 32 (the method's floor);
    then its centre ``max_side``² when it is larger (0: whole)."""
    d = image
    if ops:
        d = to_uint8(image)
        for kind, value in ops:
            d = jpeg(d, int(value)) if kind == "jpeg" else resize(d, value)
        if min(d.shape[:2]) < 32:
            d = resize(d, 32 / min(d.shape[:2]))
        d = d.astype(np.float32) / 255
    if max_side:
        h, w = d.shape[:2]
        y, x = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
        d = d[y : y + max_side, x : x + max_side]
    return d


def condition_spectra(method, name: str, paths: list[Path], cache: Path, max_side: int = 0) -> np.ndarray:  # noqa: ANN001
    """Whole-image spectra ``(n, 3, T, T)`` of every image under condition ``name`` (cached)."""
    slug = re.sub(r"[^a-z0-9.]+", "-", name) + (f"-max{max_side}" if max_side else "")
    path = cache / f"{slug}-{method.residual_extractor.version}-{len(paths)}.npy"
    if path.exists():
        return np.load(path)
    spectra = np.stack([method.window_spectra(degrade(load_image(p), CONDITIONS[name], max_side))[0] for p in paths])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, spectra)
    return spectra


def protocol(vectors: np.ndarray, labels: list[str], seed: int, support: int, n_boot: int) -> dict:
    """Identification and verification as in bench_extractor_realworld.py (without its 10 extra support draws)."""
    d = evaluate_embeddings(vectors, labels, support=support, pairs=2000, seed=seed, n_boot=n_boot).to_dict()
    i, v = d["identification"], d["verification"]
    return {"identification_accuracy": i["accuracy"], "identification_accuracy_ci": i.get("accuracy_ci"),
            "macro_f1": i["macro_f1"], "verification_auc": v["auc"], "verification_auc_ci": v.get("auc_ci"),
            "eer": v["eer"]}


def query_only(clean: np.ndarray, degraded: np.ndarray, labels: list[str], keep: set[str], seed: int,
               support: int, n_boot: int) -> dict:
    """Identification with prototypes from clean images and queries from their degraded copies (same draw of the
    support rows as :func:`modelprint.evaluation.evaluate_embeddings` with ``seed``)."""
    idx = [i for i, lab in enumerate(labels) if lab in keep]
    lab = [labels[i] for i in idx]
    classes = sorted(set(lab))
    codes = np.array([classes.index(x) for x in lab], dtype=np.int64)
    seq_support, _, _, seq_boot, _ = np.random.SeedSequence(seed).spawn(5)
    split = split_support(l2_normalize(clean[idx], np.float64), codes, classes, support, seq_support)
    scores = l2_normalize(degraded[idx], np.float64)[split.queries] @ split.prototypes.T
    split = type(split)(**{**split.__dict__, "query_scores": scores})
    r = evaluate_identification(split, n_boot=n_boot, seed=seq_boot.spawn(2)[0])
    return {"identification_accuracy": r.accuracy, "identification_accuracy_ci": r.accuracy_ci}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", action="append", default=[], metavar="LABEL=PATH",
                        help="candidate extractor weights (repeatable); the shipped ones are always measured")
    parser.add_argument("--ensemble", action="append", default=[], metavar="A+B[+C]",
                        help="also measure the concatenation of these extractors' embeddings (labels of --weights, "
                             "or 'shipped'; repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the 95%% intervals")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated subset of the conditions")
    parser.add_argument("--cache", type=Path, default=None, help="spectra cache folder (default: modelprint's cache)")
    parser.add_argument("--max-side", type=int, default=0, help="embed the centre N² of each image only (0: whole)")
    parser.add_argument("--spectra-only", action="store_true", help="compute and cache the spectra, then stop")
    args = parser.parse_args()
    seed_everything(args.seed)
    ds = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    labels, cache = ds.labels, args.cache or cache_dir() / "bench-robust-training"
    conditions = [c.strip() for c in args.conditions.split(",")]
    methods = {"shipped": load_method("learned")}
    methods |= {lab: load_method("learned", weights=path) for lab, path in (w.split("=", 1) for w in args.weights)}
    shipped = methods["shipped"]
    spectra = {}
    for name in conditions:
        spectra[name] = condition_spectra(shipped, name, ds.paths, cache, args.max_side)
        print("spectra", name, spectra[name].shape, flush=True)
    if args.spectra_only:
        return
    select_on, report_on = class_split(labels, args.seed)
    halves = {"select half": select_on, "report half": report_on}
    out: dict = {"dataset": "shared/realworld, classes with >= 8 images", "n_classes": len(ds.classes),
                 "n_images": len(ds), "support": args.support, "n_boot": args.boot, "seed": args.seed,
                 "max_side": args.max_side or None,
                 "extractors": {k: m.tag for k, m in methods.items()},
                 "recipes": {k: m.meta.get("recipe") for k, m in methods.items()},
                 "selection": {"select_on_classes": sorted(select_on), "report_on_classes": sorted(report_on)},
                 "results": {}}
    vectors = {k: {c: m.embed_spectra([s[None] for s in spectra[c]]) for c in conditions} for k, m in methods.items()}
    for combo in args.ensemble:
        parts = combo.split("+")
        if unknown := [p for p in parts if p not in vectors]:
            parser.error(f"--ensemble {combo}: no extractor labelled {', '.join(unknown)}")
        vectors[combo] = {c: ensemble([vectors[p][c] for p in parts]) for c in conditions}
        out["extractors"][combo] = " + ".join(out["extractors"][p] for p in parts)
    def half(v: np.ndarray, keep: set[str]) -> float:
        mask = [lab in keep for lab in labels]
        kept = [lab for lab in labels if lab in keep]
        r = evaluate_embeddings(v[mask], kept, support=args.support, pairs=200, seed=args.seed, n_boot=0)
        return r.to_dict()["identification"]["accuracy"]

    for c in conditions:
        out["results"][c] = {k: {**protocol(vectors[k][c], labels, args.seed, args.support, args.boot),
                                 **{h: half(vectors[k][c], keep) for h, keep in halves.items()}} for k in vectors}
        print(c, {k: round(v["identification_accuracy"], 3) for k, v in out["results"][c].items()}, flush=True)
    for q, c in QUERY_ONLY.items():
        if c in conditions and "clean" in conditions:
            out["results"][q] = {}
            for k in vectors:
                clean, deg = vectors[k]["clean"], vectors[k][c]
                every = query_only(clean, deg, labels, set(labels), args.seed, args.support, args.boot)
                out["results"][q][k] = {**every, **{h: query_only(clean, deg, labels, keep, args.seed, args.support, 0)[
                    "identification_accuracy"] for h, keep in halves.items()}}
            print(q, {k: round(v["identification_accuracy"], 3) for k, v in out["results"][q].items()}, flush=True)
    out["open_set_auroc"] = {c: {k: open_set_auroc(vectors[k][c], labels, args.seed, args.support) for k in vectors}
                             for c in ("clean", "jpeg q75") if c in conditions}
    print("open-set AUROC", out["open_set_auroc"], flush=True)
    out["decision"] = {k: decide(out["results"], k) for k in vectors if k != "shipped"}
    out["machine"] = machine()
    path = write_result("robust_training" + (f"_max{args.max_side}" if args.max_side else ""), out)
    names = list(vectors)
    rows = ["| images | " + " | ".join(f"{k}: identification [95% CI] | AUC | select / report half"
                                       for k in names) + " |",
            "|---|" + "---|---|---|" * len(names)]
    for c, r in out["results"].items():
        cells = [f"{fmt_ci(r[k]['identification_accuracy'], r[k]['identification_accuracy_ci'])} | "
                 f"{auc(r[k])} | "
                 f"{r[k]['select half']:.3f} / {r[k]['report half']:.3f}" for k in names]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    cap = f" --max-side {args.max_side}" if args.max_side else ""
    where = f" on the centre {args.max_side}² of each image (`{cap.strip()}`)" if args.max_side else ""
    extractors = ", ".join(f"{k} `{v}`" for k, v in out["extractors"].items())
    ens = "".join(f" --ensemble {shlex.quote(e)}" for e in args.ensemble)
    md = (f"## Robust training of the extractor (`python benchmarks/bench_robust_training.py --weights LABEL=PATH"
          f"{ens}{cap} --seed {args.seed}`)\n\n{out['n_classes']} classes of `shared/realworld`, "
          f"{out['n_images']} images, "
          f"support {args.support}, whole-image inference{where}; extractors {extractors}. Selection half: "
          f"{', '.join(sorted(select_on))}. Result: `{path.relative_to(path.parents[1])}`.\n\n"
          + "\n".join(rows) + "\n")
    if out["open_set_auroc"]:
        md += (f"\nOpen-set AUROC (unknown models rejected by max similarity; a quarter of the classes held out as "
               f"unknown, mean of {OPEN_DRAWS} draws): " + "; ".join(
                   f"{c}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()) for c, r in out["open_set_auroc"].items())
               + "\n")
    for k, d in out["decision"].items():
        md += f"\n{k} against shipped, on the selection half: {d['reading']}\n"
    update_readme_section("robust_training" + (f"_max{args.max_side}" if args.max_side else ""), md)
    print(md)


OPEN_DRAWS = 20


def open_set_auroc(x: np.ndarray, labels: list[str], seed: int, support: int) -> float:
    """Mean open-set AUROC of the max-similarity rule over ``OPEN_DRAWS`` draws of support and unknown classes."""
    return float(np.mean([evaluate_embeddings(x, labels, support=support, seed=s, n_boot=0, pairs=0).open_set.auroc
                          for s in range(seed, seed + OPEN_DRAWS)]))


def ensemble(parts: list[np.ndarray]) -> np.ndarray:
    """Several extractors as one: their L2-normalised embeddings side by side (each weighing the same)."""
    return np.concatenate([l2_normalize(p, np.float64) for p in parts], axis=1) / np.sqrt(len(parts))


def auc(row: dict) -> str:
    """The row's verification AUC, or a dash for the clean-support rows (identification only)."""
    return f"{row['verification_auc']:.3f}" if "verification_auc" in row else "–"


def decide(results: dict, name: str) -> dict:
    """Better than the shipped weights on the selection half: clean not lower and every degraded row higher."""
    sel = {c: (r[name]["select half"], r["shipped"]["select half"]) for c, r in results.items()}
    clean_ok = "clean" in sel and sel["clean"][0] >= sel["clean"][1]
    worse = [c for c, (a, b) in sel.items() if c != "clean" and a <= b]
    better = clean_ok and not worse and len(sel) > 1
    reading = (f"clean {sel['clean'][0]:.3f} vs {sel['clean'][1]:.3f}; " if "clean" in sel else "") + (
        "better on clean and on every degraded row" if better else
        f"not better ({'clean lower; ' if not clean_ok else ''}"
        f"{'not higher on: ' + ', '.join(worse) if worse else ''})")
    return {"better": better, "clean_not_lower": clean_ok, "not_higher": worse, "reading": reading}


if __name__ == "__main__":
    main()
