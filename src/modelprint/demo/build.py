"""Build the bundled demo set: held-out real photos passed through small generators that modelprint trains.

Each generator is a synthetic auto-encoder from :mod:`modelprint.synthesis` trained to reconstruct real-pool
crops (train split); its images are held-out crops (holdout split, photos it never saw) passed through it and
saved as 8-bit PNG. A ``manifest.json`` records the recipe, seed, training statistics and every file's sha256.

Rebuild with ``python -m modelprint.demo.build --seed 0``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from modelprint.atomic import sha256_file, write_text
from modelprint.io.images import save_png
from modelprint.io.pool import RealPool

DEMO_SET_DIR = Path(__file__).resolve().parent / "images"

DEMO_GENERATORS = {
    "gen-nearest": "b1-c1-pre-up_nearest-act_relu-norm_batch",
    "gen-transposed": "b1-c2-pre-up_transposed-act_relu-norm_instance",
    "gen-bilinear": "b1-c1-pre-up_bilinear-act_tanh-norm_none",
    "gen-deep-transposed": "b2-c1-post-up_transposed-act_tanh-norm_batch",
    "gen-deep-nearest": "b2-c2-pre-up_nearest-act_relu-norm_batch",
}


def build_demo_set(out: Path = DEMO_SET_DIR, *, seed: int = 0, per_model: int = 16, size: int = 96, steps: int = 600) -> dict:
    import torch

    from modelprint.synthesis import Architecture
    from modelprint.synthesis.train import apply_generator, train_generator

    torch.manual_seed(seed)
    pool = RealPool()
    train_crops = pool.crops(2000, size=64, seed=seed, split="train")
    inputs = pool.crops(per_model * len(DEMO_GENERATORS), size=size, seed=seed + 1, split="holdout")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest: dict = {"seed": seed, "size": size, "per_model": per_model, "generators": {}}
    for g, (name, arch_id) in enumerate(DEMO_GENERATORS.items()):
        model, stats = train_generator(Architecture.parse(arch_id), train_crops, seed=seed + g, max_steps=steps)
        chunk = inputs[g * per_model : (g + 1) * per_model]  # each generator sees different content
        images = apply_generator(model, chunk)
        files = {}
        for i, img in enumerate(images):
            path = tmp / name / f"{name}_{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(path, img)
            files[path.name] = sha256_file(path)
        manifest["generators"][name] = {"architecture": arch_id, **vars(stats), "files": files}
    write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEMO_SET_DIR)
    args = parser.parse_args()
    print(json.dumps(build_demo_set(args.out, seed=args.seed), indent=1)[:2000])
