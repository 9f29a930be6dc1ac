"""White-box attribution with Spectral Denoising Signatures over the zoo's diffusion models (issue 5).

Candidates: every diffusion model of a built zoo (standard tier: 7 pixel DDPMs incl. a fine-tuned and a LoRA child,
2 latent models sharing one autoencoder). Image sets:

- ``samples``: each model's own unconditional samples (from the zoo); the first ``--dev`` per model are the
  development split (every choice is made on it by stratified 4-fold cross-validation), the next ``--test`` are
  the in-domain test split; the next ``--extra-refs`` per model are extra references for the cheap 4-ring probe
  (a cheap probe can afford many more reference images at the same probing cost);
- ``faces``: cross-domain content. The same ``--faces`` held-out LFW faces redrawn by every model (SDEdit,
  strength ``--strength``): each model's images now show faces, whatever it was trained on. Attributors fitted on
  the ``samples`` dev split are tested here unchanged.

Every image is probed through every candidate (unknown origin) with three grids: the reference 5-step setting
(8 rings × 5 timesteps × 3 scales × 6 repeats = 720 calls per image per candidate), a 4-ring grid (80 calls) and
the plain denoising loss (8 timesteps × 6 repeats = 48 calls), the training-free baseline that any SDS result must
beat at an equal number of calls (method notes §2).
Every cheaper setting inside a grid (a subset of its timesteps and scales, fewer repeats, with or without the log
energy) is cut from the grid's per-repeat energies (``SpectralProbe.energies_within``): identical to probing with
it, checked on real probes below. The cheap probe is the setting with ≤ 1/4 of the reference's calls that has the
best cross-validated accuracy on the dev split (ties → fewer calls); its classifier is chosen the same way.

Reported on the test splits, with 95% bootstrap intervals: unknown-origin and true-model protocols (top-1, top-3,
MRR), the three classifiers × two feature layouts, baselines (pixels, FFT log-magnitude, the learned extractor)
with the same classifiers and splits, the denoising loss at the SDS settings' budgets (training-free lowest loss,
and the loss features with the same classifiers; setting chosen on dev), and the cost per image (denoiser calls;
seconds per image through all candidates, measured in this run, with the ratio to the reference).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import fmt_ci, machine, update_readme_section, write_result

GRIDS = {
    "K8": {"rings": 8, "timesteps": (781, 601, 401, 201, 1), "noise_scales": (1.0, 1.25, 1.5), "repeats": 6},
    "K4": {"rings": 4, "timesteps": (781, 601, 401, 201, 1), "noise_scales": (1.0,), "repeats": 4},
}
LOSS_GRID = {"timesteps": (1, 6, 11, 21, 51, 101, 201, 401), "repeats": 6}
REFERENCE_CALLS = 720
LOSS_COMBOS = [("concat", c) for c in ("lowest-loss", "prototype", "logreg", "svm")]


# ------------------------------------------------------------------------------------------------ probing (workers)

def _probe_task(zoo: str, candidate: str, grid: str, images_path: str, out_path: str, seed: int) -> str:
    import torch

    torch.set_num_threads(1)
    from modelprint.atomic import atomic_path
    from modelprint.probes import DenoisingLossProbe, DiffusersCandidate, SpectralProbe

    if Path(out_path).exists():
        return out_path
    images = np.load(images_path)
    denoiser = DiffusersCandidate.load(candidate, zoo=zoo, name=candidate)
    if grid == "L":
        energies = DenoisingLossProbe(**LOSS_GRID, seed=seed, batch_size=96).repeat_losses(denoiser, images)
    else:
        energies = SpectralProbe(**GRIDS[grid], seed=seed, batch_size=96).repeat_energies(denoiser, images)
    with atomic_path(Path(out_path)) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, energies.astype(np.float64))
    return out_path


def probe_all(zoo: Path, names: list[str], sets: dict[str, tuple[Path, tuple[str, ...]]], work: Path, seed: int,
              workers: int) -> dict[tuple[str, str], np.ndarray]:
    """``(set, grid)`` → per-repeat SDS energies ``(n, M, S, T, K, R, K)`` or losses ``(n, M, T, R)`` (grid ``L``)
    for each set's grids; cached per (set, grid, candidate)."""
    tasks = [(s, g, c) for g in (*GRIDS, "L") for s, (_, grids) in sets.items() if g in grids for c in names]
    paths = {t: work / "cache" / f"{t[0]}-{t[1]}-{t[2]}.npy" for t in tasks}
    (work / "cache").mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if not paths[t].exists()]
    t0 = time.perf_counter()
    if todo:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_probe_task, str(zoo), c, g, str(sets[s][0]), str(paths[(s, g, c)]), seed): (s, g, c)
                       for s, g, c in todo}
            for i, fut in enumerate(futures, 1):
                fut.result()
                print(f"probed {futures[fut]} ({i}/{len(todo)}, {time.perf_counter() - t0:.0f} s)", flush=True)
    return {(s, g): np.stack([np.load(paths[(s, g, c)]) for c in names], axis=1)
            for s, (_, grids) in sets.items() for g in grids}


# ------------------------------------------------------------------------------------------------ settings

def variants() -> list[dict]:
    """Settings inside the two grids with at most 1/4 of the reference calls, plus the reference itself."""
    out = [{"grid": "K8", "timesteps": GRIDS["K8"]["timesteps"], "noise_scales": GRIDS["K8"]["noise_scales"],
            "repeats": 6, "log_energy": False, "name": "reference-5"}]
    for grid, spec in GRIDS.items():
        ts = [c for r in (1, 2) for c in itertools.combinations(spec["timesteps"], r)] + [spec["timesteps"]]
        ss = [(s,) for s in spec["noise_scales"]] + ([spec["noise_scales"]] if len(spec["noise_scales"]) > 1 else [])
        for t, s, r, log in itertools.product(ts, ss, sorted({1, 2, spec["repeats"]}), (False, True)):
            calls = spec["rings"] * len(t) * len(s) * r
            if calls <= REFERENCE_CALLS // 4:
                out.append({"grid": grid, "timesteps": t, "noise_scales": s, "repeats": r, "log_energy": log})
    for v in out:
        v["calls"] = GRIDS[v["grid"]]["rings"] * len(v["timesteps"]) * len(v["noise_scales"]) * v["repeats"]
        v.setdefault("name", f"{v['grid']} t={','.join(map(str, v['timesteps']))} s={','.join(map(str, v['noise_scales']))} "
                             f"r={v['repeats']}{' +log' if v['log_energy'] else ''}")
    return out


def variant_probe(v: dict, seed: int):
    from modelprint.probes import SpectralProbe

    return SpectralProbe(rings=GRIDS[v["grid"]]["rings"], timesteps=v["timesteps"], noise_scales=v["noise_scales"],
                         repeats=v["repeats"], log_energy=v["log_energy"], seed=seed)


def signatures(v: dict, energies: np.ndarray, seed: int) -> np.ndarray:
    """``(n, M, d)`` signatures of setting ``v`` cut from a grid's ``(n, M, S, T, K, R, K)`` energies."""
    from modelprint.probes import SpectralProbe

    probe, grid = variant_probe(v, seed), SpectralProbe(**GRIDS[v["grid"]], seed=seed)
    n, m = energies.shape[:2]
    flat = energies.reshape(n * m, *energies.shape[2:])
    return probe.signature_from_energies(probe.energies_within(grid, flat)).reshape(n, m, -1)


def loss_variants() -> list[dict]:
    """Denoising-loss settings inside the loss grid: one or two timesteps, or the first k, with 1–6 repeats."""
    ts = LOSS_GRID["timesteps"]
    subsets = [(t,) for t in ts] + list(itertools.combinations(ts, 2)) + [ts[:k] for k in range(3, len(ts) + 1)]
    return [{"grid": "L", "timesteps": t, "repeats": r, "calls": len(t) * r,
             "name": f"loss t={','.join(map(str, t))} r={r}"}
            for t, r in itertools.product(subsets, sorted({1, 2, 4, LOSS_GRID["repeats"]}))]


def loss_signatures(v: dict, losses: np.ndarray, seed: int) -> np.ndarray:
    """``(n, M, T)`` log losses of loss setting ``v`` cut from the grid's ``(n, M, T, R)`` losses."""
    from modelprint.probes import DenoisingLossProbe

    probe = DenoisingLossProbe(timesteps=v["timesteps"], repeats=v["repeats"], seed=seed)
    grid = DenoisingLossProbe(**LOSS_GRID, seed=seed)
    n, m = losses.shape[:2]
    flat = losses.reshape(n * m, *losses.shape[2:])
    return np.log(probe.losses_within(grid, flat)).reshape(n, m, -1)


def real_probe(v: dict, seed: int):
    """The probe that computes setting ``v`` directly (for timing and the cut-vs-probed check)."""
    from modelprint.probes import DenoisingLossProbe

    if v["grid"] == "L":
        return DenoisingLossProbe(timesteps=v["timesteps"], repeats=v["repeats"], seed=seed, batch_size=96)
    probe = variant_probe(v, seed)
    probe.batch_size = 96
    return probe


def cut(v: dict, grid_features: np.ndarray, seed: int) -> np.ndarray:
    return (loss_signatures if v["grid"] == "L" else signatures)(v, grid_features, seed)


# ------------------------------------------------------------------------------------------------ evaluation

def cv_accuracy(x: np.ndarray, y: np.ndarray, features: str, clf: str, names: list[str], seed: int) -> float:
    """Dev 4-fold cross-validated accuracy of one pipeline (:func:`modelprint.probes.select_pipeline`)."""
    from modelprint.probes import select_pipeline

    return select_pipeline(x, y, names, [(features, clf)], seed).accuracy[f"{features}/{clf}"]


def test_metrics(pipe, x: np.ndarray, y: np.ndarray, seed: int, labels: list[str] | None = None) -> dict:
    from sklearn.metrics import confusion_matrix

    from modelprint.evaluation.metrics import bootstrap_ci
    from modelprint.probes import ranking_metrics
    from modelprint.probes.attribution import scores

    s = scores(pipe, x)
    m = ranking_metrics(y, s, pipe.classes_)
    pred = pipe.classes_[np.argmax(s, 1)]
    m["top1_ci"] = list(bootstrap_ci(np.mean, (pred == y).astype(float), n_boot=2000, seed=seed))
    if labels is not None:
        m["confusion"] = confusion_matrix(y, pred, labels=labels).tolist()
    return m


def evaluate_cascade(stages: list[tuple[np.ndarray, str, int]], y: dict, idx: dict, names: list[str],
                     seed: int) -> dict:
    """Early exit from stage 1 (cheap) to stage 2: ``stages`` are (flattened ``samples`` signatures, ``features/
    classifier``, calls per image per candidate); :func:`modelprint.probes.evaluate_cascade` on the dev/test split."""
    from modelprint.probes import CascadeStage
    from modelprint.probes import evaluate_cascade as evaluate

    cheap, final = (CascadeStage(x[idx["dev"]], x[idx["test"]], *combo.split("/"), calls) for x, combo, calls in stages)
    return evaluate(cheap, final, y["samples"][idx["dev"]], y["samples"][idx["test"]], names, seed).to_dict()


def evaluate_setting(sig: dict[str, np.ndarray], y: dict[str, np.ndarray], idx: dict, names: list[str], seed: int,
                     combos=None) -> dict:
    """Both protocols for one setting's signatures: dev-CV selection (among ``combos``, default every trained
    pipeline), then in-domain and cross-domain test."""
    from modelprint.probes import COMBINATIONS, fit_pipeline, select_pipeline

    combos = COMBINATIONS if combos is None else combos
    col = {n: i for i, n in enumerate(names)}
    s_dev, s_test, s_faces = sig["samples"][idx["dev"]], sig["samples"][idx["test"]], sig["faces"]
    y_dev, y_test, y_faces = y["samples"][idx["dev"]], y["samples"][idx["test"]], y["faces"]
    flat = lambda s: s.reshape(len(s), -1)  # noqa: E731
    chosen = select_pipeline(flat(s_dev), y_dev, names, combos, seed)
    pipe = fit_pipeline(flat(s_dev), y_dev, chosen.features, chosen.classifier, names, seed)
    res = {"unknown_origin": {"selected": chosen.name, "dev_cv": chosen.accuracy,
                              "in_domain": test_metrics(pipe, flat(s_test), y_test, seed, names),
                              "cross_domain": test_metrics(pipe, flat(s_faces), y_faces, seed, names)}}
    if len(combos) > 1:
        res["unknown_origin"]["all_classifiers_in_domain"] = {
            f"{ff}/{cc}": test_metrics(fit_pipeline(flat(s_dev), y_dev, ff, cc, names, seed), flat(s_test), y_test,
                                       seed)["top1"]
            for ff, cc in combos}
    own = lambda s, labels: s[np.arange(len(s)), [col[v] for v in labels]]  # noqa: E731
    tm_combos = [("concat", c) for c in ("prototype", "logreg", "svm")]
    chosen = select_pipeline(own(s_dev, y_dev), y_dev, ["own"], tm_combos, seed)
    pipe = fit_pipeline(own(s_dev, y_dev), y_dev, chosen.features, chosen.classifier, ["own"], seed)
    res["true_model"] = {"selected": chosen.classifier, "dev_cv": chosen.accuracy,
                         "in_domain": test_metrics(pipe, own(s_test, y_test), y_test, seed),
                         "cross_domain": test_metrics(pipe, own(s_faces, y_faces), y_faces, seed)}
    return res


def baseline_features(images: np.ndarray, kind: str, learned=None) -> np.ndarray:
    x = images.astype(np.float64) / 255.0
    if kind == "pixels":
        return x.reshape(len(x), -1)
    if kind == "fft":
        grey = x.mean(-1)
        grey = grey - grey.mean(axis=(1, 2), keepdims=True)
        return np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))) + 1e-6).reshape(len(x), -1)
    return np.concatenate([learned.embed(list(x[i : i + 16].astype(np.float32))) for i in range(0, len(x), 16)])


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev", type=int, default=8, help="dev images per model (selection by 4-fold CV)")
    parser.add_argument("--test", type=int, default=6, help="in-domain test images per model")
    parser.add_argument("--extra-refs", type=int, default=12,
                        help="more reference samples per model, probed with the 4-ring and loss grids only")
    parser.add_argument("--faces", type=int, default=4, help="cross-domain (SDEdit faces) images per model")
    parser.add_argument("--strength", type=float, default=0.7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timing-images", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("out/bench-probes"))
    args = parser.parse_args()

    import torch

    from modelprint.io import load_image
    from modelprint.io.images import to_uint8
    from modelprint.methods import load_method
    from modelprint.probes import DiffusersCandidate, unknown_origin_signatures
    from modelprint.seeding import seed_everything
    from modelprint.zoo import Zoo
    from modelprint.zoo.data import faces
    from modelprint.zoo.store import load_generator

    seed_everything(args.seed)
    t_start = time.perf_counter()
    zoo = Zoo(args.zoo)
    names = zoo.names("diffusion")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    n_per = args.dev + args.test
    samples = np.stack([to_uint8(load_image(p)) for n in names for p in sorted(zoo.samples_dir(n).glob("*.png"))[:n_per]])
    y_samples = np.array([n for n in names for _ in range(n_per)])
    face_src = faces(32, "holdout")[: args.faces]
    faces_path = work / f"faces-{args.faces}-{args.strength}.npy"
    if not faces_path.exists():
        edited = [load_generator(n, zoo=args.zoo).edit(face_src, strength=args.strength, seed=args.seed) for n in names]
        np.save(faces_path, np.concatenate(edited))
    face_images = np.load(faces_path)
    y_faces = np.array([n for n in names for _ in range(args.faces)])
    samples_path = work / f"samples-{args.dev}-{args.test}.npy"
    np.save(samples_path, samples)
    extra = np.stack([to_uint8(load_image(p)) for n in names
                      for p in sorted(zoo.samples_dir(n).glob("*.png"))[n_per : n_per + args.extra_refs]])
    extra_path = work / f"extra-{n_per}-{args.extra_refs}.npy"
    np.save(extra_path, extra)
    sets = {"samples": (samples_path, ("L", "K4", "K8")), "faces": (faces_path, ("L", "K4", "K8")),
            "extra": (extra_path, ("L", "K4"))}
    y = {"samples": y_samples, "faces": y_faces, "extra": np.array([n for n in names for _ in range(args.extra_refs)])}
    pos = np.tile(np.arange(n_per), len(names))
    idx = {"dev": np.flatnonzero(pos < args.dev), "test": np.flatnonzero(pos >= args.dev)}

    energies = probe_all(args.zoo, names, sets, work, args.seed, args.workers)
    probe_seconds = time.perf_counter() - t_start

    # choose the cheap setting on the dev split only
    all_variants = variants()
    reference = all_variants[0]
    sig_ref = {s: signatures(reference, energies[(s, "K8")], args.seed) for s in ("samples", "faces")}
    ref_res = evaluate_setting(sig_ref, y, idx, names, args.seed)
    ref_combo = tuple(ref_res["unknown_origin"]["selected"].split("/"))
    scan = []
    for v in all_variants[1:]:
        sig_dev = signatures(v, energies[("samples", v["grid"])][idx["dev"]], args.seed)
        acc = cv_accuracy(sig_dev.reshape(len(sig_dev), -1), y_samples[idx["dev"]], *ref_combo, names, args.seed)
        scan.append({"name": v["name"], "calls": v["calls"], "dev_cv": acc})
    best = max(scan, key=lambda r: (r["dev_cv"], -r["calls"]))
    cheap = next(v for v in all_variants if v["name"] == best["name"])
    fast = next(v for v in all_variants if v["grid"] == "K4" and v["timesteps"] == (201, 1) and v["repeats"] == 2
                and v["log_energy"])
    settings = {"reference-5": reference, "cheap (dev-selected)": cheap, "fast preset": fast}
    results = {"reference-5": ref_res}
    for label in ("cheap (dev-selected)", "fast preset"):
        v = settings[label]
        results[label] = evaluate_setting({s: signatures(v, energies[(s, v["grid"])], args.seed) for s in ("samples", "faces")},
                                          y, idx, names, args.seed)

    def with_extra_refs(sig: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
        """Dev + extra references as the fitting split, the samples' test split as test."""
        merged = {"samples": np.concatenate([sig["samples"][idx["dev"]], sig["extra"], sig["samples"][idx["test"]]]),
                  "faces": sig["faces"]}
        y_merged = {"samples": np.concatenate([y_samples[idx["dev"]], y["extra"], y_samples[idx["test"]]]),
                    "faces": y_faces}
        n_ref = len(idx["dev"]) + len(y["extra"])
        return merged, y_merged, {"dev": np.arange(n_ref), "test": np.arange(n_ref, n_ref + len(idx["test"]))}

    # the cheap 4-ring probe can afford many more reference images: fit on dev + extra references
    k4 = max((r for r in scan if r["name"].startswith("K4")), key=lambda r: (r["dev_cv"], -r["calls"]))
    v = next(v for v in all_variants if v["name"] == k4["name"])
    label = f"cheap 4-ring (dev-selected), {args.dev}+{args.extra_refs} refs"
    settings[label] = v
    results[label] = evaluate_setting(
        *with_extra_refs({s: signatures(v, energies[(s, "K4")], args.seed) for s in ("samples", "faces", "extra")}),
        names, args.seed)

    # the training-free baseline: the denoising loss at the budgets of the SDS settings, chosen on dev
    loss_scan = []
    for v in loss_variants():
        sig_dev = loss_signatures(v, energies[("samples", "L")][idx["dev"]], args.seed)
        for f, c in LOSS_COMBOS:
            loss_scan.append({"name": v["name"], "calls": v["calls"], "classifier": c,
                              "dev_cv": cv_accuracy(sig_dev.reshape(len(sig_dev), -1), y_samples[idx["dev"]], f, c,
                                                    names, args.seed)})
    budgets = {"fast preset": fast["calls"], "cheap (dev-selected)": cheap["calls"],
               "loss grid": len(LOSS_GRID["timesteps"]) * LOSS_GRID["repeats"]}
    loss_results = {}
    for budget_label, budget in budgets.items():
        for kind, allowed in (("training-free lowest loss", ("lowest-loss",)),
                              ("loss + classifier", tuple(c for _, c in LOSS_COMBOS))):
            pool = [r for r in loss_scan if r["calls"] <= budget and r["classifier"] in allowed]
            pick = max(pool, key=lambda r: (r["dev_cv"], -r["calls"]))
            v = next(v for v in loss_variants() if v["name"] == pick["name"])
            label = f"denoising loss, {kind}, ≤ {budget} calls ({budget_label})"
            settings[label] = v
            sig = {s: loss_signatures(v, energies[(s, "L")], args.seed) for s in ("samples", "faces", "extra")}
            loss_results[label] = evaluate_setting(*with_extra_refs(sig), names, args.seed,
                                                   combos=[("concat", pick["classifier"])])
            loss_results[label]["unknown_origin"]["dev_cv"] = {f"concat/{pick['classifier']}": pick["dev_cv"]}
    results.update(loss_results)
    for label, r in results.items():
        uses_extra = label.startswith("cheap 4-ring") or label.startswith("denoising loss")
        r["refs_per_model"] = args.dev + (args.extra_refs if uses_extra else 0)

    # early exit: a cheap stage first, the reference only for the images it is unsure of (dev references only)
    flat = lambda sig: sig.reshape(len(sig), -1)  # noqa: E731
    stage_sets = {"fast preset": (flat(signatures(fast, energies[("samples", "K4")], args.seed)),
                                  results["fast preset"]["unknown_origin"]["selected"], fast["calls"])}
    free = next(k for k in loss_results if "training-free" in k and f"≤ {fast['calls']} calls" in k)
    stage_sets["denoising loss, training-free"] = (
        flat(loss_signatures(settings[free], energies[("samples", "L")], args.seed)), "concat/lowest-loss",
        settings[free]["calls"])
    final = (flat(sig_ref["samples"]), ref_res["unknown_origin"]["selected"], reference["calls"])
    cascades = {f"{name} → reference-5": evaluate_cascade([stage, final], y, idx, names, args.seed)
                for name, stage in stage_sets.items()}

    # baselines: same splits, same classifiers, chosen by the same dev CV
    from modelprint.probes import fit_pipeline, select_pipeline

    learned = load_method("learned")
    base = {}
    for kind in ("pixels", "fft", "learned"):
        feats = {s: baseline_features(im, kind, learned) for s, im in (("samples", samples), ("faces", face_images))}
        combos = [("concat", c) for c in ("prototype", "logreg", "svm")]
        chosen = select_pipeline(feats["samples"][idx["dev"]], y_samples[idx["dev"]], ["image"], combos, args.seed)
        pipe = fit_pipeline(feats["samples"][idx["dev"]], y_samples[idx["dev"]], chosen.features, chosen.classifier,
                            ["image"], args.seed)
        base[kind] = {"selected": chosen.classifier, "dev_cv": chosen.accuracy,
                      "in_domain": test_metrics(pipe, feats["samples"][idx["test"]], y_samples[idx["test"]], args.seed, names),
                      "cross_domain": test_metrics(pipe, feats["faces"], y_faces, args.seed, names)}

    # cost: real probes through all candidates, timed here; the cut signatures must equal them
    torch.set_num_threads(2)
    candidates = {n: DiffusersCandidate.load(n, zoo=args.zoo, name=n) for n in names}
    timing_idx = idx["test"][:: max(1, len(idx["test"]) // args.timing_images)][: args.timing_images]
    cost = {}
    for label, v in settings.items():
        t0 = time.perf_counter()
        real = unknown_origin_signatures(real_probe(v, args.seed), candidates, samples[timing_idx])
        seconds = time.perf_counter() - t0
        from_grid = cut(v, energies[("samples", v["grid"])][timing_idx], args.seed)
        cost[label] = {"calls_per_image_per_candidate": v["calls"], "calls_per_image": v["calls"] * len(names),
                       "seconds_per_image": seconds / len(timing_idx),
                       "max_abs_diff_cut_vs_probed": float(np.abs(real - from_grid).max())}
    for label in cost:
        cost[label]["time_ratio_to_reference"] = cost[label]["seconds_per_image"] / cost["reference-5"]["seconds_per_image"]

    entries = zoo.entries()
    out = {"candidates": names, "candidate_sha256": {n: entries[n]["files"] for n in names}, "seed": args.seed,
           "dev_per_model": args.dev, "test_per_model": args.test,
           "extra_refs_per_model": args.extra_refs, "faces_per_model": args.faces, "sdedit_strength": args.strength,
           "grids": {**GRIDS, "L": LOSS_GRID},
           "settings": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()} for k, v in settings.items()},
           "results": results, "cascades": cascades, "baselines": base, "cost": cost,
           "cheap_scan_top": sorted(scan, key=lambda r: (-r["dev_cv"], r["calls"]))[:15],
           "loss_scan_top": sorted(loss_scan, key=lambda r: (-r["dev_cv"], r["calls"]))[:15],
           "reference_dev_cv": ref_res["unknown_origin"]["dev_cv"][ref_res["unknown_origin"]["selected"]],
           "probe_seconds": probe_seconds, "seconds": time.perf_counter() - t_start, "machine": machine()}
    write_result("probes_sds", out)
    plot(scan, loss_scan, out)
    report(out, args)


def plot(scan: list[dict], loss_scan: list[dict], out: dict) -> None:
    """Dev-CV accuracy against denoiser calls for every setting scanned, with the reported SDS ones marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modelprint.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    k4 = [r for r in scan if r["name"].startswith("K4")]
    k8 = [r for r in scan if r["name"].startswith("K8")]
    ax.scatter([r["calls"] for r in k8], [r["dev_cv"] for r in k8], s=10, alpha=0.4, label="8-ring settings")
    ax.scatter([r["calls"] for r in k4], [r["dev_cv"] for r in k4], s=10, alpha=0.4, marker="s", label="4-ring settings")
    free = [r for r in loss_scan if r["classifier"] == "lowest-loss"]
    ax.scatter([r["calls"] for r in free], [r["dev_cv"] for r in free], s=10, alpha=0.4, marker="x",
               label="denoising loss, training-free")
    for label, marker in (("reference-5", "*"), ("cheap (dev-selected)", "D"), ("fast preset", "^")):
        calls = out["cost"][label]["calls_per_image_per_candidate"]
        dev = out["reference_dev_cv"] if label == "reference-5" else next(r["dev_cv"] for r in scan if r["name"] == out["settings"][label]["name"])
        ax.scatter([calls], [dev], s=90, marker=marker, edgecolor="k", label=f"{label} (test {out['results'][label]['unknown_origin']['in_domain']['top1']:.2f})")
    ax.axvline(180, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("denoiser calls per image per candidate")
    ax.set_ylabel("unknown-origin accuracy (dev, 4-fold CV)")
    ax.set_title(f"SDS over {len(out['candidates'])} zoo diffusion models")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from common import RESULTS_DIR

    with atomic_path(RESULTS_DIR / "probes_sds.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def report(out: dict, args) -> None:
    n = len(out["candidates"])
    cmd = " ".join(["python benchmarks/bench_probes.py", *sys.argv[1:]])
    md = [f"## White-box attribution: Spectral Denoising Signatures (`{cmd}`)", "",
          f"{n} candidate diffusion models of the standard zoo ({', '.join(out['candidates'])}; `ldm` and "
          f"`ldm-cosine` share one autoencoder). Every image is probed through all {n} candidates. In-domain: each "
          f"model's own samples, {out['dev_per_model']} dev (all choices by 4-fold CV on dev) + "
          f"{out['test_per_model']} test per model. Cross-domain: {out['faces_per_model']} held-out faces redrawn by "
          f"every model (SDEdit strength {out['sdedit_strength']}), classified by the attributor fitted on the samples. "
          f"Cheap probes can afford more references: rows with {out['dev_per_model'] + out['extra_refs_per_model']} "
          f"references per model add {out['extra_refs_per_model']} further samples per model to the dev split. "
          f"Top-1 with 95% bootstrap interval; chance = {1 / n:.3f}.", "",
          "| setting | calls / image / candidate | protocol | refs / model | classifier (dev CV acc.) | in-domain top-1 | top-3 | MRR | cross-domain top-1 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for label, r in out["results"].items():
        calls = out["cost"][label]["calls_per_image_per_candidate"]
        for proto in ("unknown_origin", "true_model"):
            p = r[proto]
            i, c = p["in_domain"], p["cross_domain"]
            dev = p["dev_cv"].get(p["selected"], p["dev_cv"].get(f"concat/{p['selected']}"))
            md.append(f"| {label} | {calls} | {proto.replace('_', ' ')} | {r['refs_per_model']} | {p['selected']} ({dev:.3f}) | "
                      f"{fmt_ci(i['top1'], i['top1_ci'])} | {i['top3']:.3f} | {i['mrr']:.3f} | {fmt_ci(c['top1'], c['top1_ci'])} |")
    for kind, b in out["baselines"].items():
        i, c = b["in_domain"], b["cross_domain"]
        dev = b["dev_cv"][f"concat/{b['selected']}"]
        md.append(f"| baseline: {kind} | 0 | — | {out['dev_per_model']} | {b['selected']} ({dev:.3f}) | "
                  f"{fmt_ci(i['top1'], i['top1_ci'])} | {i['top3']:.3f} | {i['mrr']:.3f} | {fmt_ci(c['top1'], c['top1_ci'])} |")
    md += ["", "Early exit (`modelprint.probes.CascadeAttributor`): a cheap stage decides when its score margin reaches a "
           "threshold chosen on out-of-fold dev scores (the smallest at which the cascade loses no dev accuracy "
           "against the reference alone); the other images also go through reference-5. Dev references only.", "",
           "| cascade | margin | exit early | in-domain top-1 | mean calls / image / candidate | cheap alone | reference alone |",
           "|---|---|---|---|---|---|---|"]
    for label, c in out["cascades"].items():
        md.append(f"| {label} | {c['margin']:.3g} | {c['exit_early_fraction']:.2f} | {fmt_ci(c['top1'], c['top1_ci'])} | "
                  f"{c['mean_calls_per_image_per_candidate']:.0f} | {c['stage1_alone_top1']:.3f} | {c['stage2_alone_top1']:.3f} |")
    md += ["", "![accuracy against calls](results/probes_sds.png)", "",
           f"Cheap setting chosen on dev: `{out['settings']['cheap (dev-selected)']['name']}`. "
           "Cost through all candidates, measured in this run (seconds per image, 2 threads); the last column checks "
           "that a setting cut from a grid's per-repeat energies equals probing with it:", "",
           "| setting | calls / image (all candidates) | s / image | time vs reference | cut-vs-probed max diff |",
           "|---|---|---|---|---|"]
    for label, c in out["cost"].items():
        md.append(f"| {label} | {c['calls_per_image']} | {c['seconds_per_image']:.2f} | {c['time_ratio_to_reference']:.3f} | "
                  f"{c['max_abs_diff_cut_vs_probed']:.1e} |")
    update_readme_section("probes_sds", "\n".join(md))


if __name__ == "__main__":
    os.environ.setdefault("MODELPRINT_THREADS", "1")
    main()
