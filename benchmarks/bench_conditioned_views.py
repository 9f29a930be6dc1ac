"""Content-conditioned DIRE residual features: do they carry less content than the causal views? (issue 14)

The causal views leak the content id far above chance (bench_causal's leakage table), and no projection fitted on
modelprint's pairs removes it for unseen models (bench_decouplers). This asks whether the residual *itself*, read
conditioned on the content, does better: each image's DIRE residual (the shipped reconstructor, bench_causal's
tiles) is summarised given the local image structure, so that how much texture an image shows should matter less:

- ``grad``: mean log residual per channel in 7 bins of local gradient magnitude, and the slope and intercept of
  log residual on log gradient;
- ``grad-rel``: the same bins relative to their mean over bins (scale-free);
- ``flat``: log-residual mean, spread and quantiles over the flattest quarter of the pixels;
- ``flat-spec``: the log band energies (8 rings × 4 sectors) of the residual divided by the local gradient, each
  relative to its channel's mean;
- ``chan``: correlations between the channels' log residuals and their levels relative to the mean.

Measured as in bench_causal, on its split and caches: zoo identification (test classes, support 10), real-world
identification (support 5), and on the held-out contents of the pair images, content leakage (leave one model out;
chance 1/8) and model identification by prototype, for the pair models and for the test classes.

    python benchmarks/bench_conditioned_views.py --zoo out/zoo --seed 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_causal import pair_set, realworld_data, split_models, zoo_data
from scipy import ndimage

from bench_extractor_realworld import protocol
from common import machine, shared_dir, update_readme_section, write_result
from modelprint.causal.invariance import content_leakage, identification, split_contents
from modelprint.causal.pairs import REAL
from modelprint.methods import load_method
from modelprint.seeding import configure_torch_threads, seed_everything

GRAD_EDGES = np.array([0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, np.inf])


def gradient(tiles: np.ndarray) -> np.ndarray:
    """Local luminance gradient magnitude ``(k, t, t)`` of tiles ``(k, t, t, 3)`` in [0, 1] (Sobel, 3×3 mean)."""
    y = tiles @ np.array([0.299, 0.587, 0.114])
    g = np.hypot(ndimage.sobel(y, axis=2, mode="reflect"), ndimage.sobel(y, axis=1, mode="reflect")) / 8
    return ndimage.uniform_filter(g, size=(1, 3, 3))


def feat_grad(tiles: np.ndarray, res: np.ndarray) -> np.ndarray:
    g, lr = gradient(tiles), np.log(res + 1e-3)
    b = np.digitize(g, GRAD_EDGES) - 1
    whole = lr.reshape(-1, 3).mean(0)
    bins = [lr[b == k].mean(0) if (b == k).sum() > 8 else whole for k in range(len(GRAD_EDGES) - 1)]
    x = np.log(g + 0.005).ravel()
    coef = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), lr.reshape(-1, 3), rcond=None)[0]
    return np.concatenate([*bins, coef.ravel()])


def feat_grad_rel(tiles: np.ndarray, res: np.ndarray) -> np.ndarray:
    f = feat_grad(tiles, res)
    n = 3 * (len(GRAD_EDGES) - 1)
    bins = f[:n].reshape(-1, 3)
    return np.concatenate([(bins - bins.mean(0)).ravel(), f[n:]])


def feat_flat(tiles: np.ndarray, res: np.ndarray) -> np.ndarray:
    g, lr = gradient(tiles), np.log(res + 1e-3)
    m = g < np.quantile(g, 0.25)
    return np.concatenate([lr[m].mean(0), lr[m].std(0), np.quantile(res[m], [0.5, 0.9], axis=0).ravel()])


def feat_flat_spec(tiles: np.ndarray, res: np.ndarray) -> np.ndarray:
    rn = res / (gradient(tiles)[..., None] + 0.02)
    x = (rn / (rn.mean(axis=(1, 2), keepdims=True) + 1e-8)).transpose(0, 3, 1, 2)
    p = (np.abs(np.fft.rfft2(x - x.mean(axis=(2, 3), keepdims=True))) ** 2).mean(0)
    t = x.shape[-1]
    fy, fx = np.fft.fftfreq(t)[:, None], np.fft.rfftfreq(t)[None, :]
    ring = np.minimum((np.sqrt(fy**2 + fx**2) / np.sqrt(0.5) * 8).astype(int), 7)
    sector = np.minimum((np.mod(np.arctan2(fy, fx), np.pi) / np.pi * 4).astype(int), 3)
    band = ring * 4 + sector
    band[0, 0] = -1
    keep = band >= 0
    e = np.log(np.stack([np.bincount(band[keep], weights=c[keep], minlength=32) for c in p]) + 1e-8)
    return (e - e.mean(1, keepdims=True)).ravel()


def feat_chan(tiles: np.ndarray, res: np.ndarray) -> np.ndarray:
    lr = np.log(res.reshape(-1, 3) + 1e-3)
    return np.concatenate([np.corrcoef(lr.T)[np.triu_indices(3, 1)], lr.mean(0) - lr.mean()])


FEATURES = {"grad": feat_grad, "grad-rel": feat_grad_rel, "flat": feat_flat, "flat-spec": feat_flat_spec,
            "chan": feat_chan}


def standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    ap.add_argument("--workdir", type=Path, default=Path("out/bench-causal"), help="bench_causal's caches")
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seed_everything(args.seed)
    configure_torch_threads()
    t0 = time.perf_counter()
    view = load_method("dire-stats", max_tiles=args.tiles)
    entries, zval, ztest = zoo_data(args.zoo, [], 8, 24)
    test_classes, pair_models = split_models(entries, args.seed)
    redrawable = [n for n in entries if entries[n]["kind"] != "flow"]
    _, rtest = realworld_data(shared_dir() / "realworld", 2, 10, 256, 0)
    pair_args = argparse.Namespace(pair_photos=12, pair_faces=4, seed=args.seed)
    pimages, pcontents, _ = pair_set(args.zoo, redrawable, pair_args, args.workdir)
    held = split_contents(pcontents, 0.5, args.seed)

    def feats(name: str, by_label: dict) -> np.ndarray:
        rows = []
        for ims in by_label.values():
            floats = [x.astype(np.float32) / 255 for x in ims]
            for t, r in zip(view._tiles(floats), view.residuals(floats), strict=True):
                rows.append(FEATURES[name](t.astype(np.float64), r.astype(np.float64)))
        return np.stack(rows)

    zoo_test = {m: ztest[m] for m in test_classes}
    zl = [m for m, ims in zoo_test.items() for _ in ims]
    rl = [m for m, ims in rtest.items() for _ in ims]
    pm = np.asarray([m for m, ims in pimages.items() for _ in ims])
    pc = np.concatenate([pcontents for _ in pimages])
    groups = {"pair models": [*pair_models, REAL], "test classes": [m for m in test_classes if m in redrawable]}
    rows = {}
    for name in FEATURES:
        pe = feats(name, pimages)
        row = {"dim": int(pe.shape[1]),
               "zoo_identification": protocol(standardise(feats(name, zoo_test)), zl, args.seed, 10),
               "realworld_identification": protocol(standardise(feats(name, rtest)), rl, args.seed, 5)}
        for group, members in groups.items():
            mask = np.isin(pc, held) & np.isin(pm, members)
            row[group] = {"leakage": content_leakage(pe[mask], pm[mask], pc[mask], seed=args.seed),
                          "identification": identification(pe[mask], pm[mask], pc[mask], seed=args.seed)}
        rows[name] = row
        print(name, round(row["zoo_identification"]["identification_accuracy"], 3),
              {g: round(row[g]["leakage"]["accuracy"]["mean"], 3) for g in groups}, flush=True)
    result = {"benchmark": "conditioned_views", "machine": machine(), "seed": args.seed, "tiles": args.tiles,
              "test_classes": test_classes, "pair_models": pair_models, "held_out_contents": held.tolist(),
              "features": rows, "seconds": round(time.perf_counter() - t0, 1)}
    path = write_result("conditioned_views", result)
    update_readme_section("conditioned_views", readme(result, path))


def readme(r: dict, path: Path) -> str:
    chance = next(iter(r["features"].values()))["pair models"]["leakage"]["chance"]
    lines = ["## Content-conditioned residual features (`python benchmarks/bench_conditioned_views.py --zoo out/zoo "
             f"--seed {r['seed']}`)\n",
             f"`{path.relative_to(path.parents[1])}`. DIRE residuals of the shipped reconstructor (≤ {r['tiles']} "
             "tiles an image) summarised given local image structure (features in the script's docstring); "
             "bench_causal's split: zoo test classes (support 10), real world (support 5, centre 256²), leakage and "
             f"model identification (prototype) on the pair images of the held-out contents (chance {chance:.3f}). "
             f"Seed {r['seed']}; {r['seconds'] / 60:.0f} min.\n",
             "| features | dim | zoo identification [95% CI] | real-world identification | leakage, pair models "
             "(model id) | leakage, test classes (model id) |", "|---|---|---|---|---|---|"]
    for name, x in r["features"].items():
        z, w = x["zoo_identification"], x["realworld_identification"]
        cells = [f"{x[g]['leakage']['accuracy']['mean']:.3f} ({x[g]['identification']['prototype']['mean']:.3f})"
                 for g in ("pair models", "test classes")]
        ci = z["identification_accuracy_ci"]
        lines.append(f"| {name} | {x['dim']} | {z['identification_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                     f"{w['identification_accuracy']:.3f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
