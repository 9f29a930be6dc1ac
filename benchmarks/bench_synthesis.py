"""Synthetic-generator synthesis on CPU: speed of the fast recipe vs the naive one, the pool, and its fidelity.

Stages (each caches its result in ``--work``, so a run can be split across invocations of < 25 min):

1. ``timing``: for four architectures (two 1-block, two 2-block), seconds per model of
   * the naive recipe: one model at a time, 64² crops, batch 16, 600 steps, constant lr (the previous code);
   * the fast recipe: 32² crops, batch 8, 200 steps, cosine lr; alone (G=1), grouped with G=2 (the 576-model pool:
     2 seeds per architecture) and G=20 (the paper's 20 seeds), one torch thread, timed in the same run;
   * the fast recipe with 600 steps (separates the cost of few steps from that of small crops);
   and float32 differences between a model trained grouped and alone.
2. ``pool``: ``synthesize_pool`` of the 288 paper architectures × 2 seeds with 2 worker processes, resumable
   (``--budget-minutes`` caps each invocation; rerun to continue; the wall time is summed over invocations).
3. ``shortcuts``: reconstruction error (eval-mode MSE on [-1, 1], 128 held-out 64² crops) and residual-spectrum
   distance (RMS of the log10 difference of the mean 1-D highpass-residual power spectra over 50 held-out 64²
   crops) between the naive and fast versions of the same model (same init), next to the distance between two
   seeds of one architecture and between different architectures.
4. ``fidelity``: FFD of the pool against ``shared/realworld`` generator classes and the Table II ablation.
5. Final losses per activation × order from the pool manifest (the reference's post-order limitation).

Run: ``.venv/bin/python benchmarks/bench_synthesis.py --seed 0`` (repeat until it reports completion).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from common import machine, shared_dir, update_readme_section, write_result

TIMING_ARCHS = [
    "b1-c1-pre-up_nearest-act_relu-norm_batch",
    "b1-c2-post-up_transposed-act_tanh-norm_none",
    "b2-c1-pre-up_bilinear-act_tanh-norm_batch",
    "b2-c2-post-up_nearest-act_none-norm_instance",
]
G20_ARCHS = [TIMING_ARCHS[0], TIMING_ARCHS[2]]
NAIVE = {"crop": 64, "batch_size": 16, "max_steps": 600, "schedule": "constant"}
FAST = {"crop": 32, "batch_size": 8, "max_steps": 200, "schedule": "cosine"}
FAST_LONG = {**FAST, "max_steps": 600}
POOL_ARCHS: str | list[str] = "paper"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _stage(work: Path, name: str, fn, *args, **kwargs) -> dict:
    path = work / f"stage-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    t0, load0 = time.perf_counter(), _load()
    result = fn(*args, **kwargs)
    if result is None:
        return {}
    result["_stage"] = {"seconds": round(time.perf_counter() - t0, 1), "loadavg_start": load0, "loadavg_end": _load()}
    from modelprint.atomic import write_text

    write_text(path, json.dumps(result, indent=1) + "\n")
    return result


def _data(seed: int):
    from modelprint.io.pool import RealPool

    pool = RealPool()
    return {
        32: pool.crops(4096, size=32, seed=seed, split="train"),
        64: pool.crops(4096, size=64, seed=seed, split="train"),
        "val32": pool.crops(64, size=32, seed=seed + 1, split="holdout"),
        "val64": pool.crops(64, size=64, seed=seed + 1, split="holdout"),
        "eval64": pool.crops(128, size=64, seed=seed + 2, split="holdout"),
    }


def _train(arch_id: str, seeds: list[int], data: dict, recipe: dict, check_every: int):
    from modelprint.synthesis.space import Architecture
    from modelprint.synthesis.train import train_group

    crop = recipe["crop"]
    t0 = time.perf_counter()
    states, stats = train_group(Architecture.parse(arch_id), seeds, data[crop], val_crops=data[f"val{crop}"],
                                max_steps=recipe["max_steps"], batch_size=recipe["batch_size"],
                                schedule=recipe["schedule"], check_every=check_every)
    return states, stats, time.perf_counter() - t0


def stage_timing(work: Path, seed: int) -> dict:
    import torch
    from safetensors.torch import save_file

    from modelprint.synthesis.grouped import load_single
    from modelprint.synthesis.space import Architecture
    from modelprint.synthesis.train import apply_generator

    data = _data(seed)
    states_dir = work / "states"
    states_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for aid in TIMING_ARCHS:
        row: dict = {"arch": aid, "blocks": Architecture.parse(aid).blocks}
        for name, recipe, seeds, check in [("naive", NAIVE, [0], 100), ("fast_alone", FAST, [0], 25),
                                           ("fast_g2", FAST, [0, 1], 25), ("fast_long", FAST_LONG, [0], 25)]:
            states, stats, sec = _train(aid, seeds, data, recipe, check)
            row[name] = {"seconds_per_model": sec / len(seeds), "final_loss": [s.final_loss for s in stats],
                         "steps": [s.steps for s in stats], "group_size": len(seeds)}
            for s, st in zip(seeds, states, strict=True):
                save_file({k: v.contiguous() for k, v in st.items()}, str(states_dir / f"{name}-{aid}-s{s}.safetensors"))
            print(f"{aid} {name}: {sec / len(seeds):.2f} s/model, residual {stats[0].final_loss:.4f}", flush=True)
            if name == "fast_alone":
                alone = states[0]
            if name == "fast_g2":  # float32: the grouped slice vs the same model trained alone
                arch = Architecture.parse(aid)
                a = apply_generator(load_single(arch, alone), data["eval64"]).astype(int)
                b = apply_generator(load_single(arch, states[0]), data["eval64"]).astype(int)
                row["float32_grouped_vs_alone"] = {
                    "max_abs_weight_diff": max(float((alone[k] - states[0][k]).abs().max()) for k in alone
                                               if alone[k].dtype.is_floating_point),
                    "rel_weight_diff": float(torch.cat([(alone[k] - states[0][k]).flatten() for k in alone
                                                        if alone[k].dtype.is_floating_point]).norm()
                                             / torch.cat([alone[k].flatten() for k in alone
                                                          if alone[k].dtype.is_floating_point]).norm()),
                    "output_pixels_differing": float((a != b).mean()),
                    "output_mean_abs_diff_grey_levels": float(np.abs(a - b).mean()),
                }
        if aid in G20_ARCHS:
            _, stats, sec = _train(aid, list(range(20)), data, FAST, 25)
            row["fast_g20"] = {"seconds_per_model": sec / 20, "final_loss_mean": float(np.mean([s.final_loss for s in stats])),
                               "group_size": 20}
            print(f"{aid} fast_g20: {sec / 20:.2f} s/model", flush=True)
        rows.append(row)
    return {"archs": rows, "recipes": {"naive": NAIVE, "fast": FAST, "fast_long": FAST_LONG}, "threads": torch.get_num_threads()}


def stage_grouping(seed: int, reps: int = 3) -> dict:
    """Seconds per model for G = 1, 2, 4, 8 seeds grouped (100 fast steps), order alternated, median of reps."""
    from modelprint.synthesis.space import Architecture
    from modelprint.synthesis.train import train_group

    data = _data(seed)
    times: dict = {}
    for rep in range(reps):
        for aid in G20_ARCHS:
            for g in ([1, 2, 4, 8] if rep % 2 == 0 else [8, 4, 2, 1]):
                t0 = time.perf_counter()
                train_group(Architecture.parse(aid), list(range(g)), data[32], max_steps=100, batch_size=FAST["batch_size"],
                            criterion=0.0, check_every=100)
                times.setdefault(aid, {}).setdefault(str(g), []).append((time.perf_counter() - t0) / g)
    return {"steps": 100, "reps": reps,
            "median_seconds_per_model": {a: {g: float(np.median(v)) for g, v in d.items()} for a, d in times.items()},
            "all": times}


def stage_float_noise(work: Path, seed: int) -> dict:
    """Float32 divergence from a harmless change (2 threads instead of 1), to compare with grouping's."""
    import torch
    from safetensors.torch import load_file

    from modelprint.synthesis.grouped import load_single
    from modelprint.synthesis.space import Architecture
    from modelprint.synthesis.train import apply_generator

    data = _data(seed)
    rows = []
    torch.set_num_threads(2)
    try:
        for aid in TIMING_ARCHS:
            arch = Architecture.parse(aid)
            one = load_file(str(work / "states" / f"fast_alone-{aid}-s0.safetensors"))
            states, _, _ = _train(aid, [0], data, FAST, 25)
            two = states[0]
            keys = [k for k in one if one[k].dtype.is_floating_point]
            a = apply_generator(load_single(arch, one), data["eval64"]).astype(int)
            b = apply_generator(load_single(arch, two), data["eval64"]).astype(int)
            rows.append({"arch": aid,
                         "rel_weight_diff": float(torch.cat([(one[k] - two[k]).flatten() for k in keys]).norm()
                                                  / torch.cat([one[k].flatten() for k in keys]).norm()),
                         "output_pixels_differing": float((a != b).mean())})
    finally:
        torch.set_num_threads(1)
    return {"two_threads_vs_one": rows}


def stage_pool(work: Path, seeds: int, workers: int, budget_s: float) -> dict | None:
    from modelprint.synthesis.pool import synthesize_pool

    runs_path = work / "pool_runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else []
    t0, load0 = time.perf_counter(), _load()
    last = [0.0]

    def progress(done: int, total: int, rec: dict) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"pool {done}/{total} ({time.perf_counter() - t0:.0f} s)", flush=True)

    summary = synthesize_pool(work / "pool", POOL_ARCHS, seeds, workers=workers, progress=progress, time_limit=budget_s)
    runs.append({"seconds": time.perf_counter() - t0, "trained": summary.trained, "skipped": summary.skipped,
                 "loadavg_start": load0, "loadavg_end": _load()})
    from modelprint.atomic import write_text

    write_text(runs_path, json.dumps(runs, indent=1) + "\n")
    if not summary.complete:
        print(f"pool incomplete: {summary.skipped + summary.trained}/{summary.total}; rerun to continue", flush=True)
        return None
    recs = summary.records
    by_blocks = {b: [r for r in recs if r["arch"].startswith(f"b{b}-")] for b in (1, 2)}
    return {
        "models": len(recs), "workers": workers, "seeds": seeds, "invocations": runs,
        "wall_seconds": sum(r["seconds"] for r in runs if r["trained"]),
        "sum_model_seconds": sum(r["seconds"] for r in recs),
        "seconds_per_model": {f"b{b}": float(np.mean([r["seconds"] for r in rs])) for b, rs in by_blocks.items()},
        "reached_criterion": sum(r["reached_criterion"] for r in recs),
        "weights_mb": sum((work / "pool" / r["file"]).stat().st_size for r in recs) / 1e6,
    }


def stage_losses(work: Path) -> dict:
    from modelprint.synthesis.pool import read_manifest
    from modelprint.synthesis.space import Architecture

    recs = list(read_manifest(work / "pool").values())
    table = {}
    for r in recs:
        a = Architecture.parse(r["arch"])
        table.setdefault(f"{a.activation}/{a.order}", []).append(r)
    rows = {k: {"models": len(v), "mean_final_loss": float(np.mean([r["final_loss"] for r in v])),
                "median_final_loss": float(np.median([r["final_loss"] for r in v])),
                "reached": int(sum(r["reached_criterion"] for r in v))} for k, v in sorted(table.items())}
    norm_post = {}
    for r in recs:
        a = Architecture.parse(r["arch"])
        norm_post.setdefault(f"{a.norm}/{a.order}", []).append(r["final_loss"])
    losses_all = [r["final_loss"] for r in recs]
    best = min(recs, key=lambda r: r["final_loss"])
    return {"by_activation_order": rows,
            "by_norm_order": {k: float(np.mean(v)) for k, v in sorted(norm_post.items())},
            "quantiles": [float(x) for x in np.quantile(losses_all, [0.25, 0.5, 0.75])],
            "best": {"arch": best["arch"], "seed": best["seed"], "final_loss": best["final_loss"]}}


def _spectrum(model, images, residual) -> np.ndarray:
    from modelprint.synthesis.fidelity import mean_residual_spectrum
    from modelprint.synthesis.train import apply_generator

    return np.log10(mean_residual_spectrum(apply_generator(model, images), residual))


def stage_shortcuts(work: Path, seed: int) -> dict:
    from safetensors.torch import load_file

    from modelprint.io.pool import RealPool
    from modelprint.residuals import get_residual
    from modelprint.synthesis.grouped import load_single
    from modelprint.synthesis.space import Architecture
    from modelprint.synthesis.train import evaluate_states

    res = get_residual("highpass")
    pool = RealPool()
    images = pool.crops(50, size=64, seed=10_000 + seed, split="holdout")
    eval64 = pool.crops(128, size=64, seed=seed + 2, split="holdout")
    rows, spectra = [], {}
    for aid in TIMING_ARCHS:
        arch = Architecture.parse(aid)
        row = {"arch": aid}
        for name, s in [("naive", 0), ("fast_long", 0), ("fast_alone", 0), ("fast_g2", 1)]:
            st = load_file(str(work / "states" / f"{name}-{aid}-s{s}.safetensors"))
            spectra[(aid, name, s)] = _spectrum(load_single(arch, st), images, res)
            row[f"eval_mse_{name}_s{s}"] = evaluate_states(arch, [st], eval64)[0]
        d = lambda x, y: float(np.sqrt(np.mean((spectra[x] - spectra[y]) ** 2)))  # noqa: E731
        row["dist_naive_vs_fast"] = d((aid, "naive", 0), (aid, "fast_alone", 0))
        row["dist_naive_vs_fast_long"] = d((aid, "naive", 0), (aid, "fast_long", 0))
        row["dist_fast_long_vs_fast"] = d((aid, "fast_long", 0), (aid, "fast_alone", 0))
        row["dist_seed0_vs_seed1_fast"] = d((aid, "fast_alone", 0), (aid, "fast_g2", 1))
        rows.append(row)
    cross = [float(np.sqrt(np.mean((spectra[(a, "fast_alone", 0)] - spectra[(b, "fast_alone", 0)]) ** 2)))
             for a, b in itertools.combinations(TIMING_ARCHS, 2)]
    cross_naive = [float(np.sqrt(np.mean((spectra[(a, "naive", 0)] - spectra[(b, "naive", 0)]) ** 2)))
                   for a, b in itertools.combinations(TIMING_ARCHS, 2)]
    out = {"archs": rows, "dist_between_archs_fast": {"median": float(np.median(cross)), "min": float(np.min(cross))},
           "dist_between_archs_naive": {"median": float(np.median(cross_naive)), "min": float(np.min(cross_naive))},
           "residual": res.tag, "metric": "RMS over 32 radial bins of log10 mean power difference"}
    # Pool-wide reference: distances between random pairs of pool models of different architectures.
    cache = sorted((work / "pool" / "fidelity").glob("spectra-*.npz")) if (work / "pool" / "fidelity").is_dir() else []
    if cache:
        with np.load(cache[0]) as z:
            logp = np.log10(np.maximum(z["power"], 1e-20))
            arch_of = [i.rsplit("-s", 1)[0] for i in z["ids"]]
        rng = np.random.default_rng(seed)
        pairs = [(i, j) for i, j in rng.integers(0, len(logp), (2000, 2)) if arch_of[i] != arch_of[j]]
        same = [(i, j) for i in range(len(logp)) for j in range(i + 1, min(i + 3, len(logp))) if arch_of[i] == arch_of[j]]
        out["pool_pairs"] = {
            "different_arch_median": float(np.median([np.sqrt(np.mean((logp[i] - logp[j]) ** 2)) for i, j in pairs])),
            "same_arch_other_seed_median": float(np.median([np.sqrt(np.mean((logp[i] - logp[j]) ** 2)) for i, j in same])),
        }
    return out


def stage_fidelity(work: Path, seed: int) -> dict:
    from modelprint.synthesis.fidelity import fidelity

    last = [0.0]

    def progress(k: int, n: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"fidelity spectra {k}/{n}", flush=True)

    from modelprint.synthesis.pool import read_manifest

    recs = list(read_manifest(work / "pool").values())
    median = float(np.median([r["final_loss"] for r in recs]))
    extra = {f"residual ≤ median ({median:.3f})": [r["model_id"] for r in recs if r["final_loss"] <= median],
             f"residual > median": [r["model_id"] for r in recs if r["final_loss"] > median],
             "pre order only": [r["model_id"] for r in recs if "-pre-" in r["arch"]]}
    return fidelity(work / "pool", shared_dir() / "realworld", residual="highpass", n_images=50, crop=64,
                    trials=20, seed=seed, progress=progress, extra_subsets=extra)


def _fmt(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def report(results: dict) -> str:
    t, p, sh, fid, losses = (results[k] for k in ("timing", "pool", "shortcuts", "fidelity", "losses"))
    grp, noise = results["grouping"], results["float_noise"]
    m = results["machine"]
    loads = [x for st in results.values() if isinstance(st, dict) and "_stage" in st
             for x in st["_stage"]["loadavg_start"][:1] + st["_stage"]["loadavg_end"][:1]]
    loads += [x for r in p["invocations"] for x in r["loadavg_start"][:1] + r["loadavg_end"][:1]]
    lines = ["## Synthetic generators (`bench_synthesis.py`)", "",
             f"Run {m['date']}, torch {m['torch']}, {m['cpus']} cores shared with other engineers' jobs (1-min load "
             f"averages {min(loads):.1f}–{max(loads):.1f} at stage starts and ends; in the JSON), one torch thread per process. *Residual* = eval-mode "
             "MSE on [-1, 1] over held-out crops; η = 0.005 (definition and reasons in `synthesis/train.py`). "
             "Everything below is measured unless marked *projected*."]
    lines += ["", "### Speed per model (1 thread, same run)", "",
              "| architecture | naive: 64², B16, 600 steps, alone | fast: 32², B8, 200 steps, alone | fast, G=2 | fast, G=20 |"
              " naive / fast |", "|---|---|---|---|---|---|"]
    for r in t["archs"]:
        g20 = r.get("fast_g20", {}).get("seconds_per_model")
        lines.append(f"| `{r['arch']}` | {r['naive']['seconds_per_model']:.1f} s | {r['fast_alone']['seconds_per_model']:.2f} s"
                     f" | {r['fast_g2']['seconds_per_model']:.2f} s | {_fmt(g20, 2) + ' s' if g20 else '—'} | "
                     f"{r['naive']['seconds_per_model'] / r['fast_alone']['seconds_per_model']:.1f}× |")
    med = grp["median_seconds_per_model"]
    ratios = [r["naive"]["seconds_per_model"] / r["fast_alone"]["seconds_per_model"] for r in t["archs"]]
    gains = [100 * (1 - d["4"] / d["1"]) for d in med.values()]
    lines += ["", f"Grouping sweep (100 fast steps, median of {grp['reps']} alternating repeats, s/model): " + "; ".join(
        f"`{a[:2]}…` " + ", ".join(f"G={g} {v:.2f}" for g, v in d.items()) for a, d in med.items())
        + f". Most of the speed-up comes from small crops and few steps ({min(ratios):.0f}–{max(ratios):.0f}×); grouping 4 "
        f"seeds saves another {min(gains):.0f}–{max(gains):.0f}% per model (default `group_size=4`), while 8 or 20 save "
        "less or nothing: the convolutions are compute-bound already. Timings on this shared machine vary by ±30%."]
    naive_by_b = {b: float(np.mean([r["naive"]["seconds_per_model"] for r in t["archs"] if r["blocks"] == b])) for b in (1, 2)}
    naive_576 = 288 * (naive_by_b[1] + naive_by_b[2]) / 2  # 144 archs per depth × 2 seeds, / 2 processes
    eff = p["sum_model_seconds"] / (p["workers"] * p["wall_seconds"])
    lines += ["", f"**Pool: {p['models']} models ({p['models'] // p['seeds']} architectures × {p['seeds']} seeds), "
              f"`workers={p['workers']}`: {p['wall_seconds'] / 60:.1f} min wall**, measured (in "
              f"{sum(1 for r in p['invocations'] if r['trained'])} invocations of the resumable pool, summed). Per model "
              f"{p['seconds_per_model']['b1']:.2f} s (1 block) and {p['seconds_per_model']['b2']:.2f} s (2 blocks) of a "
              f"worker's time; workers busy {100 * eff:.0f}% of the wall time; weights {p['weights_mb']:.0f} MB.",
              f"Naive recipe for the same {p['models']} models in two processes: {naive_576 / 3600:.1f} h (*projected* from "
              f"the per-model timings above: ×{naive_576 / p['wall_seconds']:.0f}).",
              f"5760 models (20 seeds): **{10 * p['wall_seconds'] / 3600:.1f} h** (*projected*: 10 × the measured pool; "
              f"naive {10 * naive_576 / 3600:.0f} h). Paper: 53 s / 113 s per model, 133 h on an RTX 3090."]
    fg = [r["float32_grouped_vs_alone"] for r in t["archs"]]
    nz = noise["two_threads_vs_one"]
    lines += ["", "Grouping is exact in float64 (`tests/test_synthesis.py`: bit-identical slices, also when models stop "
              "early and leave the group). In float32 Adam amplifies rounding differences, so a grouped model drifts "
              f"from its lone twin: relative weight difference after 200 steps {min(x['rel_weight_diff'] for x in fg):.1e}–"
              f"{max(x['rel_weight_diff'] for x in fg):.1e}, output pixels that differ "
              f"{100 * min(x['output_pixels_differing'] for x in fg):.0f}–{100 * max(x['output_pixels_differing'] for x in fg):.0f}%; "
              f"training the same lone model with 2 threads instead of 1 drifts as much "
              f"({min(x['rel_weight_diff'] for x in nz):.1e}–{max(x['rel_weight_diff'] for x in nz):.1e}, "
              f"{100 * min(x['output_pixels_differing'] for x in nz):.0f}–{100 * max(x['output_pixels_differing'] for x in nz):.0f}%)."]
    q = losses["quantiles"]
    lines += ["", f"**Criterion.** {p['reached_criterion']} of {p['models']} pool models reached η within 200 steps "
              f"(residual quartiles {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f}, best {losses['best']['final_loss']:.4f} "
              f"`{losses['best']['arch']}`); all stopped at the step budget. The naive recipe reached "
              f"{min(min(r['naive']['final_loss']) for r in t['archs']):.4f} at best in 600 steps."]
    lines += ["", "### What the shortcuts cost (same init and architecture)", "",
              "| architecture | residual naive | fast, 600 steps | fast | spectrum distance naive↔fast | "
              "naive↔fast-600 | fast-600↔fast | fast seed 0↔1 |", "|---|---|---|---|---|---|---|---|"]
    for r in sh["archs"]:
        lines.append(f"| `{r['arch']}` | {r['eval_mse_naive_s0']:.4f} | {r['eval_mse_fast_long_s0']:.4f} | "
                     f"{r['eval_mse_fast_alone_s0']:.4f} | {r['dist_naive_vs_fast']:.3f} | {r['dist_naive_vs_fast_long']:.3f} | "
                     f"{r['dist_fast_long_vs_fast']:.3f} | {r['dist_seed0_vs_seed1_fast']:.3f} |")
    ref = sh.get("pool_pairs", {})
    lines += ["", "Residual: eval-mode MSE on 128 held-out 64² crops. Spectrum distance: RMS over 32 radial bins of the "
              "log10 difference of the mean highpass-residual power spectra (50 held-out 64² crops)"
              + (f"; for scale, across the pool two seeds of one architecture differ by {ref['same_arch_other_seed_median']:.3f} "
                 f"and two architectures by {ref['different_arch_median']:.3f} (medians)" if ref else "")
              + ". Small crops and few steps each account for part of the shift; the shortcut moves a model's spectrum "
              "more than a new seed does, and less than a new architecture except for the poorly reconstructing "
              "post-order instance-norm model."]
    lines += ["", "### Residual per activation and order (the reference's post order activates the RGB output)", "",
              "| activation / order | models | mean residual | median | reached η |", "|---|---|---|---|---|"]
    for k, v in losses["by_activation_order"].items():
        lines.append(f"| {k} | {v['models']} | {v['mean_final_loss']:.4f} | {v['median_final_loss']:.4f} | {v['reached']} |")
    lines += ["", "Mean residual by norm / order: " + ", ".join(f"{k} {v:.4f}" for k, v in losses["by_norm_order"].items())
              + ". In post order the RGB output is normalised and activated: ReLU/sigmoid cannot output negative values, "
              "and instance norm imposes learnt per-image channel statistics, so those models reconstruct poorly."]
    lines += ["", "### Fidelity: FFD against real generators (paper Table II)", "",
              f"{fid['n_models']} pool models vs {len(fid['real_classes'])} generator classes of `shared/realworld` "
              f"({', '.join(fid['real_classes'])}); residual `{fid['residual']}`; {fid['n_images']} crops of {fid['crop']}² "
              "per model or class (native resolution, never resized); log10 spectra. Control: mean ± sd FFD of 20 random "
              "subsets of the pool of the same size (fewer models alone change an FFD).", "",
              "| pool | models | FFD | random subset, same size |", "|---|---|---|---|"]
    for r in fid["ablation"]:
        ctrl = (f"{r['random_subset_ffd_mean']:.2f} ± {r['random_subset_ffd_sd']:.2f}" if "random_subset_ffd_mean" in r else "—")
        lines.append(f"| {r['name']} | {r['n_models']} | {_fmt(r['ffd'], 2)} | {ctrl} |")
    lines += ["", "Paper (DnCNN residual, 128², its own real-model set): All 3.30, w/o K 3.57, w/o L 3.41, w/o S 3.51, "
              "w/o U 9.81, w/o A 4.46, w/o N 3.02, w/o seed 3.39. Here the residual is the Gaussian highpass (the learned "
              "DnCNN will become the default), crops are 64² and 5 of the 16 real classes are JPEG thumbnails, so only the "
              "pattern is comparable, not the values. Rows below the paper's seven restrict the pool by residual and order."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="stage cache (default: $MODELPRINT_CACHE/bench-synthesis)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=22.0, help="time for this invocation")
    parser.add_argument("--smoke", action="store_true", help="tiny recipes and 8 architectures: checks the pipeline")
    args = parser.parse_args()
    if args.smoke:
        global NAIVE, FAST, FAST_LONG, POOL_ARCHS
        NAIVE, FAST, FAST_LONG = ({**r, "max_steps": 10} for r in (NAIVE, FAST, FAST_LONG))
        from modelprint.synthesis.space import all_architectures

        POOL_ARCHS = [a.id for a in all_architectures()[::36]]
    import torch

    from modelprint.io.pool import cache_dir

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = args.work or cache_dir() / "bench-synthesis" / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "seed": args.seed, "work": str(work)}
    results["timing"] = _stage(work, "timing", stage_timing, work, args.seed)
    budget = args.budget_minutes * 60 - (time.perf_counter() - t0) - 6 * 60  # leave time for the last stages
    if budget <= 60 and not (work / "stage-pool.json").exists():
        print("no time left for the pool in this invocation; rerun to continue")
        return
    results["pool"] = _stage(work, "pool", stage_pool, work, 2, args.workers, budget)
    if not results["pool"]:
        return
    results["grouping"] = _stage(work, "grouping", stage_grouping, args.seed)
    results["float_noise"] = _stage(work, "float_noise", stage_float_noise, work, args.seed)
    results["losses"] = _stage(work, "losses", stage_losses, work)
    results["fidelity"] = _stage(work, "fidelity", stage_fidelity, work, args.seed)
    results["shortcuts"] = _stage(work, "shortcuts", stage_shortcuts, work, args.seed)
    if args.smoke:
        print(report(results))
        return
    path = write_result("synthesis", results)
    update_readme_section("synthesis", report(results))
    print(f"wrote {path} and the README section")


if __name__ == "__main__":
    main()
