"""Anonymization on the bundled demo set: untargeted PGD against the learned fingerprint at ε = 2, 4, 8 /255.

Gallery: the first 8 images of each of the 5 demo generators, enrolled with ``learned`` (and, for transfer, with
``spectral``). Queries: the other 8 images of each (40). Per ε: success of PGD (50 steps of ε/4, no random start)
over the queries the gallery attributed to their source, with a Wilson 95% interval; mean PSNR and SSIM; seconds
per image; the same for uniform noise filling the ε ball (random start, no step: the "plain perturbation"
control); transfer to ``spectral``; JPEG re-encoding and a re-fit as defences. Also the counterfactual attack
(toward the runner-up) and a targeted one at 4/255.

    .venv/bin/python benchmarks/bench_anonymize_demo.py --seed 0
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine, update_readme_section, write_result
from modelprint.api import enroll
from modelprint.causal.anonymize import Anonymizer, GalleryJudge
from modelprint.causal.transfer import GalleryAttributor, jpeg_defence, refit_defence, transfer_rates
from modelprint.gallery import Gallery
from modelprint.io import load_image
from modelprint.methods import load_method
from modelprint.seeding import seed_everything

DEMO = Path(__file__).resolve().parent.parent / "src" / "modelprint" / "demo" / "images"
ENROLLED = 8


def wilson(k: int, n: int) -> list[float]:
    """Wilson score 95% interval of ``k`` successes in ``n``."""
    if n == 0:
        return [math.nan, math.nan]
    p, z = k / n, 1.96
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]


def run_attack(judge: GalleryJudge, attack: Anonymizer, queries: list, sources: list[str]) -> dict:
    """One attack over ``queries`` (float images in [0, 1], or their files) with their ``sources``."""
    queries = [load_image(f) if isinstance(f, (str, Path)) else f for f in queries]
    results = [attack.attack(judge, im, src) for im, src in zip(queries, sources)]
    fair = [r for r in results if r.before.model == r.source]
    k = sum(r.success for r in fair)
    changed = [r for r in fair if math.isfinite(r.quality["psnr"])]
    return {"attributed_before": len(fair), "of": len(results), "success": k / max(1, len(fair)),
            "success_ci": wilson(k, len(fair)),
            "psnr": float(np.mean([r.quality["psnr"] for r in changed])) if changed else None,
            "min_psnr": float(np.min([r.quality["psnr"] for r in changed])) if changed else None,
            "ssim": float(np.mean([r.quality["ssim"] for r in fair])),
            "steps": float(np.mean([r.steps for r in fair])),
            "seconds_per_image": float(np.mean([r.seconds for r in results])),
            "_pixels": [r.pixels for r in fair], "_sources": [r.source for r in fair],
            "_originals": [np.rint(im * 255).astype(np.uint8)
                           for im, r in zip(queries, results) if r.before.model == r.source]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    seed_everything(args.seed)
    models = sorted(p.name for p in DEMO.iterdir() if p.is_dir())
    files = {m: sorted((DEMO / m).glob("*.png")) for m in models}
    queries = [f for m in models for f in files[m][ENROLLED:]]
    sources = [f.parent.name for f in queries]
    learned, spectral = load_method("learned"), load_method("spectral")
    rows, payload = [], {"benchmark": "anonymize_demo", "machine": machine(), "seed": args.seed,
                         "steps": args.steps, "models": models, "enrolled_per_model": ENROLLED, "by_epsilon": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, method in (("learned", learned), ("spectral", spectral)):
            with Gallery(Path(tmp) / f"{name}.sqlite") as g:
                for m in models:
                    enroll(g, m, files[m][:ENROLLED], method=method)
        with Gallery(Path(tmp) / "learned.sqlite") as g, Gallery(Path(tmp) / "spectral.sqlite") as s:
            judge = GalleryJudge(g, learned)
            attributors = {"learned (attacked)": GalleryAttributor(g, learned),
                           "spectral (transfer)": GalleryAttributor(s, spectral)}
            for e in (2, 4, 8):
                eps = e / 255
                start = time.perf_counter()
                pgd = run_attack(judge, Anonymizer(epsilon=eps, steps=args.steps, seed=args.seed), queries, sources)
                noise = run_attack(judge, Anonymizer(epsilon=eps, steps=0, random_start=True, seed=args.seed),
                                   queries, sources)
                fit = [i for i in range(len(pgd["_pixels"])) if i % 2 == 0]
                entry = {
                    "pgd": {k: v for k, v in pgd.items() if not k.startswith("_")},
                    "noise_control": {k: v for k, v in noise.items() if not k.startswith("_")},
                    "source_rates": transfer_rates(attributors, pgd["_originals"], pgd["_pixels"], pgd["_sources"]),
                    "jpeg_defence": jpeg_defence(attributors["learned (attacked)"], pgd["_pixels"], pgd["_sources"],
                                                 (95, 75, 50)),
                    "jpeg_originals": jpeg_defence(attributors["learned (attacked)"], pgd["_originals"],
                                                   pgd["_sources"], (95, 75, 50)),
                    "refit_defence": refit_defence(g, learned, pgd["_pixels"], pgd["_sources"], fit),
                    "wall_seconds": time.perf_counter() - start,
                }
                if e == 4:
                    cf = run_attack(judge, Anonymizer(epsilon=eps, steps=args.steps, mode="counterfactual"),
                                    queries, sources)
                    entry["counterfactual"] = {k: v for k, v in cf.items() if not k.startswith("_")}
                    targeted = [run_attack(judge, Anonymizer(epsilon=eps, steps=args.steps, mode="targeted",
                                                             target=models[(models.index(m) + 1) % len(models)]),
                                           [f for f, s in zip(queries, sources) if s == m], [m] * 8)
                                for m in models]
                    k = sum(round(t["success"] * t["attributed_before"]) for t in targeted)
                    n = sum(t["attributed_before"] for t in targeted)
                    entry["targeted_next_model"] = {"success": k / n, "success_ci": wilson(k, n), "n": n,
                                                    "psnr": float(np.mean([t["psnr"] for t in targeted])),
                                                    "steps": float(np.mean([t["steps"] for t in targeted]))}
                payload["by_epsilon"][f"{e}/255"] = entry
                p, n = entry["pgd"], entry["noise_control"]
                t = entry["source_rates"]["spectral (transfer)"]
                j, r, jo = entry["jpeg_defence"], entry["refit_defence"], entry["jpeg_originals"]
                rows.append(f"| {e}/255 | {p['success']:.2f} [{p['success_ci'][0]:.2f}, {p['success_ci'][1]:.2f}] "
                            f"({p['attributed_before']}) | {p['psnr']:.1f} (min {p['min_psnr']:.1f}) | {p['ssim']:.4f} "
                            f"| {p['steps']:.1f} | {p['seconds_per_image']:.2f} | {n['success']:.2f} at "
                            f"{n['psnr']:.1f} dB | {t['before']:.2f} → {t['after']:.2f} | {j[95]:.2f} / {j[75]:.2f} "
                            f"/ {j[50]:.2f} (originals {jo[95]:.2f} / {jo[75]:.2f} / {jo[50]:.2f}) | "
                            f"{r['before']:.2f} → {r['after']:.2f} |")
    path = write_result("anonymize_demo", payload)
    cf, tg = payload["by_epsilon"]["4/255"]["counterfactual"], payload["by_epsilon"]["4/255"]["targeted_next_model"]
    md = ("## Anonymization on the demo set (`python benchmarks/bench_anonymize_demo.py --seed 0`)\n\n"
          f"Gallery: {ENROLLED} images of each of the {len(models)} demo generators (`learned`); queries: the other "
          f"{len(queries)}. Untargeted PGD, ≤ {args.steps} steps of ε/4, no random start, stops when the source "
          "loses by 0.01 cosine and still loses on the 8-bit image; success = the gallery's own decision on the "
          "saved pixels, over the queries it attributed to their source before (count in brackets; Wilson 95% "
          "interval). Noise control: uniform noise filling the ε ball. Source rates: share of those queries "
          "attributed to their source (before → after). JPEG: source rate of the anonymized images re-encoded at "
          "quality 95 / 75 / 50 (in brackets the originals so re-encoded: what JPEG leaves of the fingerprint "
          "itself). Re-fit: half of the anonymized images enrolled under their source, the other half "
          f"identified (before → after). Result: `{path.relative_to(path.parents[1])}`.\n\n"
          "| ε | PGD success [95% CI] (n) | PSNR dB | SSIM | steps | s / image | noise control | spectral "
          "(transfer) | JPEG 95 / 75 / 50 | re-fit |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
          + f"\n\nCounterfactual (toward the runner-up's prototype) at 4/255: success {cf['success']:.2f} "
          f"[{cf['success_ci'][0]:.2f}, {cf['success_ci'][1]:.2f}], PSNR {cf['psnr']:.1f} dB, SSIM {cf['ssim']:.4f}, "
          f"{cf['seconds_per_image']:.2f} s / image. Targeted (each source toward the next model in name order) at "
          f"4/255: success {tg['success']:.2f} [{tg['success_ci'][0]:.2f}, {tg['success_ci'][1]:.2f}] "
          f"(n = {tg['n']}), PSNR {tg['psnr']:.1f} dB, {tg['steps']:.1f} steps; {machine()['threads']} torch "
          "threads.\n")
    update_readme_section("anonymize_demo", md)
    print(md)


if __name__ == "__main__":
    main()
