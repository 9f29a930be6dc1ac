"""Does the counterfactual contrast drop content and keep the model, on generators it never saw? (issue 14)

A controlled grid needing no zoo: `--models` synthetic generators of the Model Synthesis space (architectures drawn
by seed, none of the shipped contrast references' architectures, trained `--steps` steps to reconstruct real
crops) each redraw the same `--photos` held-out photo crops and `--faces` held-out LFW faces (32²), so every image
is labelled (model, content). For each view and for the equal fusion of the five views, raw embeddings against the
`contrast` of them (the embedding minus the mean embedding of the image redrawn by the shipped references):

- **leakage**: content id read by a logistic regression trained on the other models' images (leave one model
  out; `modelprint.causal.invariance.content_leakage`), chance 1 / contents;
- **identification**: which generator, by logistic regression and nearest prototype under grouped
  cross-validation by content (no test content seen in training; `identification`).

Nothing is fitted on content labels and the contrast has no parameters, so there is no selection to make.
Intervals resample contents (95%).

    python benchmarks/bench_contrast_pool.py --seed 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_views import VIEWS, fuse

from common import fmt_ci, machine, update_readme_section, write_result
from modelprint.causal.contrast import SHIPPED_REFERENCES, ReferenceRedrawers, contrast
from modelprint.causal.invariance import content_leakage, identification
from modelprint.causal.pairs import content_images
from modelprint.methods import load_method
from modelprint.seeding import configure_torch_threads, seed_everything
from modelprint.synthesis import load_synthetic
from modelprint.synthesis.pool import read_manifest, synthesize_pool
from modelprint.synthesis.space import Architecture, list_architectures
from modelprint.synthesis.train import apply_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=6)
    ap.add_argument("--photos", type=int, default=18)
    ap.add_argument("--faces", type=int, default=6)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=Path("out/bench-contrast-pool"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    configure_torch_threads()
    t_start = time.perf_counter()
    refs = ReferenceRedrawers(SHIPPED_REFERENCES, sorted(read_manifest(SHIPPED_REFERENCES)))
    taken = {Architecture.parse(i.rpartition("-s")[0]).id for i in refs.ids}
    archs = [a for a in list_architectures("paper") if a not in taken]
    chosen = sorted(np.random.default_rng(args.seed).choice(archs, args.models, replace=False).tolist())
    pool = args.workdir / f"models-s{args.seed}"
    synthesize_pool(pool, chosen, [1000 + args.seed], max_steps=args.steps)
    ids = sorted(read_manifest(pool))
    x, sources = content_images(args.photos, args.faces, 32, args.seed)
    images, models, contents = [], [], []
    for mid in ids:
        y = apply_generator(load_synthetic(pool, mid), x)
        images += list(y)
        models += [mid] * len(y)
        contents += list(range(len(y)))
    models, contents = np.asarray(models), np.asarray(contents)
    redrawn = [refs.redraw(k, images) for k in range(len(refs))]
    methods = {v: load_method(v, **({"max_tiles": 4} if v.startswith("dire") else {})) for v in VIEWS}
    seconds = dict.fromkeys(VIEWS, 0.0)
    by_set = []
    for ims in (images, *redrawn):  # set by set, every view in turn: the DIRE views share one set's residuals
        out = {}
        for v, method in methods.items():
            t0 = time.perf_counter()
            out[v] = method.embed([im.astype(np.float32) / 255 for im in ims])
            seconds[v] = round(seconds[v] + time.perf_counter() - t0, 1)
        by_set.append(out)
        print(f"set {len(by_set)} of {1 + len(redrawn)}: {seconds}", flush=True)
    raw = {v: by_set[0][v] for v in VIEWS}
    contrasted = {v: contrast(raw[v], [s[v] for s in by_set[1:]]) for v in VIEWS}
    raw["fused (all five)"] = fuse([raw[v] for v in VIEWS], [1.0] * len(VIEWS))
    contrasted["fused (all five)"] = fuse([contrasted[v] for v in VIEWS], [1.0] * len(VIEWS))
    rows = {}
    for v in raw:
        rows[v] = {}
        for kind, e in (("raw", raw[v]), ("contrast", contrasted[v])):
            leak = content_leakage(e, models, contents, seed=args.seed)
            ident = identification(e, models, contents, seed=args.seed)
            rows[v][kind] = {"leakage": leak["accuracy"], "identification_logreg": ident["logreg"],
                             "identification_prototype": ident["prototype"]}
            print(f"{v:18s} {kind:9s} leak {leak['accuracy']['mean']:.3f} id logreg {ident['logreg']['mean']:.3f} "
                  f"proto {ident['prototype']['mean']:.3f}", flush=True)
    result = {"benchmark": "contrast_pool", "machine": machine(), "settings": vars(args) | {
        "workdir": "out/bench-contrast-pool"}, "models": ids, "references": refs.ids,
        "references_digest": refs.digest,
        "contents": {"photos": sources.count("photo"), "faces": sources.count("face")},
        "leakage_chance": 1.0 / len(x), "identification_chance": 1.0 / len(ids), "view_seconds": seconds,
        "rows": rows, "seconds": round(time.perf_counter() - t_start, 1)}
    write_result("contrast_pool", result)
    update_readme_section("contrast_pool", readme(result))


def readme(r: dict) -> str:
    s = r["settings"]
    lines = [f"## Counterfactual contrast on unseen synthetic generators (`python benchmarks/bench_contrast_pool.py "
             f"--seed {s['seed']}`)", "",
             f"`results/contrast_pool.json`. {len(r['models'])} synthetic generators (architectures drawn by seed, "
             f"none of the references'; {s['steps']} steps) each redraw {r['contents']['photos']} held-out photo crops "
             f"and {r['contents']['faces']} held-out faces (32²); contrast = embedding − mean embedding of the image "
             f"redrawn by the {len(r['references'])} shipped references. Leakage: content id from the other models' "
             f"images (chance {r['leakage_chance']:.3f}); identification: grouped by content (chance "
             f"{r['identification_chance']:.3f}). 95% intervals over contents; seed {s['seed']}; "
             f"{r['seconds'] / 60:.0f} min.", "",
             "| view | fingerprint | leakage [95% CI] | identification, logistic [95% CI] | "
             "identification, prototype [95% CI] |", "|---|---|---|---|---|"]
    for v, kinds in r["rows"].items():
        for kind, row in kinds.items():
            cells = [fmt_ci(row[k]["mean"], row[k].get("ci95")) for k in
                     ("leakage", "identification_logreg", "identification_prototype")]
            lines.append(f"| {v} | {kind} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
