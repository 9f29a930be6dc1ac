"""Trajectory provenance (issue 13): membership, generations and attribution with reject on a member-split zoo DDPM.

Test bed (:func:`modelprint.provenance.membership_testbed`): the model's training members, held-out images of the
same distribution (matched), images of another source (shifted), the model's own samples (generated). One seeded
split of those groups (:func:`modelprint.provenance.audit_split`, 30% test, 20% validation) serves every protocol
(:mod:`modelprint.provenance.protocols`): methods fit on the auditor's budget (``--budget`` of the member set;
training-free ones on validation), timesteps, thresholds and confidences are chosen on validation, the test rows
are scored once.

Methods: every registered membership attack (``trajectory``: whole-trajectory features with a calibrated
logistic regression, its C chosen by cross-validation on the fit rows, and ``trajectory_boosted``; the baselines
``naive_loss``, ``secmi``, ``pia``, ``pian``, ``sima``, ``gsa1``/``gsa2`` with boosted and ``*_linear``
classifiers), each measured once on every image with its
denoiser calls, backward passes and seconds counted in this run. Reported: member vs matched and vs shifted
external (AUC, TPR at 1% and 0.1% FPR from one validation threshold each, the FPR realised on test, test
non-members behind each figure), the mixing sweep, false members among the model's generations, TPR against data
budget, per-t AUC curves, the three-way member / generated / external classifier, and attribution with reject over
every diffusion model of the zoo plus external images. ``--quick`` runs the tiny tier's ``tiny-ddpm-members`` (a
smoke run of the script, written to ``results/provenance-quick.json``, never the benchmark).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from common import RESULTS_DIR, machine, update_readme_section, write_result

SINGLE_T = ("naive_loss", "secmi", "pia", "pian", "sima")
LOSS_PROBE = {"timesteps": (10, 50, 100, 200, 400, 700), "repeats": 2}  # attribution signatures


def f3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def key(name: str) -> str:
    return name.replace("-", "_")


def methods(seed: int) -> dict[str, tuple[object, str]]:
    """JSON name → (attack, name of the measurement it reads)."""
    from modelprint.provenance import ATTACKS, TrajectoryAttack, TrajectoryExtractor

    extractor = TrajectoryExtractor(seed=seed)
    out: dict[str, tuple[object, str]] = {"trajectory": (TrajectoryAttack(extractor, "linear", seed), "trajectory"),
                                          "trajectory_boosted": (TrajectoryAttack(extractor, "boosted", seed),
                                                                 "trajectory")}
    for name in ATTACKS.names():
        if name == "trajectory":
            continue
        attack = ATTACKS.create(name)
        out[key(name)] = (attack, key(name))
        if name.startswith("gsa"):
            out[f"{key(name)}_linear"] = (ATTACKS.create(name, classifier="linear"), key(name))
    return out


def _measure_job(zoo: str, model: str, source: str, seed: int, images: np.ndarray, path: Path) -> str:
    """Measure ``source`` of ``images`` through zoo ``model`` and cache it in ``path`` (one worker's job)."""
    import torch

    from modelprint.atomic import atomic_path
    from modelprint.probes import DiffusersCandidate
    from modelprint.provenance.protocols import measure

    torch.set_num_threads(1)
    attack = next(a for a, src in methods(seed).values() if src == source)
    t0 = time.perf_counter()
    m = measure(attack, DiffusersCandidate.load(model, zoo=zoo, name=model), images)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, values=m.values, cost=np.array([m.calls_per_image, m.backwards_per_image, m.seconds_per_image]))
    return f"measured {source}: {len(images)} images, {time.perf_counter() - t0:.0f} s"


def _signature_job(zoo: str, candidate: str, seed: int, images: np.ndarray, path: Path, stamp: str) -> str:
    """Loss trajectories of ``images`` through one attribution candidate, cached in ``path`` with ``stamp``."""
    import torch

    from modelprint.atomic import atomic_path
    from modelprint.probes import DenoisingLossProbe, DiffusersCandidate

    torch.set_num_threads(1)
    probe = DenoisingLossProbe(**LOSS_PROBE, seed=seed)
    t0 = time.perf_counter()
    signature = probe.signature(DiffusersCandidate.load(candidate, zoo=zoo, name=candidate), images)
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, signature=signature, seconds=np.float64(seconds), stamp=np.array(stamp))
    return f"measured attribution signatures through {candidate}: {len(images)} images, {seconds:.0f} s"


def run_jobs(jobs: list[tuple], workers: int) -> None:
    """Run ``(function, *args)`` jobs, in ``workers`` spawned processes when more than one (each 1 torch thread)."""
    if workers <= 1 or len(jobs) <= 1:
        for fn, *args in jobs:
            print(fn(*args), flush=True)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(fn, *args) for fn, *args in jobs]):
            print(future.result(), flush=True)


def measurement_jobs(zoo: Path, model: str, images: np.ndarray, table: dict, work: Path, tag: str, seed: int
                     ) -> tuple[list[tuple], dict[str, Path]]:
    """The membership measurements not yet cached in ``work`` (one job each) and every measurement's cache file."""
    paths = {source: work / f"{tag}-{source}.npz" for _, source in table.values()}
    return [(_measure_job, str(zoo), model, s, seed, images, p) for s, p in paths.items() if not p.exists()], paths


def load_measured(paths: dict[str, Path]) -> dict:
    from modelprint.provenance.protocols import Measured

    out = {}
    for source, path in paths.items():
        with np.load(path) as data:
            out[source] = Measured(data["values"], *map(float, data["cost"]))
    return out


def signature_jobs(zoo: Path, entries: dict, candidates: list[str], groups: dict[str, np.ndarray], seed: int,
                   work: Path) -> tuple[list[tuple], dict[tuple[str, str], tuple[Path, str]]]:
    """Attribution signatures not yet cached: one job per (candidate, image group), a group being one candidate's own
    samples or the external images. A cache is reused while the candidate's files, the group's images and the probe
    are the same, so a group can be measured as soon as its images exist and adding a candidate measures only what
    is new."""
    import hashlib
    import json

    files: dict[tuple[str, str], tuple[Path, str]] = {}
    jobs = []
    (work / "attribution").mkdir(parents=True, exist_ok=True)
    for g, images in groups.items():
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
        for c in candidates:
            stamp = json.dumps({"candidate": c, "files": entries[c]["files"], "probe": LOSS_PROBE, "seed": seed,
                                "images": digest}, sort_keys=True, default=str)
            path = work / "attribution" / f"s{seed}-{c}--{g}.npz"
            files[c, g] = (path, stamp)
            if path.exists():
                with np.load(path) as data:
                    if str(data["stamp"]) == stamp:
                        continue
            jobs.append((_signature_job, str(zoo), c, seed, images, path, stamp))
    return jobs, files


def load_signatures(files: dict[tuple[str, str], tuple[Path, str]], candidates: list[str], groups: list[str]
                    ) -> tuple[np.ndarray, float]:
    """``(n, K, T)`` signatures, the groups' images in ``groups`` order and candidates in ``candidates`` order, and the
    seconds per image of probing through all of them."""
    rows, seconds, n = [], 0.0, 0
    for g in groups:
        cube = []
        for c in candidates:
            with np.load(files[c, g][0]) as data:
                cube.append(data["signature"])
                seconds += float(data["seconds"])
        rows.append(np.stack(cube, axis=1))
        n += len(cube[0])
    return np.concatenate(rows), seconds / n


def lineages(entries: dict, candidates: list[str]) -> dict[str, str]:
    """Candidate → the root of its chain of parents among the candidates (a fine-tune → its base model)."""
    def root(name: str) -> str:
        parent = entries[name]["recipe"].get("parent")
        return root(parent) if parent in candidates else name

    return {c: root(c) for c in candidates}


def standard_seconds(seed: int, n: int = 4) -> dict:
    """Seconds per image of each measurement through an (untrained) network of the standard ``ddpm-members``
    recipe: the cost of the full run, measured on this machine without building it."""
    from modelprint.probes import DiffusersCandidate
    from modelprint.provenance.protocols import measure
    from modelprint.zoo.data import training_images
    from modelprint.zoo.families.diffusion import PixelDDPM
    from modelprint.zoo.recipes import tier_recipes

    recipe = next(r for r in tier_recipes("standard") if r.name == "ddpm-members")
    denoiser = DiffusersCandidate(PixelDDPM(recipe).diffusion, name="ddpm-members (untrained)")
    images = training_images(recipe.holdout)[:n]
    seen, out = set(), {}
    for attack, source in methods(seed).values():
        if source not in seen:
            seen.add(source)
            out[source] = measure(attack, denoiser, images).cost()
    return out


def external_group(model: str, quick: bool) -> dict[str, np.ndarray]:
    """The attribution's external images (the member-split ``model``'s matched and shifted non-members) rebuilt from
    its recipe, so they can be measured before the model is built; the benchmark's cache checks they are the same."""
    from modelprint.provenance import NONE
    from modelprint.provenance.testbed import shifted_spec
    from modelprint.zoo.data import training_images
    from modelprint.zoo.recipes import tier_recipes

    recipe = next(r for r in tier_recipes("tiny" if quick else "standard") if r.name == model)
    matched = training_images(recipe.holdout)
    spec = shifted_spec(recipe.data.subset, len(matched), recipe.holdout.size)
    return {NONE: np.concatenate([matched, training_images(spec)[: len(matched)]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny tier (tiny-ddpm-members): checks the script")
    parser.add_argument("--model", default=None, help="member-split zoo model (default ddpm-members)")
    parser.add_argument("--budget", type=float, default=0.5, help="share of the members the auditor fits on")
    parser.add_argument("--attribution-per-model", type=int, default=160, help="own samples per candidate")
    parser.add_argument("--precompute-attribution", action="store_true",
                        help="only measure the attribution signatures of the candidates built so far (their own "
                        "samples and the external images), then exit")
    parser.add_argument("--workdir", type=Path, default=Path("out/bench-provenance"))
    parser.add_argument("--jobs", type=int, default=1, help="processes measuring in parallel (1 torch thread each)")
    args = parser.parse_args()

    import torch

    from modelprint.config import torch_threads
    from modelprint.probes import DenoisingLossProbe, DiffusersCandidate
    from modelprint.provenance import NONE, audit_split, membership_testbed
    from modelprint.provenance import protocols as P
    from modelprint.seeding import seed_everything
    from modelprint.zoo import Zoo

    seed_everything(args.seed)
    torch.set_num_threads(torch_threads() or 1)
    t_start = time.perf_counter()
    model = args.model or ("tiny-ddpm-members" if args.quick else "ddpm-members")
    zoo = Zoo(args.zoo)
    entries = zoo.entries()
    candidates = zoo.names("diffusion")
    work = args.workdir / ("quick" if args.quick else "standard")
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{model}-s{args.seed}"

    # attribution with reject: every diffusion model of the zoo, its own samples and the external images
    from modelprint.io import load_image
    from modelprint.io.images import to_uint8

    own = {c: np.stack([to_uint8(load_image(p)) for p in sorted(zoo.samples_dir(c).glob("*.png"))
                        [: args.attribution_per_model]]) for c in candidates}
    if args.precompute_attribution:
        more, _ = signature_jobs(args.zoo, entries, candidates, {**own, **external_group(model, args.quick)},
                                 args.seed, work)
        run_jobs(more, args.jobs)
        return
    bed = membership_testbed(zoo, model)
    images, groups = P.bed_images(bed)
    denoiser = DiffusersCandidate.load(model, zoo=str(args.zoo), name=model)
    table = methods(args.seed)
    attr_groups = {**own, NONE: np.concatenate([bed.matched, bed.shifted])}
    attr_labels = np.concatenate([[g] * len(v) for g, v in attr_groups.items()])
    jobs, paths = measurement_jobs(args.zoo, model, images, table, work, tag, args.seed)
    more, signature_files = signature_jobs(args.zoo, entries, candidates, attr_groups, args.seed, work)
    run_jobs(jobs + more, args.jobs)
    measured = load_measured(paths)
    trajectory = table["trajectory"][0].extractor.extract(denoiser, images[:1])  # names of the columns
    names, values = trajectory.names, measured["trajectory"].values

    split = audit_split(groups, budget=args.budget, seed=args.seed)
    results, fitted = {}, {}
    for name, (attack, source) in table.items():
        x = measured[source].values
        print(f"protocols: {name}", flush=True)
        fit, matched = P.membership_condition(attack, x, groups, split, 0.0, args.seed)
        _, shifted = P.membership_condition(attack, x, groups, split, 1.0, args.seed)
        fitted[name] = fit
        results[name] = {
            "matched": matched, "shifted": shifted,
            "mixing": [{k: r[k] for k in ("share_shifted", "auc", "tpr_at_1pct_fpr", "realised_fpr_at_1pct")}
                       for r in (P.membership_condition(attack, x, groups, split, s, args.seed)[1] for s in P.SHARES)],
            "generated": P.false_member_rate(fit, matched, x, groups),
            "budgets": P.budget_sweep(attack, x, groups, P.BUDGETS, args.seed),
            "cost": measured[source].cost()}
        if getattr(getattr(fit, "classifier_", None), "C_", None) is not None:
            results[name]["C"] = fit.classifier_.C_  # chosen on the fit rows (matched condition)
    weights = P.weights_by_kind(fitted["trajectory"].classifier_.linear_weights()[0], names)
    three = {m: P.three_way(values, groups, split, m, seed=args.seed)[1] for m in ("linear", "boosted")}

    probe = DenoisingLossProbe(**LOSS_PROBE, seed=args.seed)
    signatures, seconds = load_signatures(signature_files, candidates, list(attr_groups))
    attribution = P.attribution_with_reject(signatures, attr_labels, candidates, args.seed,
                                            lineages=lineages(entries, candidates))
    attribution["cost"] = {"calls_per_image": probe.calls_per_image * len(candidates),
                           "seconds_per_image": seconds,
                           "probe": {k: list(v) if isinstance(v, tuple) else v for k, v in LOSS_PROBE.items()}}

    out = {"model": model, "tier": "tiny (smoke run of the script, not the benchmark)" if args.quick else "standard",
           "seed": args.seed, "budget": args.budget, "testbed": bed.to_dict(), "split": split.to_dict(),
           "split_by_group": {p: {g: int((groups[getattr(split, p)] == g).sum()) for g in dict.fromkeys(groups)}
                              for p in ("fit", "val", "test")},
           "candidate_sha256": {c: entries[c]["files"] for c in candidates}, "methods": results,
           "trajectory_features": {**trajectory.to_dict(), "n_images": len(images)},
           "per_timestep_auc": {"matched": P.per_timestep_auc(values, names, groups, split, 0.0, args.seed),
                                "shifted": P.per_timestep_auc(values, names, groups, split, 1.0, args.seed)},
           "loss_curves": P.kind_curves(values, names, groups, "loss"), "linear_weights": weights,
           "three_way": three, "attribution": attribution}
    out["targets"] = targets(out)
    if args.quick:
        print("timing the standard ddpm-members network (untrained) for the full-run estimate", flush=True)
        out["standard_cost_per_image"] = standard_seconds(args.seed)
        out["standard_estimate"] = estimate(out)
    zoo_shown = args.zoo if not args.zoo.is_absolute() else ("TINY_ZOO" if args.quick else "ZOO")
    out["command"] = (f"python benchmarks/bench_provenance.py{' --quick' if args.quick else ''} --zoo {zoo_shown} "
                      f"--seed {args.seed} --budget {args.budget:g}" + (f" --model {model}" if args.model else ""))
    out["seconds"] = time.perf_counter() - t_start
    out["machine"] = machine()
    name = "provenance-quick" if args.quick else "provenance"
    write_result(name, out)
    plot(out, name)
    report(out, name)
    print(f"wrote results/{name}.json ({out['seconds']:.0f} s)")


def estimate(out: dict, candidates: int = 11, per_model: int = 160) -> dict:
    """Hours of the standard run: each measurement's seconds per image on the standard network times the standard
    test bed's images (256 members, 256 matched, 256 shifted, 160 generated); attribution: ``candidates`` models
    (the standard tier's diffusion models), ``per_model`` own samples each plus the 512 external images, at the naive
    loss's seconds per call."""
    n = 256 * 3 + 160
    cost = out["standard_cost_per_image"]
    per = {k: v["seconds_per_image"] * n / 3600 for k, v in cost.items()}
    per_call = cost["naive_loss"]["seconds_per_image"] / cost["naive_loss"]["calls_per_image"]
    calls = out["attribution"]["cost"]["calls_per_image"] / len(out["attribution"]["candidates"])
    attribution = per_call * calls * candidates * (candidates * per_model + 512) / 3600
    return {"images": n, "hours_by_measurement": per, "attribution_hours": attribution,
            "attribution_candidates": candidates, "hours_total": sum(per.values()) + attribution}


def targets(out: dict) -> list[dict]:
    m = out["methods"]
    traj = m["trajectory"]["matched"]
    best = max(SINGLE_T, key=lambda k: m[k]["matched"]["tpr_at_1pct_fpr"])
    best_tpr = m[best]["matched"]["tpr_at_1pct_fpr"]
    three = out["three_way"]["linear"]
    attr = out["attribution"]
    rows = [
        ("member vs matched: trajectory AUC >= 0.95", traj["auc"], traj["auc"] >= 0.95),
        ("member vs matched: trajectory TPR@1%FPR >= 0.50", traj["tpr_at_1pct_fpr"], traj["tpr_at_1pct_fpr"] >= 0.5),
        (f"trajectory TPR@1%FPR >= 2 x best single-t baseline ({best}: {best_tpr:.3f})", traj["tpr_at_1pct_fpr"],
         traj["tpr_at_1pct_fpr"] > 0 and traj["tpr_at_1pct_fpr"] >= 2 * best_tpr),
        ("generated vs rest AUC >= 0.99 (linear three-way)", three["generated_vs_rest_auc"],
         three["generated_vs_rest_auc"] >= 0.99),
        ("three-way macro accuracy >= 0.90 (linear)", three["macro_accuracy"], three["macro_accuracy"] >= 0.9),
        (f"attribution with reject over {len(attr['candidates'])} candidates + external: accuracy >= 0.90",
         attr["accuracy"], attr["accuracy"] >= 0.9 and len(attr["candidates"]) >= 4),
        ("cost: calls and seconds per image for every method, same run",
         len(m), all("seconds_per_image" in r["cost"] for r in m.values()))]
    return [{"target": t, "value": float(v), "met": bool(ok)} for t, v, ok in rows]


def plot(out: dict, name: str) -> None:
    """Four figures: loss against t per group, AUC against t, TPR@0.1%FPR against budget, linear weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modelprint.atomic import atomic_path

    def save(fig, suffix: str) -> None:
        fig.tight_layout()
        with atomic_path(RESULTS_DIR / f"{name}-{suffix}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)

    title = f"{out['model']} ({'tiny smoke run' if 'tiny' in out['tier'] else 'standard zoo'})"
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, c in out["loss_curves"].items():
        t, mean, sd = np.array(c["timesteps"]), np.array(c["mean"]), np.array(c["sd"])
        ax.plot(t, mean, marker="o", ms=3, label=group)
        ax.fill_between(t, mean - sd, mean + sd, alpha=0.15)
    ax.set(xscale="log", xlabel="timestep t", ylabel="log denoising loss (mean ± sd)", title=title)
    ax.legend(fontsize=8)
    save(fig, "loss")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, cond in zip(axes, ("matched", "shifted")):
        for kind, c in out["per_timestep_auc"][cond].items():
            ax.plot(c["timesteps"], c["auc"], marker="o", ms=3, label=kind)
        ax.axhline(out["methods"]["trajectory"][cond]["auc"], color="k", ls="--", label="trajectory classifier")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="timestep t", title=f"member vs {cond} external")
    axes[0].set_ylabel("test AUC of one feature at one t")
    axes[1].legend(fontsize=7)
    save(fig, "auc-t")

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, r in out["methods"].items():
        rows = [b for b in r["budgets"] if "skipped" not in b]
        ax.plot([100 * b["budget"] for b in rows], [b["tpr_at_0.1pct_fpr"] for b in rows], marker="o", ms=3,
                label=method)
    ax.set(xscale="log", xlabel="data budget (% of the member set fitted on)", ylabel="TPR at 0.1% FPR (test)",
           title=title)
    ax.legend(fontsize=7, ncol=2)
    save(fig, "budget")

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, w in out["linear_weights"].items():
        ax.plot(w["timesteps"], w["weight"], marker="o", ms=3, label=kind)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="timestep t", ylabel="weight (standardised feature, member class)", title=title)
    ax.legend(fontsize=8)
    save(fig, "weights")


def report(out: dict, name: str) -> None:
    cmd = out["command"]
    m, sp, tb = out["methods"], out["split_by_group"], out["testbed"]["counts"]
    quick = "tiny" in out["tier"]
    head = (f"## Trajectory provenance{' — tiny-tier smoke run, not the benchmark' if quick else ''} (`{cmd}`)")
    md = [head, ""]
    if quick:
        est = out["standard_estimate"]
        md += [f"This checks the script end to end on the tiny tier ({out['model']}: {tb['members']} members); its "
               "numbers say nothing about the method. The standard run (`--zoo out/zoo`, `ddpm-members`, "
               f"{est['images']} test-bed images, attribution over {est['attribution_candidates']} standard DDPMs) is "
               f"estimated at **{est['hours_total']:.1f} h** on this machine with 1 thread (each measurement timed "
               f"here on the standard network, 4 images a batch; attribution {est['attribution_hours']:.1f} h of it); "
               "the boosted classifiers and timestep choices need the standard tier's counts to mean anything.", ""]
    if quick:
        md += ["Run it on a tiny zoo: `modelprint zoo build --tier tiny --zoo TINY_ZOO`. The benchmark itself, once "
               "the standard zoo holds `ddpm-members` and the other DDPMs: "
               "`python benchmarks/bench_provenance.py --zoo out/zoo --seed 0` (writes `results/provenance.json` and "
               "its own section).", ""]
    md += [f"Test bed: {', '.join(f'{k} {v}' for k, v in tb.items())}. Split per group (fit / val / test): "
           + "; ".join(f"{g} {sp['fit'][g]}/{sp['val'][g]}/{sp['test'][g]}" for g in sp["test"])
           + f". Budget {out['budget']:.0%} of the members. TPR at each FPR uses one threshold chosen on validation; "
           f"realised = the FPR it gives on test. {sp['test']['matched']} test non-members back each figure, so a "
           f"0.1% FPR is {sp['test']['matched'] / 1000:.2f} expected false positives: below 1 it means little.", "",
           "| method | matched AUC | TPR@1% (realised FPR) | TPR@0.1% | shifted AUC | TPR@1% (realised) | "
           "generated called member @1% | calls / img | backward / img | s / img |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in m.items():
        a, s, c = r["matched"], r["shifted"], r["cost"]
        md.append(f"| {k} | {a['auc']:.3f} | {a['tpr_at_1pct_fpr']:.3f} ({a['realised_fpr_at_1pct']:.3f}) | "
                  f"{a['tpr_at_0.1pct_fpr']:.3f} | {s['auc']:.3f} | {s['tpr_at_1pct_fpr']:.3f} "
                  f"({s['realised_fpr_at_1pct']:.3f}) | {r['generated']['false_member_rate_at_1pct']:.3f} | "
                  f"{c['calls_per_image']:.0f} | {c['backwards_per_image']:.0f} | {c['seconds_per_image']:.3f} |")
    shares = [r["share_shifted"] for r in m["trajectory"]["mixing"]]
    md += ["", "Mixing sweep (AUC as the share of shifted non-members grows): "
           + "; ".join(f"{k} " + " → ".join(f"{r['auc']:.2f}" for r in m[k]["mixing"]) for k in
                       ("trajectory", *SINGLE_T)) + f" (shares {', '.join(f'{s:g}' for s in shares)}).", ""]
    for k, t in out["three_way"].items():
        md.append(f"Three-way ({k}): macro accuracy {t['macro_accuracy']:.3f}, generated-vs-rest AUC "
                  f"{t['generated_vs_rest_auc']:.3f}; above the validated confidence {t['confidence_threshold']:.2f}: "
                  f"coverage {t['coverage']:.2f}, accuracy {f3(t['accuracy_answered'])} ({t['n_test']} test images).")
    a = out["attribution"]
    plain = a["lowest_loss_without_reject"]
    chosen = ", ".join(f"{k} {v}" for k, v in a.items() if k in ("normalisation", "accept", "kind", "C", "threshold"))
    md += ["", f"Attribution with reject over {len(a['candidates'])} zoo diffusion models "
           f"({', '.join(a['candidates'])}) "
           f"plus external images: accuracy {a['accuracy']:.3f} (95% bootstrap interval "
           f"{a['accuracy_ci95'][0]:.3f}–{a['accuracy_ci95'][1]:.3f}; {a['n_test']} test images, "
           f"{a['n_test_external']} external; own samples {a['accuracy_own_samples']:.3f}, external rejected "
           f"{f3(a['external_rejected'])}; "
           f"mean recall over the {len(a['candidates']) + 1} answers {a['macro_accuracy']:.3f}"
           + (f"; by lineage ({lineage_text(a['by_lineage'])}): accuracy {a['by_lineage']['accuracy']:.3f}, own "
              f"samples {a['by_lineage']['accuracy_own_samples']:.3f}" if "by_lineage" in a else "") + "); "
           f"chosen on validation: the {a['rule']} rule ({chosen}); {a['n_fit']} fit rows ({a['n_fit_external']} "
           f"external), {a['n_val']} validation rows. Lowest loss without reject "
           f"(never says none): raw {plain['raw']['accuracy']:.3f}, "
           f"standardised {plain['standardised']['accuracy']:.3f}"
           f" (own samples {plain['raw']['accuracy_own_samples']:.3f} / "
           f"{plain['standardised']['accuracy_own_samples']:.3f}; validation picks {plain['chosen_on_validation']}); "
           f"{a['cost']['calls_per_image']} calls, {a['cost']['seconds_per_image']:.3f} s per image. Every rule "
           "family at its best setting on validation:", "",
           "| rule | setting | val accuracy | val own | val external rejected | test accuracy | test own | "
           "test external rejected |", "|---|---|---|---|---|---|---|---|"]
    for family, r in a["rules"].items():
        setting = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                            if k not in ("rule", "validation", "test"))
        v, t = r["validation"], r["test"]
        md.append(f"| {family} | {setting} | {v['accuracy']:.3f} | {f3(v['accuracy_own_samples'])} | "
                  f"{f3(v['external_rejected'])} | {t['accuracy']:.3f} | {f3(t['accuracy_own_samples'])} | "
                  f"{f3(t['external_rejected'])} |")
    md += ["",
           "| target | value | met |", "|---|---|---|"]
    md += [f"| {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |" for t in out["targets"]]
    md += ["", *(f"![{s}](results/{name}-{s}.png)" for s in ("loss", "auc-t", "budget", "weights")), "", "**Reading.** "
           + reading(out)]
    update_readme_section(name.replace("-", "_"), "\n".join(md))


def lineage_text(by_lineage: dict) -> str:
    """The lineages with more than one member, e.g. ``ddpm ⊃ ddpm-finetune, ddpm-lora``."""
    roots: dict[str, list[str]] = {}
    for c, r in by_lineage["lineages"].items():
        roots.setdefault(r, []).append(c)
    return "; ".join(f"{r} ⊃ {', '.join(c for c in cs if c != r)}" for r, cs in roots.items() if len(cs) > 1) or "none"


def reading(out: dict) -> str:
    """What the numbers show, in sentences built from them (met or not)."""
    m = out["methods"]
    lift = {k: m[k]["shifted"]["auc"] - m[k]["matched"]["auc"] for k in SINGLE_T}
    curves = out["per_timestep_auc"]["matched"]["loss"]
    peak = curves["timesteps"][int(np.argmax(curves["auc"]))]
    gen = {k: m[k]["generated"]["false_member_rate_at_1pct"] for k in SINGLE_T}
    met = sum(t["met"] for t in out["targets"])
    best_single = max(max(c["auc"]) for c in out["per_timestep_auc"]["matched"].values())
    traj = m["trajectory"]["matched"]
    overfit = (f" The classifier scores below its best single feature ({best_single:.3f}): "
               f"{traj['split']['fit']} fit rows for {len(out['trajectory_features']['names'])} features (logistic "
               f"regression, C = {m['trajectory'].get('C', 1.0):.3g} chosen by cross-validation on the fit rows)."
               if traj["auc"] < best_single else "")
    shifts = np.mean(list(lift.values())) > 0.05
    claim = ("as the seed claims, they partly track the shift, not membership" if shifts else
             "on average they do not, so the seed's claim is not reproduced here")
    return (f"Shifted non-members move the single-t baselines' AUC by {min(lift.values()):+.2f} to "
            f"{max(lift.values()):+.2f} against matched ones ({claim}); the trajectory "
            f"classifier goes from {m['trajectory']['matched']['auc']:.3f} (matched) to "
            f"{m['trajectory']['shifted']['auc']:.3f} (shifted). At the 1% operating point the single-t baselines call "
            f"{min(gen.values()):.0%}–{max(gen.values()):.0%} of the model's own generations members. The loss alone "
            f"separates members best at t = {peak} (matched AUC {max(curves['auc']):.3f}) against "
            f"{m['trajectory']['matched']['auc']:.3f} for the whole-trajectory classifier.{overfit} "
            f"{attribution_reading(out['attribution'])} {met} of {len(out['targets'])} targets met.")


def attribution_reading(a: dict) -> str:
    """What the attribution rules show: the threshold rules against the best learned one, on test."""
    rules = a["rules"]
    learned = max((k for k in rules if k.startswith("learned")), key=lambda k: rules[k]["validation"]["accuracy"])
    best_threshold = max((k for k in rules if k.startswith("threshold")),
                         key=lambda k: rules[k]["validation"]["accuracy"])
    t, lt = rules[best_threshold]["test"], rules[learned]["test"]
    return (f"Attribution: the loss thresholds ({best_threshold}) reject {f3(t['external_rejected'])} of the external "
            f"test images (own samples {f3(t['accuracy_own_samples'])}, accuracy {t['accuracy']:.3f}); the learned "
            f"rule ({learned}, fitted on own samples against external fit rows) rejects "
            f"{f3(lt['external_rejected'])} at own-sample accuracy {f3(lt['accuracy_own_samples'])} (accuracy "
            f"{lt['accuracy']:.3f}); validation chose the {a['rule']} rule, test accuracy {a['accuracy']:.3f} "
            f"[{a['accuracy_ci95'][0]:.3f}, {a['accuracy_ci95'][1]:.3f}] "
            f"({'meets' if a['accuracy'] >= 0.9 else 'misses'} the 0.90 target)." + lineage_reading(a))


def lineage_reading(a: dict) -> str:
    """How much of the error stays inside lineages (a fine-tune taken for its base or the reverse)."""
    if "by_lineage" not in a:
        return ""
    labels, matrix = a["confusion"]["labels"], np.array(a["confusion"]["matrix"])
    root = a["by_lineage"]["lineages"]
    errors = matrix.sum() - np.trace(matrix)
    within = sum(int(matrix[i, j]) for i, t in enumerate(labels) for j, p in enumerate(labels)
                 if i != j and t != "none" and p != "none" and root[t] == root[p])
    lin = a["by_lineage"]
    return (f" {within} of the {errors} test errors are within a lineage ({lineage_text(lin)}); answering the "
            f"lineage (probabilities summed over its models) scores {lin['accuracy']:.3f} (own samples "
            f"{f3(lin['accuracy_own_samples'])}).")


if __name__ == "__main__":
    os.environ.setdefault("MODELPRINT_THREADS", "1")
    main()
