"""Scale-out of the synthetic pool build: the process pool against a local Ray cluster of 1 and 2 workers.

The same 96-model pool (48 architectures of the paper space, seeds 0 and 1, trained as groups of 2 seeds) is
built from scratch by each backend of :mod:`modelprint.executor`; wall time per backend, and whether every model's
weights sha256 equals the process pool's. Ray's wall time includes starting its local cluster.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, update_readme_section, write_result
from modelprint.executor import ProcessExecutor, RayExecutor
from modelprint.synthesis.pool import SynthesisSettings, read_manifest, synthesize_pool
from modelprint.synthesis.space import list_architectures


def build(name: str, workers: int, archs: list[str], settings: SynthesisSettings, root: Path) -> dict:
    import ray

    start = time.perf_counter()
    if name == "ray":
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ex = RayExecutor(workers)
    else:
        ex = ProcessExecutor(workers)
    try:
        summary = synthesize_pool(root / f"{name}-{workers}", archs, [0, 1], settings=settings,
                                  crop=settings.crop, max_steps=settings.max_steps, executor=ex)
    finally:
        if name == "ray":
            ray.shutdown()
    wall = time.perf_counter() - start
    digests = {k: r["sha256"] for k, r in read_manifest(root / f"{name}-{workers}").items()}
    print(name, workers, round(wall, 1), summary.trained, flush=True)
    return {"backend": name, "workers": workers, "wall_s": round(wall, 1), "models": summary.trained,
            "train_s": round(summary.seconds, 1), "sha256": digests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=48, help="Architectures (x 2 seeds).")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="Data seed of the training crops.")
    args = ap.parse_args()
    archs = list_architectures("paper")[:: 288 // args.archs][: args.archs]
    settings = SynthesisSettings(crop=32, max_steps=args.steps, train_crops=512, val_crops=32, data_seed=args.seed)
    settings.training_data()  # crops cached before any timing
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers in (("process", 2), ("ray", 1), ("ray", 2)):
            runs.append(build(name, workers, archs, settings, Path(tmp)))
    reference = runs[0]["sha256"]
    for r in runs:
        r["same_weights_as_process_pool"] = r["sha256"] == reference
        r["sha256"] = dict(sorted(r["sha256"].items())) if r is runs[0] else None
    res = {"models": 2 * len(archs), "settings": {"crop": 32, "max_steps": args.steps, "train_crops": 512,
                                                   "group_size": 2, "data_seed": args.seed},
           "machine": machine(), "runs": runs}
    path = write_result("ray", res)
    lines = [
        "## Scale-out of the synthetic pool on Ray (`python benchmarks/bench_ray.py --seed 0`)",
        "",
        f"{res['models']} synthetic generators (48 paper architectures × seeds 0, 1; 32² crops, at most {args.steps} "
        "steps each), built from scratch by each backend on this shared 2-core machine; Ray's time includes "
        "starting its local cluster.",
        "",
        "| backend | workers | wall s | models | same sha256 as the process pool |",
        "|---|---|---|---|---|",
        *[f"| {r['backend']} | {r['workers']} | {r['wall_s']} | {r['models']} | "
          f"{'yes' if r['same_weights_as_process_pool'] else 'NO'} |" for r in runs],
    ]
    update_readme_section("ray", "\n".join(lines))
    print(f"wrote {path} and the README section")


if __name__ == "__main__":
    main()
