"""Zero-shot attribution on ../shared/realworld: the learned extractor vs the `spectral` baseline (same run),
inference variants (whole-image Welch region, 3×3 sliding windows, one window), the fused learned+spectral
method, robustness to JPEG and resizing, and inference speed vs a reference-style pipeline.

Protocol as in bench_spectral_realworld.py: classes with ≥ 8 images, support 5, 95% bootstrap intervals, plus the
spread over 10 support draws. The inference variant is chosen on a random half of the classes and also reported
on the other half. Robustness degrades *every* image of the set (as when a platform re-encodes all uploads) and
re-runs the protocol. Speed: images/s of embedding 512×512 images (residual + extractor), against a
reference-style pipeline timed in the same run: 17-layer 64-channel DnCNN with padding 0 and a ResNet-50
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


def class_split(labels: list[str], seed: int) -> tuple[set[str], set[str]]:
    """Split the classes in two random halves: one to choose the inference variant on, one to report on."""
    classes = sorted(set(labels))
    chosen = set(np.random.default_rng(seed).permutation(classes)[: len(classes) // 2].tolist())
    return chosen, set(classes) - chosen


def subset_protocol(vectors: np.ndarray, labels: list[str], keep: set[str], seed: int, support: int) -> dict:
    idx = [i for i, lab in enumerate(labels) if lab in keep]
    return protocol(vectors[idx], [labels[i] for i in idx], seed, support)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--support", type=int, default=5)
    parser.add_argument("--weights", default=None, help="extractor weights (default: the shipped ones)")
    parser.add_argument("--quick", action="store_true", help="skip robustness and speed")
    args = parser.parse_args()
    seed_everything(args.seed)
    ds = Dataset.from_path(shared_dir() / "realworld" / "manifest.csv").with_min_count(8)
    images = [load_image(p) for p in ds.paths]
    labels = ds.labels
    spectral = load_method("spectral")
    variants = {"learned (whole image, one Welch region)": {"window": 0},
                "learned (3×3 windows of 128²)": {"window": None, "windows_per_side": 3},
                "learned (1 window of 128²)": {"window": None, "windows_per_side": 1}}
    views = {name: load_method("learned", weights=args.weights, **kw) for name, kw in variants.items()}
    views["spectral baseline"] = spectral
    select_on, report_on = class_split(labels, args.seed)
    out: dict = {"dataset": "shared/realworld, classes with >= 8 images", "n_classes": len(ds.classes), "n_images": len(ds),
                 "support": args.support, "seed": args.seed, "extractor": views[next(iter(variants))].tag,
                 "selection": {"select_on_classes": sorted(select_on), "report_on_classes": sorted(report_on)},
                 "clean": {}, "robustness": {}}
    vectors = {}
    for name, m in views.items():
        t0 = time.perf_counter()
        vectors[name] = embed_all(m, images)
        out["clean"][name] = {**protocol(vectors[name], labels, args.seed, args.support), "seconds": time.perf_counter() - t0}
        out["selection"][name] = {half: subset_protocol(vectors[name], labels, keep, args.seed, args.support)["identification_accuracy"]
                                  for half, keep in (("select_half", select_on), ("report_half", report_on))}
        print(name, out["clean"][name]["identification_accuracy"], out["clean"][name]["verification_auc"], out["selection"][name], flush=True)
    best = max(variants, key=lambda n: out["selection"][n]["select_half"])
    out["selection"]["chosen"] = best
    learned = views[best]
    fused = load_method("fused", params={"learned": {"weights": args.weights, **variants[best]}})
    out["fused"] = fused.tag
    fname = f"fused: {best.removeprefix('learned ')} learned + spectral, equal weights"
    fused_vectors = fused.combine([vectors[best], vectors["spectral baseline"]])
    out["clean"][fname] = protocol(fused_vectors, labels, args.seed, args.support)
    out["selection"][fname] = {half: subset_protocol(fused_vectors, labels, keep, args.seed, args.support)["identification_accuracy"]
                               for half, keep in (("select_half", select_on), ("report_half", report_on))}
    print(fname, out["clean"][fname]["identification_accuracy"], out["clean"][fname]["verification_auc"], flush=True)
    if not args.quick:
        degradations = {f"jpeg q{q}": (lambda im, q=q: jpeg(to_uint8(im), q)) for q in (95, 75, 50)}
        degradations |= {f"resize {s}x": (lambda im, s=s: resize(to_uint8(im), s)) for s in (0.5, 1.5)}
        for dname, fn in degradations.items():
            degraded = []
            for im in images:
                d = fn(im).astype(np.float32) / 255.0
                degraded.append(d if min(d.shape[:2]) >= 32 else (resize(to_uint8(d), 32 / min(d.shape[:2])).astype(np.float32) / 255))
            v_learned, v_spectral = embed_all(learned, degraded), embed_all(spectral, degraded)
            out["robustness"][dname] = {"learned": protocol(v_learned, labels, args.seed, args.support),
                                        "spectral baseline": protocol(v_spectral, labels, args.seed, args.support),
                                        "fused": protocol(fused.combine([v_learned, v_spectral]), labels, args.seed, args.support)}
            print(dname, {k: round(v["identification_accuracy"], 3) for k, v in out["robustness"][dname].items()}, flush=True)
        out["speed"] = {name: speed(views[name], args.seed) for name in (best, "learned (3×3 windows of 128²)")}
    out["machine"] = machine()
    path = write_result("extractor_realworld", out)
    rows = ["| method | identification acc. [95% CI] | mean ± sd, 10 support draws | macro-F1 | verification AUC [95% CI] | EER | verif. acc. | acc. on report half |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in out["clean"].items():
        rows.append(f"| {name} | {fmt_ci(r['identification_accuracy'], r['identification_accuracy_ci'])} | "
                    f"{r['accuracy_10_draws_mean']:.3f} ± {r['accuracy_10_draws_std']:.3f} | {r['macro_f1']:.3f} | "
                    f"{fmt_ci(r['verification_auc'], r['verification_auc_ci'])} | {r['eer']:.3f} | {r['verification_accuracy']:.3f} | "
                    f"{out['selection'][name]['report_half']:.3f} |")
    md = (f"## Learned extractor on shared/realworld (`python benchmarks/bench_extractor_realworld.py --seed {args.seed}`)\n\n"
          f"{out['n_classes']} classes, {out['n_images']} images, support {args.support}, chance {1 / out['n_classes']:.3f}; "
          f"extractor `{out['extractor']}`. Result: `{path.relative_to(path.parents[1])}`.\n\n" + "\n".join(rows) + "\n"
          f"\nThe inference variant is chosen by identification accuracy on a random half of the classes "
          f"({', '.join(sorted(select_on))}) and reported on the other half too (last column, {len(report_on)} classes): "
          f"chosen **{best}**.\n")
    if out["robustness"]:
        md += ("\nRobustness (every image degraded; identification accuracy, support 5):\n\n"
               f"| degradation | {best} | spectral baseline | fused |\n|---|---|---|---|\n")
        for dname, r in out["robustness"].items():
            md += (f"| {dname} | {r['learned']['identification_accuracy']:.3f} | {r['spectral baseline']['identification_accuracy']:.3f} "
                   f"| {r['fused']['identification_accuracy']:.3f} |\n")
    for name, s in out.get("speed", {}).items():
        md += (f"\nSpeed at 512², {name}: {s['ours_images_per_s']:.2f} images/s vs {s['reference_images_per_s']:.2f} for the "
               f"reference-style pipeline in the same run (**{s['speedup']:.1f}×**); peak RSS {s['peak_rss_mb']:.0f} MB; "
               f"{out['machine']['threads']} threads.\n")
    update_readme_section("extractor_realworld", md)
    print(md)


if __name__ == "__main__":
    main()
