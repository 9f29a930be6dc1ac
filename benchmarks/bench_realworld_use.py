"""Using the shipped extractor well on ../shared/realworld (issue 15, items 4–6 and the query-dataset protocol).

One row per lever, each chosen on a random half of the classes (the split of bench_extractor_realworld.py) and
also reported on the other half: the block-capped residual (``tile_grid``/``block``), mirror test-time
augmentation (``flips``), gallery adaptations fit on the support images only (``wccn``, ``lda``); the robustness
table (every image degraded, and clean support with degraded queries as ``modelprint evaluate --query-dataset``
does); open-set rejection rules (AUROC/OSCR, unknown classes held out, 20 draws); identify throughput at 512² vs
the reference-style pipeline in the same run, and peak RSS identifying one 512² and one 4096² image.

Embeddings come from ``realworld_cache.py`` (run it first; resumable). A cell whose embeddings are not cached is
reported as not measured. Classes with ≥ 8 images, support 5, 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from realworld_cache import CACHE, VARIANTS, dataset, load

from bench_extractor_realworld import class_split, speed
from common import fmt_ci, machine, update_readme_section, write_result
from modelprint.evaluation import evaluate_embeddings
from modelprint.gallery.adaptation import ADAPTATIONS

ADAPT = {"none": None, "wccn s0.25": ("wccn", 0.25), "wccn s0.5": ("wccn", 0.5), "wccn s0.75": ("wccn", 0.75),
         "lda s0.5": ("lda", 0.5), "lda s0.9": ("lda", 0.9)}
ROBUST = ["jpeg95", "jpeg75", "jpeg50", "jpeg30", "resize0.5", "resize0.75", "resize1.5", "resize0.5+jpeg75"]
OPEN_DRAWS = 20


def adaptation(name: str):  # noqa: ANN201
    spec = ADAPT[name]
    return None if spec is None else ADAPTATIONS.create(spec[0], shrinkage=spec[1])


def run(x: np.ndarray, labels: list[str], keep: set[str] | None, seed: int, support: int, *,
        q: np.ndarray | None = None, adapt: str = "none", n_boot: int = 1000) -> dict:
    idx = [i for i, lab in enumerate(labels) if keep is None or lab in keep]
    r = evaluate_embeddings(x[idx], [labels[i] for i in idx], support=support, seed=seed, n_boot=n_boot, pairs=2000,
                            query_embeddings=None if q is None else q[idx], adaptation=adaptation(adapt)).to_dict()
    i, v = r["identification"], r["verification"]
    return {"accuracy": i["accuracy"], "accuracy_ci": i.get("accuracy_ci"), "auc": v["auc"], "auc_ci": v.get("auc_ci"),
            "per_class_accuracy": i["per_class_accuracy"]}


def open_set(x: np.ndarray, labels: list[str], keep: set[str] | None, seed: int, support: int, adapt: str) -> dict:
    """Mean ± sd over ``OPEN_DRAWS`` draws (support and unknown classes) of each rule's AUROC and OSCR."""
    idx = [i for i, lab in enumerate(labels) if keep is None or lab in keep]
    rows: dict[str, list] = {}
    for s in range(seed, seed + OPEN_DRAWS):
        res = evaluate_embeddings(x[idx], [labels[i] for i in idx], support=support, seed=s, n_boot=0, pairs=0,
                                  adaptation=adaptation(adapt)).open_set
        for rule, m in res.rules.items():
            rows.setdefault(rule, []).append((m["open_set_auroc"], m["oscr"]))
    return {rule: {"auroc": float(np.mean([a for a, _ in v])), "auroc_sd": float(np.std([a for a, _ in v])),
                   "oscr": float(np.mean([o for _, o in v]))} for rule, v in rows.items()}


PEAK = """import resource, sys, json
from modelprint.api import identify
from modelprint.gallery import Gallery
from modelprint.methods import load_method
m = load_method("learned", **json.loads(sys.argv[3]))
with Gallery(sys.argv[1], create=False) as g:
    r = identify(g, [sys.argv[2]], method=m)
assert not r.errors, r.errors
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
ENROLL = """import sys, json
from modelprint.api import enroll
from modelprint.methods import load_method
m = load_method("learned", **json.loads(sys.argv[2]))
for name in ("a", "b"):
    enroll(sys.argv[1], name, [p for p in sys.argv[3:] if f"/{name}" in p], method=m)
"""


def peak_rss(params: dict, seed: int) -> dict:
    """Peak RSS (MB) of a fresh process identifying one 512² and one 4096² image against a 2-model gallery."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        refs = []
        for name in ("a", "b"):
            for i in range(2):
                p = t / f"{name}{i}.png"
                Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(p)
                refs.append(str(p))
        subprocess.run([sys.executable, "-c", ENROLL, str(t / "g.sqlite"), json.dumps(params), *refs], check=True)
        for side in (512, 4096):
            p = t / f"q{side}.png"
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p)
            res = subprocess.run([sys.executable, "-c", PEAK, str(t / "g.sqlite"), str(p), json.dumps(params)],
                                 capture_output=True, text=True)
            out[f"{side}"] = (json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0
                              else {"failed": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "?"})
    return out


def stage(name: str, fn, refresh: bool):  # noqa: ANN001, ANN201
    """Cache a slow measurement's result as JSON under out/ (so a rerun only redoes the analysis)."""
    path = CACHE / f"stage-{name}.json"
    if path.exists() and not refresh:
        return json.loads(path.read_text())
    value = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return value


def speed_and_memory(args: argparse.Namespace) -> tuple[dict, dict]:
    from modelprint.methods import load_method

    speeds, rss = {}, {}
    for v in ("base", "g2"):
        method = load_method("learned", **VARIANTS[v])
        speeds[v] = stage(f"speed-{v}", lambda m=method: speed(m, args.seed), args.refresh)
        rss[v] = stage(f"rss-{v}", lambda v=v: peak_rss(VARIANTS[v], args.seed), args.refresh)
    return speeds, rss


def main() -> None:  # noqa: C901
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true", help="leave out throughput and peak RSS")
    parser.add_argument("--refresh", action="store_true", help="re-measure throughput and peak RSS")
    parser.add_argument("--only-speed", action="store_true", help="measure (and cache) throughput and peak RSS only")
    args = parser.parse_args()
    if args.only_speed:
        print(json.dumps(speed_and_memory(args)))
        return
    ds = dataset()
    labels = ds.labels
    select_on, report_on = class_split(labels, args.seed)
    halves = {"select_half": select_on, "report_half": report_on}
    emb = {(v, d): load(v, d) for v in VARIANTS for d in ["clean", *ROBUST]}
    emb = {k: e for k, e in emb.items() if e is not None}
    out: dict = {"n_classes": len(ds.classes), "n_images": len(ds), "support": args.support, "seed": args.seed,
                 "variants": VARIANTS, "selection": {"select_on_classes": sorted(select_on),
                                                     "report_on_classes": sorted(report_on)},
                 "measured": sorted(f"{v}:{d}" for v, d in emb), "levers": {}, "robustness": {}}
    # 1. inference levers on clean images (chosen on the selection half: must not lose clean accuracy)
    for v in VARIANTS:
        if (v, "clean") in emb:
            x = emb[v, "clean"]
            out["levers"][f"learned {v}"] = {"all": run(x, labels, None, args.seed, args.support),
                                             **{h: run(x, labels, k, args.seed, args.support, n_boot=0)["accuracy"]
                                                for h, k in halves.items()}}
    base = out["levers"].get("learned base")
    eligible = [n for n, r in out["levers"].items()
                if base and r["select_half"] >= base["select_half"] - 0.01]
    # 2. adaptations on the base embeddings: clean, and clean support / JPEG q75 queries
    for a in ADAPT:
        if ("base", "clean") in emb:
            x = emb["base", "clean"]
            row = {"all": run(x, labels, None, args.seed, args.support, adapt=a),
                   **{h: run(x, labels, k, args.seed, args.support, adapt=a, n_boot=0)["accuracy"]
                      for h, k in halves.items()}}
            if ("base", "jpeg75") in emb:
                row["jpeg75 queries, select_half"] = run(x, labels, select_on, args.seed, args.support,
                                                         q=emb["base", "jpeg75"], adapt=a, n_boot=0)["accuracy"]
            out["levers"][f"adaptation {a}"] = row
    adapt_rows = {a: out["levers"][f"adaptation {a}"] for a in ADAPT if f"adaptation {a}" in out["levers"]}
    chosen_adapt = "none"
    if adapt_rows:
        best = max(adapt_rows, key=lambda a: adapt_rows[a]["select_half"])
        jq = "jpeg75 queries, select_half"
        if adapt_rows[best]["select_half"] > adapt_rows["none"]["select_half"] and \
                adapt_rows[best].get(jq, 1) >= adapt_rows["none"].get(jq, 0):
            chosen_adapt = best
    out["chosen"] = {"adaptation": chosen_adapt, "variants_not_worse_on_select_half": eligible}
    # 3. robustness: every image degraded, and clean support with degraded queries
    for v in VARIANTS:
        if (v, "clean") not in emb:
            continue
        for d in ROBUST:
            if (v, d) in emb:
                for a in sorted({"none", chosen_adapt}):
                    out["robustness"][f"{v} | {d} | {a}"] = {
                        "both degraded": run(emb[v, d], labels, None, args.seed, args.support, adapt=a),
                        "clean support, degraded queries": run(emb[v, "clean"], labels, None, args.seed, args.support,
                                                               q=emb[v, d], adapt=a)}
    # 4. open set: rules chosen on the selection half, reported on the other
    out["open_set"] = {}
    if ("base", "clean") in emb:
        for a in sorted({"none", chosen_adapt}):
            x = emb["base", "clean"]
            sel = open_set(x, labels, select_on, args.seed, args.support, a)
            rep = open_set(x, labels, report_on, args.seed, args.support, a)
            full = open_set(x, labels, None, args.seed, args.support, a)
            rule = max(sel, key=lambda r: sel[r]["auroc"])
            out["open_set"][a] = {"select_half": sel, "report_half": rep, "all": full, "chosen_rule": rule}
    # 5. speed and memory
    if not args.skip_speed:
        out["speed"], out["peak_rss"] = speed_and_memory(args)
    out["machine"] = machine()
    path = write_result("realworld_use", out)
    print(json.dumps({k: out[k] for k in ("measured", "chosen")}, indent=1))
    update_readme_section("realworld_use", markdown(out, path, args))


def markdown(out: dict, path: Path, args: argparse.Namespace) -> str:
    def acc(r: dict) -> str:
        return fmt_ci(r["accuracy"], r["accuracy_ci"])

    md = [f"## Using the shipped extractor well (`python benchmarks/bench_realworld_use.py --seed {args.seed}`)\n",
          f"{out['n_classes']} classes of `shared/realworld`, {out['n_images']} images, support {args.support}; levers "
          f"chosen on half of the classes ({', '.join(out['selection']['select_on_classes'])}) and reported on the "
          f"other half too. Embeddings cached by `benchmarks/realworld_cache.py`; cells not listed were not measured "
          f"(measured: {', '.join(out['measured'])}). Result: `{path.relative_to(path.parents[1])}`.\n",
          "| lever (clean images) | identification [95% CI] | AUC | select half | report half "
          "| JPEG q75 queries, clean support, select half |",
          "|---|---|---|---|---|---|"]
    for name, r in out["levers"].items():
        md.append(f"| {name} | {acc(r['all'])} | {r['all']['auc']:.3f} | {r['select_half']:.3f} | "
                  f"{r['report_half']:.3f} | {r.get('jpeg75 queries, select_half', float('nan')):.3f} |")
    eligible = ", ".join(out["chosen"]["variants_not_worse_on_select_half"]) or "none"
    md.append(f"\nAdaptation kept: **{out['chosen']['adaptation']}**; inference variants not worse than the base on "
              f"the select half (within 0.01): {eligible}.\n")
    if out["robustness"]:
        md += ["| variant | images | adaptation | both degraded: identification | AUC "
               "| clean support, degraded queries: identification | AUC |",
               "|---|---|---|---|---|---|---|"]
        for key, r in out["robustness"].items():
            v, d, a = key.split(" | ")
            b, q = r["both degraded"], r["clean support, degraded queries"]
            md.append(f"| {v} | {d} | {a} | {acc(b)} | {b['auc']:.3f} | {acc(q)} | {q['auc']:.3f} |")
    for a, r in out.get("open_set", {}).items():
        md += [f"\nOpen set (adaptation {a}; {OPEN_DRAWS} draws of support and unknown classes, 25% of the classes "
               f"unknown; mean ± sd): rule chosen on the select half: **{r['chosen_rule']}**.\n",
               "| rule | AUROC select half | AUROC report half | AUROC all classes | OSCR all classes |",
               "|---|---|---|---|---|"]
        for rule in r["all"]:
            cells = [f"{r[h][rule]['auroc']:.3f} ± {r[h][rule]['auroc_sd']:.3f}"
                     for h in ("select_half", "report_half", "all")]
            md.append(f"| {rule} | {' | '.join(cells)} | {r['all'][rule]['oscr']:.3f} |")
    for v, s in out.get("speed", {}).items():
        rss = out["peak_rss"][v]
        md.append(f"\nSpeed at 512², learned {v}: {s['ours_images_per_s']:.2f} images/s vs "
                  f"{s['reference_images_per_s']:.2f} for the reference-style pipeline in the same run "
                  f"(**{s['speedup']:.1f}×**), "
                  f"{out['machine']['threads']} thread(s). Peak RSS identifying one image: 512²: "
                  f"{rss['512'].get('peak_rss_mb', float('nan')):.0f} MB; 4096²: "
                  f"{rss['4096'].get('peak_rss_mb', float('nan')):.0f} MB {rss['4096'].get('failed', '')}.")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
