"""What JPEG/resize augmentation during extractor training buys: the shipped (augmented) extractor against its
twin trained without augmentation (same pool, recipe and seed: `modelprint train ... --no-augment`), on
../shared/realworld clean and with every image JPEG-compressed or resized. Same protocol as
bench_extractor_realworld.py (classes with ≥ 8 images, support 5, 95% bootstrap intervals).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench_extractor_realworld import embed_all, protocol
from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg, resize
from modelprint.io.images import to_uint8
from modelprint.methods import load_method
from modelprint.seeding import seed_everything

DEGRADATIONS = {"clean": None, "jpeg q95": ("jpeg", 95), "jpeg q75": ("jpeg", 75), "jpeg q50": ("jpeg", 50),
                "resize 0.5x": ("resize", 0.5), "resize 1.5x": ("resize", 1.5)}


def degrade(image: np.ndarray, how: tuple[str, float]) -> np.ndarray:
    kind, value = how
    d = (jpeg(to_uint8(image), int(value)) if kind == "jpeg" else resize(to_uint8(image), value)).astype(np.float32) / 255
    return d if min(d.shape[:2]) >= 32 else resize(to_uint8(d), 32 / min(d.shape[:2])).astype(np.float32) / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--noaug", type=Path, required=True, help="extractor weights trained with --no-augment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    args = parser.parse_args()
    seed_everything(args.seed)
    ds = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    images = [load_image(p) for p in ds.paths]
    methods = {"with augmentation (shipped)": load_method("learned"), "without augmentation": load_method("learned", weights=args.noaug)}
    sidecar = json.loads(args.noaug.with_suffix(".json").read_text())
    out: dict = {"n_classes": len(ds.classes), "n_images": len(ds), "support": args.support, "seed": args.seed,
                 "extractors": {k: m.tag for k, m in methods.items()}, "noaug_recipe": sidecar.get("recipe"), "results": {}}
    for dname, how in DEGRADATIONS.items():
        batch = images if how is None else [degrade(im, how) for im in images]
        out["results"][dname] = {k: protocol(embed_all(m, batch), ds.labels, args.seed, args.support) for k, m in methods.items()}
        print(dname, {k: round(v["identification_accuracy"], 3) for k, v in out["results"][dname].items()}, flush=True)
    out["machine"] = machine()
    path = write_result("augmentation", out)
    names = list(methods)
    rows = [f"| images | {names[0]}: identification [95% CI] | AUC | {names[1]}: identification [95% CI] | AUC |", "|---|---|---|---|---|"]
    for dname, r in out["results"].items():
        a, b = r[names[0]], r[names[1]]
        rows.append(f"| {dname} | {fmt_ci(a['identification_accuracy'], a['identification_accuracy_ci'])} | {a['verification_auc']:.3f} | "
                    f"{fmt_ci(b['identification_accuracy'], b['identification_accuracy_ci'])} | {b['verification_auc']:.3f} |")
    md = (f"## Training augmentation and robustness (`python benchmarks/bench_augmentation.py --noaug PATH --seed {args.seed}`)\n\n"
          f"The shipped extractor against its twin trained without JPEG/resize augmentation (same pool, recipe, seed; "
          f"held-out-architecture accuracy {sidecar.get('val_accuracy', float('nan')):.3f} at step {sidecar.get('step')}), "
          f"whole-image inference, {out['n_classes']} classes of `shared/realworld`, support {args.support}; every image "
          f"degraded. Result: `{path.relative_to(path.parents[1])}`.\n\n" + "\n".join(rows) + "\n")
    update_readme_section("augmentation", md)
    print(md)


if __name__ == "__main__":
    main()
