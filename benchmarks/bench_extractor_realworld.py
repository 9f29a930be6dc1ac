"""Zero-shot attribution on ../shared/realworld: the learned extractor vs the `spectral` baseline (same run),
sliding-window ablation, robustness to JPEG and resizing, and inference speed vs a reference-style pipeline.

Protocol as in bench_spectral_realworld.py: classes with ≥ 8 images, support 5, 95% bootstrap intervals, plus the
spread over 10 support draws. Robustness degrades *every* image of the set (as when a platform re-encodes all
uploads) and re-runs the protocol. Speed: images/s of embedding 512×512 images (residual + extractor), against
a reference-style pipeline timed in the same run: 17-layer 64-channel DnCNN with padding 0 and a ResNet-50
embedding, each applied to 9 windows of 128² (as the Model Synthesis reference code does), random weights.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn as nn

from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.evaluation import evaluate_embeddings
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg, resize
from modelprint.io.images import to_uint8
from modelprint.methods import load_method
from modelprint.seeding import seed_everything


def protocol(vectors: np.ndarray, labels: list[str], seed: int, support: int) -> dict:
    d = evaluate_embeddings(vectors, labels, support=support, pairs=2000, seed=seed).to_dict()
    accs = [evaluate_embeddings(vectors, labels, support=support, pairs=200, seed=s, n_boot=0).to_dict()["identification"]["accuracy"]
            for s in range(seed, seed + 10)]
    i, v = d["identification"], d["verification"]
    return {"identification_accuracy": i["accuracy"], "identification_accuracy_ci": i.get("accuracy_ci"),
            "macro_f1": i["macro_f1"], "accuracy_10_draws_mean": float(np.mean(accs)), "accuracy_10_draws_std": float(np.std(accs)),
            "verification_auc": v["auc"], "verification_auc_ci": v.get("auc_ci"), "eer": v["eer"],
            "verification_accuracy": v["accuracy"], "silhouette": d["clustering"].get("silhouette")}


def embed_all(method, images: list[np.ndarray], batch: int = 8) -> np.ndarray:
    return np.concatenate([method.embed(images[i : i + batch]) for i in range(0, len(images), batch)])


# --------------------------------------------------------------------------- reference-style pipeline (timing only)
class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet50() -> nn.Module:
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for mid, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(n):
            layers.append(Bottleneck(cin, mid, stride if b == 0 else 1))
            cin = mid * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def dncnn17() -> nn.Module:
    layers = [nn.Conv2d(3, 64, 3), nn.ReLU()]
    for _ in range(15):
        layers += [nn.Conv2d(64, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(64, 3, 3))


def reference_embed(img: np.ndarray, denoiser: nn.Module, encoder: nn.Module) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    h, w = img.shape[:2]
    starts_y = [0, (h - 128) // 2, h - 128]
    starts_x = [0, (w - 128) // 2, w - 128]
    wins = torch.cat([x[:, :, y : y + 128, xx : xx + 128] for y in starts_y for xx in starts_x]).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        r = denoiser(wins)
        spec = torch.fft.fft2(r).abs()
        spec = torch.nn.functional.interpolate(spec, size=(128, 128), mode="nearest")
        return encoder(spec.contiguous(memory_format=torch.channels_last)).mean(0).numpy()


def speed(method, seed: int, n: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    images = [rng.random((512, 512, 3), dtype=np.float32) for _ in range(n)]
    method.embed(images[:1])  # warm-up
    t0 = time.perf_counter()
    for im in images:
        method.embed([im])
    ours = n / (time.perf_counter() - t0)
    denoiser, encoder = dncnn17().eval().to(memory_format=torch.channels_last), resnet50().eval().to(memory_format=torch.channels_last)
    reference_embed(images[0], denoiser, encoder)
    t0 = time.perf_counter()
    for im in images[: max(3, n // 3)]:
        reference_embed(im, denoiser, encoder)
    ref = max(3, n // 3) / (time.perf_counter() - t0)
    return {"ours_images_per_s": ours, "reference_images_per_s": ref, "speedup": ours / ref,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "image_size": 512}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--weights", default=None, help="extractor weights (default: the shipped ones)")
    parser.add_argument("--quick", action="store_true", help="skip the 5×5-window variant, robustness and speed")
    args = parser.parse_args()
    seed_everything(args.seed)
    ds = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    images = [load_image(p) for p in ds.paths]
    labels = ds.labels
    learned = load_method("learned", weights=args.weights)
    methods = {"learned (3×3 windows)": learned,
               "learned (1 window)": load_method("learned", weights=args.weights, windows_per_side=1),
               "spectral baseline": load_method("spectral")}
    if not args.quick:
        methods["learned (5×5 windows)"] = load_method("learned", weights=args.weights, windows_per_side=5)
    out: dict = {"dataset": "shared/realworld, classes with >= 8 images", "n_classes": len(ds.classes), "n_images": len(ds),
                 "support": args.support, "seed": args.seed, "extractor": learned.tag, "clean": {}, "robustness": {}}
    for name, m in methods.items():
        t0 = time.perf_counter()
        out["clean"][name] = {**protocol(embed_all(m, images), labels, args.seed, args.support), "seconds": time.perf_counter() - t0}
        print(name, out["clean"][name]["identification_accuracy"], out["clean"][name]["verification_auc"], flush=True)
    if not args.quick:
        degradations = {f"jpeg q{q}": (lambda im, q=q: jpeg(to_uint8(im), q)) for q in (95, 75, 50)}
        degradations |= {f"resize {s}x": (lambda im, s=s: resize(to_uint8(im), s)) for s in (0.5, 0.75, 1.25, 1.5)}
        for dname, fn in degradations.items():
            degraded = []
            for im in images:
                d = fn(im).astype(np.float32) / 255.0
                degraded.append(d if min(d.shape[:2]) >= 32 else (resize(to_uint8(d), 32 / min(d.shape[:2])).astype(np.float32) / 255))
            out["robustness"][dname] = {name: protocol(embed_all(m, degraded), labels, args.seed, args.support)
                                        for name, m in (("learned", learned), ("spectral baseline", methods["spectral baseline"]))}
            print(dname, {k: round(v["identification_accuracy"], 3) for k, v in out["robustness"][dname].items()}, flush=True)
        out["speed"] = speed(learned, args.seed)
    out["machine"] = machine()
    path = write_result("extractor_realworld", out)
    rows = ["| method | identification acc. [95% CI] | mean ± sd, 10 support draws | macro-F1 | verification AUC [95% CI] | EER | verif. acc. |",
            "|---|---|---|---|---|---|---|"]
    for name, r in out["clean"].items():
        rows.append(f"| {name} | {fmt_ci(r['identification_accuracy'], r['identification_accuracy_ci'])} | "
                    f"{r['accuracy_10_draws_mean']:.3f} ± {r['accuracy_10_draws_std']:.3f} | {r['macro_f1']:.3f} | "
                    f"{fmt_ci(r['verification_auc'], r['verification_auc_ci'])} | {r['eer']:.3f} | {r['verification_accuracy']:.3f} |")
    md = (f"## Learned extractor on shared/realworld (`python benchmarks/bench_extractor_realworld.py --seed {args.seed}`)\n\n"
          f"{out['n_classes']} classes, {out['n_images']} images, support {args.support}, chance {1 / out['n_classes']:.3f}; "
          f"extractor `{learned.tag}`. Result: `{path.relative_to(path.parents[1])}`.\n\n" + "\n".join(rows) + "\n")
    if out["robustness"]:
        md += "\nRobustness (every image degraded; identification accuracy, support 5):\n\n| degradation | learned | spectral baseline |\n|---|---|---|\n"
        for dname, r in out["robustness"].items():
            md += f"| {dname} | {r['learned']['identification_accuracy']:.3f} | {r['spectral baseline']['identification_accuracy']:.3f} |\n"
    if "speed" in out:
        s = out["speed"]
        md += (f"\nSpeed at 512²: {s['ours_images_per_s']:.2f} images/s vs {s['reference_images_per_s']:.2f} for the reference-style "
               f"pipeline in the same run (**{s['speedup']:.1f}×**); peak RSS {s['peak_rss_mb']:.0f} MB; {out['machine']['threads']} threads.\n")
    update_readme_section("extractor_realworld", md)
    print(md)


if __name__ == "__main__":
    main()
