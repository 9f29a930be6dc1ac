"""Do the extensions of the synthetic space (pixel shuffle, LeakyReLU/GELU/SiLU, group norm, 3 blocks) make the
pool more like real generators? FFD against ../shared/realworld, as in the paper's Table II.

For each extension, ``--per-family`` architectures that use it (the other five factors drawn at random from the
paper's space) are synthesized with the pool's recipe (seed 0). The comparison keeps the pool's size fixed: the
paper pool with N random models *replaced* by the extension's N models, against the paper pool with the same N
random models *dropped* (the control: fewer models alone change an FFD), each over ``--trials`` random draws.
An extension is kept when replacing lowers FFD by more than the draws' spread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import machine, shared_dir, update_readme_section, write_result
from modelprint.io.pool import cache_dir
from modelprint.synthesis.fidelity import pool_ffd, real_class_spectra, synthetic_spectra
from modelprint.synthesis.pool import synthesize_pool
from modelprint.synthesis.space import PAPER_SPACE, Architecture

FAMILIES = {"3 blocks": ("blocks", 3), "pixel shuffle": ("upsampling", "pixelshuffle"),
            "LeakyReLU": ("activation", "leakyrelu"), "GELU": ("activation", "gelu"), "SiLU": ("activation", "silu"),
            "group norm": ("norm", "group")}


def family_architectures(factor: str, value: object, n: int, rng: np.random.Generator) -> list[str]:
    archs: set[str] = set()
    while len(archs) < n:
        fields = {k: v[int(rng.integers(len(v)))] for k, v in PAPER_SPACE.items()}
        fields[factor] = value
        archs.add(Architecture(**fields).id)
    return sorted(archs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", type=Path, default=Path("out/pool"), help="the paper pool (576 models)")
    parser.add_argument("--per-family", type=int, default=40)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    families = {name: family_architectures(f, v, args.per_family, rng) for name, (f, v) in FAMILIES.items()}
    ext_pool = cache_dir() / "bench-extensions" / f"seed{args.seed}" / "pool"
    t0 = time.perf_counter()
    archs = sorted({a for ids in families.values() for a in ids})
    summary = synthesize_pool(ext_pool, archs, [0], workers=args.workers)
    synth_seconds = time.perf_counter() - t0
    real = np.stack(list(real_class_spectra(shared_dir() / "realworld", residual="highpass", seed=args.seed).values()))
    paper = synthetic_spectra(args.pool, residual="highpass", seed=args.seed)
    ext = synthetic_spectra(ext_pool, residual="highpass", seed=args.seed)
    paper_ids = sorted(paper)
    paper_matrix = np.stack([paper[i] for i in paper_ids])
    out: dict = {"paper_pool": str(args.pool), "n_paper": len(paper_ids), "per_family": args.per_family, "trials": args.trials,
                 "seed": args.seed, "real_classes": len(real), "residual": "highpass", "synthesis_seconds": synth_seconds,
                 "extension_models": summary.total, "ffd_paper_pool": pool_ffd(paper_matrix, real), "families": {}}
    for name, ids in list(families.items()) + [("all extensions", sorted({a for v in families.values() for a in v}))]:
        fam = np.stack([ext[f"{a}-s0"] for a in ids])
        n = len(ids)
        dropped, replaced = [], []
        for _ in range(args.trials):
            keep = np.sort(rng.choice(len(paper_ids), len(paper_ids) - n, replace=False))
            dropped.append(pool_ffd(paper_matrix[keep], real))
            replaced.append(pool_ffd(np.concatenate([paper_matrix[keep], fam]), real))
        d, r = np.array(dropped), np.array(replaced)
        diff = r - d
        out["families"][name] = {"n_models": n, "ffd_dropped_mean": float(d.mean()), "ffd_dropped_sd": float(d.std()),
                                 "ffd_replaced_mean": float(r.mean()), "ffd_replaced_sd": float(r.std()),
                                 "change_mean": float(diff.mean()), "change_sd": float(diff.std()),
                                 "keep": bool(diff.mean() + diff.std() < 0)}
        print(name, out["families"][name], flush=True)
    out["machine"] = machine()
    path = write_result("extensions", out)
    rows = ["| extension | models | FFD, N random dropped | FFD, replaced by the extension | change (mean ± sd) | keep |",
            "|---|---|---|---|---|---|"]
    for name, f in out["families"].items():
        rows.append(f"| {name} | {f['n_models']} | {f['ffd_dropped_mean']:.2f} ± {f['ffd_dropped_sd']:.2f} | "
                    f"{f['ffd_replaced_mean']:.2f} ± {f['ffd_replaced_sd']:.2f} | {f['change_mean']:+.2f} ± {f['change_sd']:.2f} | "
                    f"{'yes' if f['keep'] else 'no'} |")
    md = (f"## Extensions of the synthetic space (`python benchmarks/bench_extensions.py --seed {args.seed}`)\n\n"
          f"FFD (highpass residual, log10 radial spectra) of the {out['n_paper']}-model paper pool against "
          f"{out['real_classes']} generator classes of `shared/realworld`: {out['ffd_paper_pool']:.2f}. Each extension: "
          f"{args.per_family} architectures using it (other factors random from the paper space), seed 0, synthesized "
          f"with the pool recipe ({out['extension_models']} models, {synth_seconds / 60:.1f} min with {args.workers} workers). "
          f"Pool size held fixed: N random paper models dropped (control) vs replaced by the extension's N models, "
          f"{args.trials} draws. *Keep* = the change is below zero by more than its sd. Result: "
          f"`{path.relative_to(path.parents[1])}`.\n\n" + "\n".join(rows) + "\n")
    update_readme_section("extensions", md)
    print(md)


if __name__ == "__main__":
    main()
