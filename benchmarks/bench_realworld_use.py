"""Using the shipped extractor well on ../shared/realworld (issue 15, items 4–6 and the query-dataset protocol).

One row per lever, each chosen on a random half of the classes (the split of bench_extractor_realworld.py) and
also reported on the other half: the block-capped residual (``tile_grid``/``block``), mirror test-time
augmentation (``flips``) and its spectrum-level form (``symmetries``), gallery adaptations fit on the support
images only (``wccn``, ``lda``); the robustness table (every image degraded, and clean support with degraded
queries as ``modelprint evaluate --query-dataset`` does); open-set rejection rules (AUROC/OSCR, unknown classes
held out, 20 draws); identify throughput at 512² vs the reference-style pipeline in the same run, and peak RSS
identifying one 512² and one 4096² image.

Embeddings come from ``realworld_cache.py`` (run it first; resumable). A cell whose embeddings are not cached is
reported as not measured. Classes with ≥ 8 images, support 5, 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from realworld_cache import CACHE, VARIANTS, dataset, load

from bench_extractor_realworld import class_split, dncnn17, reference_embed, resnet50
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


def complete(labels: list[str], *arrays: np.ndarray | None) -> set[str]:
    """Classes whose rows are embedded (finite) in every array given."""
    bad = {lab for a in arrays if a is not None
           for lab, ok in zip(labels, np.isfinite(a).all(1), strict=True) if not ok}
    return set(labels) - bad


def run(x: np.ndarray, labels: list[str], keep: set[str] | None, seed: int, support: int, *,
        q: np.ndarray | None = None, adapt: str = "none", n_boot: int = 1000, also: tuple = ()) -> dict:
    """Protocols on the classes in ``keep`` (all if ``None``) that are embedded in ``x``, ``q`` and ``also``."""
    usable = complete(labels, x, q, *also) & (set(labels) if keep is None else keep)
    idx = [i for i, lab in enumerate(labels) if lab in usable]
    if len(usable) < 3:
        return {"accuracy": float("nan"), "accuracy_ci": None, "auc": float("nan"), "auc_ci": None, "n_classes": 0}
    r = evaluate_embeddings(x[idx], [labels[i] for i in idx], support=support, seed=seed, n_boot=n_boot, pairs=2000,
                            query_embeddings=None if q is None else q[idx], adaptation=adaptation(adapt)).to_dict()
    i, v = r["identification"], r["verification"]
    return {"accuracy": i["accuracy"], "accuracy_ci": i.get("accuracy_ci"), "auc": v["auc"], "auc_ci": v.get("auc_ci"),
            "n_classes": len(usable), "per_class_accuracy": i["per_class_accuracy"]}


def open_set(x: np.ndarray, labels: list[str], keep: set[str] | None, seed: int, support: int, adapt: str) -> dict:
    """Mean ± sd over ``OPEN_DRAWS`` draws (support and unknown classes) of each rule's AUROC and OSCR."""
    usable = complete(labels, x) & (set(labels) if keep is None else keep)
    idx = [i for i, lab in enumerate(labels) if lab in usable]
    rows: dict[str, list] = {}
    for s in range(seed, seed + OPEN_DRAWS):
        res = evaluate_embeddings(x[idx], [labels[i] for i in idx], support=support, seed=s, n_boot=0, pairs=0,
                                  adaptation=adaptation(adapt)).open_set
        for rule, m in res.rules.items():
            rows.setdefault(rule, []).append((m["open_set_auroc"], m["oscr"]))
    return {rule: {"auroc": float(np.mean([a for a, _ in v])), "auroc_sd": float(np.std([a for a, _ in v])),
                   "oscr": float(np.mean([o for _, o in v])), "n_classes": len(usable)} for rule, v in rows.items()}


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


def per_cpu_second(fn, images: list[np.ndarray]) -> dict:  # noqa: ANN001
    """Images per CPU second of this process (one thread: what the work costs, whatever else the machine runs)
    and per wall second, after one warm-up call."""
    fn(images[0])
    c0, w0 = time.process_time(), time.perf_counter()
    for im in images:
        fn(im)
    return {"images_per_cpu_s": len(images) / (time.process_time() - c0),
            "images_per_wall_s": len(images) / (time.perf_counter() - w0)}


def speed_and_memory(args: argparse.Namespace) -> tuple[dict, dict]:
    """Throughput at 512² of each variant and of the reference-style pipeline (same process, one thread), and
    peak RSS identifying one image."""
    import torch

    from modelprint.methods import load_method

    rng = np.random.default_rng(args.seed)
    images = [rng.random((512, 512, 3), dtype=np.float32) for _ in range(6)]

    def measure() -> dict:
        denoiser = dncnn17().eval().to(memory_format=torch.channels_last)
        encoder = resnet50().eval().to(memory_format=torch.channels_last)
        out = {"reference": per_cpu_second(lambda im: reference_embed(im, denoiser, encoder), images[:3])}
        for v in ("base", "g2"):
            m = load_method("learned", **VARIANTS[v])
            out[v] = per_cpu_second(lambda im, m=m: m.embed([im]), images)
            out[v]["speedup_cpu"] = out[v]["images_per_cpu_s"] / out["reference"]["images_per_cpu_s"]
        out["threads"] = torch.get_num_threads()
        return out

    speeds = stage("speed", measure, args.refresh)
    rss = {v: stage(f"rss-{v}", lambda v=v: peak_rss(VARIANTS[v], args.seed), args.refresh) for v in ("base", "g2")}
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
    emb = {(v, d): load(v, d, len(ds)) for v in VARIANTS for d in ["clean", *ROBUST]}
    emb = {k: e for k, e in emb.items() if e is not None}
    out: dict = {"n_classes": len(ds.classes), "n_images": len(ds), "support": args.support, "seed": args.seed,
                 "variants": VARIANTS, "selection": {"select_on_classes": sorted(select_on),
                                                     "report_on_classes": sorted(report_on)},
                 "measured": {f"{v}:{d}": len(complete(labels, e)) for (v, d), e in emb.items()},
                 "levers": {}, "robustness": {}, "open_set": {}}
    base = emb.get(("base", "clean"))
    # 1. inference levers on clean images, compared with the base on the classes both have embedded
    for v in VARIANTS:
        if (v, "clean") in emb:
            x = emb[v, "clean"]
            out["levers"][f"learned {v}"] = {"all": run(x, labels, None, args.seed, args.support),
                                             **{h: run(x, labels, k, args.seed, args.support, n_boot=0, also=(base,))
                                                for h, k in halves.items()}}
    ref = out["levers"].get("learned base", {}).get("select_half", {}).get("accuracy")
    eligible = [n for n, r in out["levers"].items() if ref is not None and r["select_half"]["accuracy"] >= ref - 0.01]
    # 2. adaptations: clean, and clean support with JPEG q75 queries
    for v in ("base", "g2"):
        if (v, "clean") not in emb:
            continue
        x, q = emb[v, "clean"], emb.get((v, "jpeg75"))
        for a in ADAPT:
            row = {"all": run(x, labels, None, args.seed, args.support, adapt=a),
                   **{h: run(x, labels, k, args.seed, args.support, adapt=a, n_boot=0) for h, k in halves.items()}}
            if q is not None:
                row["jpeg75 queries, select_half"] = run(x, labels, select_on, args.seed, args.support, q=q, adapt=a,
                                                         n_boot=0)
            out["levers"][f"{v} + adaptation {a}"] = row
    chosen = {}
    for v in ("base", "g2"):
        rows = {a: out["levers"][f"{v} + adaptation {a}"] for a in ADAPT if f"{v} + adaptation {a}" in out["levers"]}
        if not rows:
            continue
        best = max(rows, key=lambda a: rows[a]["select_half"]["accuracy"])
        jq = "jpeg75 queries, select_half"
        no_worse = jq not in rows[best] or rows[best][jq]["accuracy"] >= rows["none"][jq]["accuracy"]
        chosen[v] = best if rows[best]["select_half"]["accuracy"] > rows["none"]["select_half"]["accuracy"] \
            and no_worse else "none"
    out["chosen"] = {"adaptation": chosen, "variants_not_worse_on_select_half": eligible}
    # 3. robustness: every image degraded, and clean support with degraded queries
    for v in VARIANTS:
        for d in ROBUST:
            if (v, "clean") in emb and (v, d) in emb:
                for a in sorted({"none", chosen.get(v, "none")}):
                    out["robustness"][f"{v} | {d} | {a}"] = {
                        "both degraded": run(emb[v, d], labels, None, args.seed, args.support, adapt=a),
                        "clean support, degraded queries": run(emb[v, "clean"], labels, None, args.seed, args.support,
                                                               q=emb[v, d], adapt=a)}
    # 4. open set: rules chosen on the selection half, reported on the other
    for v in ("base", "g2", "g2d4"):
        if (v, "clean") in emb:
            x = emb[v, "clean"]
            for a in sorted({"none", chosen.get(v, "none")}):
                sel, rep, full = (open_set(x, labels, k, args.seed, args.support, a)
                                  for k in (select_on, report_on, None))
                rule = max(sel, key=lambda r: sel[r]["auroc"])
                out["open_set"][f"{v} + adaptation {a}"] = {"select_half": sel, "report_half": rep, "all": full,
                                                            "chosen_rule": rule}
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
          f"other half too. Embeddings cached by `benchmarks/realworld_cache.py` (selection-half classes first, "
          f"resumable); where a pass is unfinished, a row uses the classes embedded (its `classes` column). Classes "
          f"embedded per pass: {', '.join(f'{k} {n}' for k, n in out['measured'].items())}. "
          f"Result: `{path.relative_to(path.parents[1])}`.\n",
          "| lever (clean images) | classes | identification [95% CI] | AUC | select half (classes) "
          "| report half (classes) | JPEG q75 queries, clean support, select half |",
          "|---|---|---|---|---|---|---|"]

    def half(r: dict | None) -> str:
        return "—" if r is None or not r.get("n_classes") else f"{r['accuracy']:.3f} ({r['n_classes']})"

    for name, r in out["levers"].items():
        md.append(f"| {name} | {r['all']['n_classes']} | {acc(r['all'])} | {r['all']['auc']:.3f} | "
                  f"{half(r['select_half'])} | {half(r['report_half'])} | "
                  f"{half(r.get('jpeg75 queries, select_half'))} |")
    eligible = ", ".join(out["chosen"]["variants_not_worse_on_select_half"]) or "none"
    md.append(f"\nAdaptation kept (best on the select half, only if it beats none there and does not lose on JPEG "
              f"q75 queries): {out['chosen']['adaptation']}; inference variants not worse than the base on the select "
              f"half (within 0.01, same classes): {eligible}.\n")
    if out["robustness"]:
        md += ["| variant | images | adaptation | classes | both degraded: identification | AUC "
               "| clean support, degraded queries: identification | AUC |",
               "|---|---|---|---|---|---|---|---|"]
        for key, r in out["robustness"].items():
            v, d, a = key.split(" | ")
            b, q = r["both degraded"], r["clean support, degraded queries"]
            md.append(f"| {v} | {d} | {a} | {q['n_classes']} | {acc(b)} | {b['auc']:.3f} | {acc(q)} | {q['auc']:.3f} |")
    cols = [(k, r) for k in ("g2 | jpeg75 | none", "g2 | resize0.5 | none") if (r := out["robustness"].get(k))]
    clean = out["levers"].get("learned g2", {}).get("all", {}).get("per_class_accuracy")
    if clean and cols:
        heads = " | ".join(f"{k.split(' | ')[1]}: {side}" for k, _ in cols for side in ("both", "clean support"))
        md += [f"\nPer-class identification, learned g2 (clean | {heads}):\n",
               "| class | clean | " + " | ".join("" for _ in range(2 * len(cols) - 1)) + " |",
               "|---|---|" + "---|" * (2 * len(cols))]
        md[-2] = f"| class | clean | {heads} |"
        for c, v in clean.items():
            cells = [r[side]["per_class_accuracy"].get(c) for _, r in cols
                     for side in ("both degraded", "clean support, degraded queries")]
            md.append(f"| {c} | {v:.2f} | " + " | ".join("—" if x is None else f"{x:.2f}" for x in cells) + " |")
    for a, r in out.get("open_set", {}).items():
        n = r["all"]["max_cosine"]["n_classes"]
        md += [f"\nOpen set ({a}, {n} classes; {OPEN_DRAWS} draws of support and unknown classes, 25% of the classes "
               f"unknown; mean ± sd): rule chosen on the select half: **{r['chosen_rule']}**.\n",
               "| rule | AUROC select half | AUROC report half | AUROC all classes | OSCR all classes |",
               "|---|---|---|---|---|"]
        for rule in r["all"]:
            cells = [f"{r[h][rule]['auroc']:.3f} ± {r[h][rule]['auroc_sd']:.3f}"
                     for h in ("select_half", "report_half", "all")]
            md.append(f"| {rule} | {' | '.join(cells)} | {r['all'][rule]['oscr']:.3f} |")
    sp = out.get("speed")
    if sp:
        ref = sp["reference"]["images_per_cpu_s"]
        md.append(f"\nSpeed at 512², one thread, in images per CPU second (the machine is shared, so wall time "
                  f"measures the other jobs too): reference-style pipeline {ref:.2f}.")
        for v in ("base", "g2"):
            rss = out["peak_rss"][v]
            md.append(f"learned {v}: {sp[v]['images_per_cpu_s']:.2f} (**{sp[v]['speedup_cpu']:.1f}×** the "
                      f"reference); peak RSS of a process identifying one 512² image "
                      f"{rss['512'].get('peak_rss_mb', float('nan')):.0f} MB, one 4096² image "
                      f"{rss['4096'].get('peak_rss_mb', float('nan')):.0f} MB {rss['4096'].get('failed', '')}.")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
