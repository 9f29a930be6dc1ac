"""Zero-shot attribution over modelprint's zoo (the Model Synthesis paper's Tables VIII–X in miniature).

All generators of a built zoo (`modelprint zoo build --tier standard`; the shared autoencoder is not a generator),
none of which the shipped extractor has seen. Each model has `samples` images; the first `--tune-images` of every
model are reserved for fine-tuning and never evaluated, the rest are the evaluation set.

Methods, all in one run:
- `spectral`: the handcrafted baseline;
- `learned`: the shipped extractor (trained on synthetic generators only);
- `learned+seen`: the shipped extractor fine-tuned on the reserved images of a random half of the zoo ("seen"),
  its step chosen by zero-shot accuracy on a validation part of those reserved images (never on evaluation images).

Protocols (modelprint.evaluation): identification with `--support` support images per model (95% bootstrap
interval), verification AUC / EER, clustering (cosine silhouette, Davies–Bouldin), over all models and over each
half. The same methods on ../shared/realworld (support 5) are reported beside it. Lineage: the cosine distance
between model centroids (mean embedding), for each lineage child or shared-autoencoder sibling against its relative
and against all unrelated models.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench_extractor_realworld import embed_all, protocol
from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.evaluation import evaluate_embeddings
from modelprint.extractor.checkpoint import DEFAULT_WEIGHTS
from modelprint.extractor.data import SpectraSet
from modelprint.extractor.train import TrainConfig, train_extractor
from modelprint.io import Dataset, load_image
from modelprint.methods import load_method
from modelprint.seeding import seed_everything
from modelprint.zoo import Zoo


def zoo_images(zoo: Zoo) -> dict[str, list[np.ndarray]]:
    from modelprint.zoo.store import SAMPLES_DIR

    return {name: [load_image(p) for p in sorted((zoo.root / SAMPLES_DIR / name).glob("*.png"))]
            for name, entry in zoo.entries().items() if entry["kind"] != "autoencoder"}


def finetune(images: dict[str, list[np.ndarray]], seen: list[str], n_tune: int, out_dir: Path, steps: int, seed: int) -> Path:
    """Fine-tune the shipped extractor on the reserved images of the seen models; returns the weights path."""
    method = load_method("learned")
    n_val = max(2, n_tune // 5)
    train_x, train_y, val_x, val_y = [], [], [], []
    for label, name in enumerate(seen):
        spectra = np.concatenate([method.window_spectra(im) for im in images[name][:n_tune]])
        train_x.append(spectra[: n_tune - n_val])
        train_y += [label] * (n_tune - n_val)
        val_x.append(spectra[n_tune - n_val :])
        val_y += [label] * n_val
    train = SpectraSet(np.concatenate(train_x).astype(np.float16), np.array(train_y), list(seen))
    val = SpectraSet(np.concatenate(val_x).astype(np.float16), np.array(val_y), list(seen))
    cfg = TrainConfig(steps=steps, P=min(len(seen), 8), K=4, lr=3e-4, warmup=20, eval_every=max(10, steps // 10),
                      checkpoint_every=steps, seed=seed)
    train_extractor(train, out_dir, cfg, val=val, resume=False, init=DEFAULT_WEIGHTS)
    return out_dir / "extractor.safetensors"


def centroid_distances(vectors: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    names = sorted(set(labels))
    lab = np.array(labels)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cent = np.stack([unit[lab == n].mean(0) for n in names])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    d = 1.0 - cent @ cent.T
    return {a: {b: float(d[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)}


def lineage(dist: dict[str, dict[str, float]], pairs: list[tuple[str, str, str]]) -> list[dict]:
    rows = []
    for child, relative, relation in pairs:
        if child not in dist or relative not in dist:
            continue
        others = [v for k, v in dist[child].items() if k not in (child, relative)]
        closer = sum(v < dist[child][relative] for v in others)
        rows.append({"model": child, "relative": relative, "relation": relation, "distance": dist[child][relative],
                     "unrelated_mean": float(np.mean(others)), "unrelated_min": float(np.min(others)),
                     "relative_rank": closer + 1, "n_candidates": len(others) + 1})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=10)
    parser.add_argument("--tune-images", type=int, default=50)
    parser.add_argument("--tune-steps", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=Path("out/bench-zoo"))
    args = parser.parse_args()
    seed_everything(args.seed)
    t0 = time.perf_counter()
    zoo = Zoo(args.zoo)
    images = zoo_images(zoo)
    names = sorted(images)
    rng = np.random.default_rng(args.seed)
    seen = sorted(rng.choice(names, size=len(names) // 2, replace=False).tolist())
    unseen = [n for n in names if n not in seen]

    tuned = finetune(images, seen, args.tune_images, args.workdir / "extractor-seen", args.tune_steps, args.seed)
    methods = {"spectral": load_method("spectral"), "learned": load_method("learned"),
               "learned+seen": load_method("learned", weights=tuned)}

    eval_images = [im for n in names for im in images[n][args.tune_images :]]
    eval_labels = [n for n in names for _ in images[n][args.tune_images :]]
    rw = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    rw_images = [load_image(p) for p in rw.paths]

    entries = zoo.entries()
    out: dict = {"zoo": str(args.zoo), "models": names, "model_sha256": {n: entries[n]["files"] for n in names},
                 "seen": seen, "unseen": unseen, "support": args.support,
                 "tune_images": args.tune_images, "tune_steps": args.tune_steps, "seed": args.seed,
                 "eval_images_per_model": len(images[names[0]]) - args.tune_images, "machine": machine(), "methods": {}}
    relatives = [("ddpm-finetune", "ddpm", "fine-tuned child"), ("ddpm-lora", "ddpm", "LoRA child"),
                 ("ddpm-seed1", "ddpm", "same recipe, other seed"), ("ldm-cosine", "ldm", "shared autoencoder")]
    for mname, method in methods.items():
        vec = embed_all(method, eval_images)
        lab = np.array(eval_labels)
        res = {"all": protocol(vec, eval_labels, args.seed, args.support)}
        for part, members in (("seen", seen), ("unseen", unseen)):
            mask = np.isin(lab, members)
            res[part] = protocol(vec[mask], list(lab[mask]), args.seed, args.support)
        res["all"]["davies_bouldin"] = evaluate_embeddings(vec, eval_labels, support=args.support, n_boot=0,
                                                           seed=args.seed).to_dict()["clustering"].get("davies_bouldin")
        res["lineage"] = lineage(centroid_distances(vec, eval_labels), relatives)
        res["realworld"] = protocol(embed_all(method, rw_images), rw.labels, args.seed, 5)
        out["methods"][mname] = res
        print(mname, {k: round(v["identification_accuracy"], 3) for k, v in res.items() if isinstance(v, dict)}, flush=True)
    out["seconds"] = time.perf_counter() - t0
    write_result("zoo_zero_shot", out)

    cmd = f"python benchmarks/bench_zoo.py --zoo {args.zoo} --seed {args.seed}"
    md = [f"## Zero-shot attribution over the zoo (`{cmd}`)", "",
          f"{len(names)} zoo generators (32², standard tier), {out['eval_images_per_model']} evaluation images each, support "
          f"{args.support}; `learned+seen` is fine-tuned on {args.tune_images} other images of each of {len(seen)} "
          f"seen models ({', '.join(seen)}). 95% bootstrap intervals. Real-world: shared/realworld, support 5.", "",
          "| method | ident. all | ident. seen half | ident. unseen half | verif. AUC all | silhouette | DBI | real-world ident. | real-world AUC |",
          "|---|---|---|---|---|---|---|---|---|"]
    for mname, r in out["methods"].items():
        a = r["all"]
        md.append(f"| {mname} | {fmt_ci(a['identification_accuracy'], a['identification_accuracy_ci'])} | "
                  f"{fmt_ci(r['seen']['identification_accuracy'], r['seen']['identification_accuracy_ci'])} | "
                  f"{fmt_ci(r['unseen']['identification_accuracy'], r['unseen']['identification_accuracy_ci'])} | "
                  f"{fmt_ci(a['verification_auc'], a['verification_auc_ci'])} | {a['silhouette']:.3f} | "
                  f"{a['davies_bouldin']:.2f} | {fmt_ci(r['realworld']['identification_accuracy'], r['realworld']['identification_accuracy_ci'])} | "
                  f"{r['realworld']['verification_auc']:.3f} |")
    md += ["", "Lineage (cosine distance between model centroids; rank of the relative among all other models, 1 = nearest):", "",
           "| method | model | relative | relation | distance | unrelated mean (min) | rank |", "|---|---|---|---|---|---|---|"]
    for mname, r in out["methods"].items():
        for row in r["lineage"]:
            md.append(f"| {mname} | {row['model']} | {row['relative']} | {row['relation']} | {row['distance']:.3f} | "
                      f"{row['unrelated_mean']:.3f} ({row['unrelated_min']:.3f}) | {row['relative_rank']}/{row['n_candidates']} |")
    update_readme_section("zoo_zero_shot", "\n".join(md))


if __name__ == "__main__":
    main()
