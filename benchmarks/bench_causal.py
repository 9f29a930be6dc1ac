"""Causal fingerprints (issue 14) in one run: every view alone, equal and learned fusion, the decoupled fingerprint,
a JPEG format control, invariance and leakage, anonymization with transfer, and the cost of every residual and view.

**Zoo.** The generators of a built zoo (`--zoo`, `--models` to restrict; the shared autoencoder is not one), each
model's first `--val` samples a validation split (learned fusion weights are fit there and nowhere else) and the next
`--test` its test images (identification with `--support` support images, verification AUC, 95% bootstrap intervals
over queries). The models are split in two (ordered by family, then by a seeded hash; alternately): the **test
classes**, on which every method is evaluated, and the **pair models**, whose redrawings of shared contents
(:func:`modelprint.causal.pairs.build_pairs`: SDEdit for diffusion models, projection for GANs, decoding for VAEs)
train the decoupler. Flows cannot redraw content, so they are always test classes. The decoupler never sees a test
class, a test image, or a content of the invariance tables.

**Real-world** (`../shared/realworld`, classes with ≥ 8 images as in the other real-world benches, support 5): each
class's first `--rw-val` images (path order) are its validation split, the next ones (at most `--rw-cap` in all) its
test images; every image is centre-cropped to at most `--rw-crop` pixels a side (cost). Its decoupler is fit on the
zoo pairs only (all pair cells of all models that can redraw).

**Methods.** Views `learned`, `spectral`, `dire-stats`, `dire-fourier`, `dire-cnn` (DIRE views through the shipped
32² reconstruction model, at most `--tiles` tiles an image); `fused-equal` (all five, equal weights); `fused-learned`
(weights by :func:`modelprint.methods.fusion.fit_weights` on the validation split); `decoupled` (a
:class:`~modelprint.causal.decoupler.CausalDecoupler` on the five views' normalised embeddings concatenated: it
standardises every feature, so view weights do not matter to it) and `decoupled-learned` (the same on `learned`).

**Format control**: identification again with every image (pairs included) re-encoded as JPEG at `--jpeg`.
**Invariance and leakage** (:func:`modelprint.causal.invariance.invariance_report`): on pair images of contents held
out of the decoupler's fit (half, seeded), for the pair models and for the test classes that can redraw.
**Anonymization**: untargeted PGD (`--anon-steps`, ε/4 steps) against the equal-weight fused fingerprint (and the
learned fusion when it keeps a differentiable view) of a gallery of the test classes' validation images, on the
first `--anon-per-model` test images of each test class, at ε = 2, 4, 8 /255; views without gradients would be
held at the original's embedding (the DIRE views are attacked through their BPDA path); transfer: the same images
against a gallery of each view alone.
**Cost**: seconds per image of each view at 32² and 256² and of each reconstruction residual per 32² tile.

Embeddings, pairs and attack results are cached under `--workdir` (a killed run resumes; models added to the zoo
later are embedded alone). `--quick` runs all of it on a tiny zoo it builds (`results/causal-quick.json`, not the
benchmark).

    python benchmarks/bench_causal.py --zoo out/zoo --seed 0
    python benchmarks/bench_causal.py --quick
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_anonymize_demo import run_attack
from bench_views import VIEWS, costs, fuse

from bench_extractor_realworld import embed_all, protocol
from common import RESULTS_DIR, fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.atomic import write_bytes, write_text
from modelprint.causal.anonymize import Anonymizer, GalleryJudge
from modelprint.causal.decoupler import CausalDecoupler
from modelprint.causal.invariance import invariance_report, split_contents
from modelprint.causal.pairs import REAL, build_pairs, content_images
from modelprint.causal.transfer import GalleryAttributor, transfer_rates
from modelprint.gallery import Gallery
from modelprint.io import Dataset, load_image
from modelprint.io.degrade import jpeg
from modelprint.methods import load_method
from modelprint.methods.differentiable import why_not_differentiable
from modelprint.methods.fused import FusedMethod
from modelprint.methods.fusion import fit_weights
from modelprint.seeding import configure_torch_threads, seed_everything
from modelprint.zoo import Zoo

EPSILONS = (2, 4, 8)
TINY_MODELS = ["tiny-gan", "tiny-vae", "tiny-flow", "tiny-ddpm", "tiny-ldm", "tiny-ddpm-finetune", "tiny-ddpm-lora"]


def shown_path(path: Path) -> str:
    """``path`` as the results show it: relative to the working folder, or its last two parts (no machine paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(*path.parts[-2:]))


def u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def digest(images: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for x in images:
        h.update(repr(x.shape).encode() + x.tobytes())
    return h.hexdigest()[:16]


class Embeddings:
    """Each view's embeddings of an image set, one ``.npz`` per (view version, set name, images' digest)."""

    def __init__(self, root: Path, methods: dict) -> None:
        self.root, self.methods = root, methods

    def __call__(self, view: str, name: str, images: list[np.ndarray]) -> np.ndarray:
        method = self.methods[view]
        tag = hashlib.sha256(method.version.encode()).hexdigest()[:10]
        path = self.root / "emb" / f"{view}-{tag}" / f"{name}-{digest(images)}.npz"
        if path.is_file():
            return np.load(path)["embeddings"]
        t0 = time.perf_counter()
        e = embed_all(method, [x.astype(np.float32) / 255.0 for x in images])
        buf = io.BytesIO()
        np.savez(buf, embeddings=e, seconds=time.perf_counter() - t0)
        write_bytes(path, buf.getvalue())
        return e

    def sets(self, name: str, by_label: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Every view's embeddings of ``by_label``'s images (label order), cached per label; label by label, every
        view in turn, so the DIRE views share a label's residuals (the process keeps a few hundred images' worth)."""
        per = {lab: {v: self(v, f"{name}-{lab}", ims) for v in VIEWS} for lab, ims in by_label.items()}
        return {v: np.concatenate([per[lab][v] for lab in by_label]) for v in VIEWS}


def encode(by_label: dict[str, list[np.ndarray]], quality: int | None) -> dict[str, list[np.ndarray]]:
    return by_label if quality is None else {k: [jpeg(x, quality) for x in v] for k, v in by_label.items()}


# ----------------------------------------------------------------------------------------------------------- data
def zoo_data(root: Path, only: list[str], n_val: int, n_test: int) -> tuple[dict, dict, dict]:
    """Zoo generators' manifest entries, validation and test images (uint8), in name order."""
    zoo = Zoo(root)
    entries = {n: e for n, e in sorted(zoo.entries().items()) if e["kind"] != "autoencoder" and (not only or n in only)}
    val, test = {}, {}
    for name in entries:
        images = [u8(load_image(p)) for p in sorted(zoo.samples_dir(name).glob("*.png"))[: n_val + n_test]]
        val[name], test[name] = images[:n_val], images[n_val:]
    return entries, val, test


def split_models(entries: dict, seed: int) -> tuple[list[str], list[str]]:
    """(test classes, pair models): the models that can redraw, ordered by family then a seeded hash, alternately a
    test class and a pair model (the first a test class), so a family of several falls on both sides; flows are
    test classes."""
    order = sorted((n for n, e in entries.items() if e["kind"] != "flow"),
                   key=lambda n: (entries[n]["family"], hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()))
    pairs = order[1::2]
    return sorted(n for n in entries if n not in pairs), sorted(pairs)


def realworld_data(folder: Path, n_val: int, cap: int, crop: int, max_classes: int) -> tuple[dict, dict]:
    ds = Dataset.from_path(folder / "manifest.csv").with_min_count(8)
    val, test = {}, {}
    for label in ds.classes[: max_classes or None]:
        paths = sorted(s.path for s in ds if s.label == label)[:cap]
        images = []
        for p in paths:
            x = u8(load_image(p))
            h, w = x.shape[:2]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            images.append(np.ascontiguousarray(x[top:top + crop, left:left + crop]))
        val[label], test[label] = images[:n_val], images[n_val:]
    return val, test


def pair_set(zoo: Path, models: list[str], args: argparse.Namespace, work: Path) -> tuple[dict, np.ndarray,
                                                                                           np.ndarray]:
    """Pair images by model (the contents themselves as ``real``) and their content ids, one cache per model."""
    images, contents = {}, None
    for name in models:
        p = build_pairs(zoo, [name], n_photos=args.pair_photos, n_faces=args.pair_faces, include_real=False,
                        seed=args.seed, cache=work / "pairs" / f"{name}.npz")
        images[name], contents = list(p.images), p.contents
    size = next(iter(images.values()))[0].shape[0]
    images[REAL] = list(content_images(args.pair_photos, args.pair_faces, size=size, seed=args.seed)[0])
    return images, np.asarray(contents), np.asarray(contents)


# ------------------------------------------------------------------------------------------------------ evaluation
def features(emb: dict[str, np.ndarray], base: str) -> np.ndarray:
    return fuse([emb[v] for v in VIEWS], [1.0] * len(VIEWS)) if base == "fused" else emb[base]


def fit_decouplers(emb: dict[str, np.ndarray], models: np.ndarray, contents: np.ndarray, keep: np.ndarray,
                   args: argparse.Namespace) -> dict[str, CausalDecoupler]:
    return {name: CausalDecoupler(epochs=args.decoupler_epochs, seed=args.seed).fit(
        features(emb, base)[keep], models[keep], contents[keep])
        for name, base in (("decoupled", "fused"), ("decoupled-learned", "learned"))}


BASES = {"decoupled": "fused", "decoupled-learned": "learned"}


def evaluate(ev: dict, et: dict, lv: list[str], lt: list[str], decouplers: dict, support: int, seed: int) -> dict:
    rows = {v: protocol(et[v], lt, seed, support) for v in VIEWS}
    rows["fused-equal"] = protocol(fuse([et[v] for v in VIEWS], [1.0] * len(VIEWS)), lt, seed, support)
    fit = fit_weights([ev[v] for v in VIEWS], lv, resolution=0.1)
    rows["fused-learned"] = protocol(fuse([et[v] for v in VIEWS], list(fit.weights)), lt, seed, support)
    for name, dec in decouplers.items():
        rows[name] = protocol(dec.transform(features(et, BASES[name])), lt, seed, support)
    best = max(VIEWS, key=lambda v: rows[v]["identification_accuracy"])
    gain = rows["decoupled"]["identification_accuracy"] - rows[best]["identification_accuracy"]
    return {"classes": sorted(set(lt)), "val_images": len(lv), "test_images": len(lt), "support": support,
            "learned_weights": dict(zip(VIEWS, fit.weights, strict=True)), "fusion_fit": fit.to_dict(),
            "results": rows, "target": {"best_single_view": best, "decoupled_minus_best": gain, "met": gain >= 0.05}}


def labels_of(by_label: dict) -> list[str]:
    return [k for k, ims in by_label.items() for _ in ims]


def invariance(emb: dict, models: np.ndarray, contents: np.ndarray, held: np.ndarray, groups: dict,
               decouplers: dict, n_boot: int, seed: int) -> dict:
    out = {}
    for group, members in groups.items():
        mask = held & np.isin(models, members)
        if len(np.unique(models[mask])) < 2:
            out[group] = {"skipped": f"fewer than 2 models ({', '.join(members)})"}
            continue
        args = (models[mask], contents[mask])
        reports = {f"raw {v}": invariance_report(emb[v][mask], *args, n_boot=n_boot, seed=seed) for v in VIEWS}
        reports["raw fused (all five)"] = invariance_report(features(emb, "fused")[mask], *args, n_boot=n_boot,
                                                            seed=seed)
        for name, dec in decouplers.items():
            reports[name] = invariance_report(dec.transform(features(emb, BASES[name])[mask]), *args,
                                              n_boot=n_boot, seed=seed)
        chance = reports["decoupled"]["leakage"]["chance"]
        leak = reports["decoupled"]["leakage"]["accuracy"]["mean"]
        out[group] = {"models": sorted(set(models[mask].tolist())), "reports": reports,
                      "target": {"decoupled_leakage": leak, "chance": chance, "met": abs(leak - chance) <= 0.05}}
    return out


# --------------------------------------------------------------------------------------------------- anonymization
def anonymize(methods: dict, store: Embeddings, val: dict, test: dict, weights: tuple, entries: dict,
              args: argparse.Namespace, work: Path) -> dict:
    targets = {"fused-equal": [(v, 1.0) for v in VIEWS]}
    kept = [(v, w) for v, w in zip(VIEWS, weights, strict=True) if w > 0]
    if any(why_not_differentiable(methods[v]) is None for v, _ in kept):
        targets["fused-learned"] = kept
    params = {v: methods[v].get_params() for v in VIEWS}
    queries = [x.astype(np.float32) / 255 for m in test for x in test[m][: args.anon_per_model]]
    sources = [m for m in test for _ in test[m][: args.anon_per_model]]
    val_emb = {v: {m: store(v, f"zoo-clean-val-{m}", val[m]) for m in val} for v in VIEWS}
    out = {"queries": len(queries), "steps": args.anon_steps, "targets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        galleries = {}
        for v in VIEWS:
            galleries[v] = Gallery(Path(tmp) / f"{v}.sqlite")
            enroll(galleries[v], methods[v], val_emb[v], val)
        attributors = {v: GalleryAttributor(g, methods[v]) for v, g in galleries.items()}
        probe = white_box_probe(args.zoo, entries, val, args.seed)
        out["probe"] = None if probe is None else {"candidates": list(probe.candidates), "probe": "SpectralProbe (1 "
                                                   "step, default)", "classifier": probe.classifier}
        for tname, views in targets.items():
            fused = FusedMethod(views=views, params={v: params[v] for v, _ in views})
            held = [v for v, _ in views if why_not_differentiable(methods[v])]
            entry = {"views": dict(views), "held_views": held, "version": fused.version, "by_epsilon": {}}
            with Gallery(Path(tmp) / f"{tname}.sqlite") as g:
                enroll(g, fused, {m: fused.combine([val_emb[v][m] for v, _ in views]) for m in val}, val)
                judge = GalleryJudge(g, fused)
                for e in EPSILONS:
                    key = hashlib.sha256(json.dumps([fused.version, held, e, args.anon_steps, args.seed,
                                                     digest([u8(q) for q in queries])]).encode()).hexdigest()[:12]
                    path = work / "anon" / f"{tname}-{e}-{key}.json"
                    if not path.is_file():
                        t0 = time.perf_counter()
                        pgd = run_attack(judge, Anonymizer(epsilon=e / 255, steps=args.anon_steps, seed=args.seed),
                                         queries, sources)
                        rec = {k: v for k, v in pgd.items() if not k.startswith("_")}
                        rec["transfer"] = transfer_rates(attributors, pgd["_originals"], pgd["_pixels"],
                                                         pgd["_sources"]) if pgd["_pixels"] else {}
                        rec["wall_seconds"] = time.perf_counter() - t0
                        buf = io.BytesIO()
                        np.savez(buf, pixels=np.stack(pgd["_pixels"] or [np.zeros((0,))]),
                                 originals=np.stack(pgd["_originals"] or [np.zeros((0,))]),
                                 sources=np.asarray(pgd["_sources"], dtype=str))
                        write_bytes(path.with_suffix(".npz"), buf.getvalue())
                        write_text(path, json.dumps(rec, indent=1))
                    rec = json.loads(path.read_text())
                    if probe is not None:
                        rec["transfer"] |= probe_transfer(probe, path.with_suffix(".npz"))
                    rec["meets_target"] = bool(rec["success"] >= 0.9 and (rec["psnr"] or 0) >= 40)
                    entry["by_epsilon"][f"{e}/255"] = rec
                    print(f"anonymize {tname} {e}/255: success {rec['success']:.2f} psnr {rec['psnr']}", flush=True)
            entry["target_met"] = any(r["meets_target"] for r in entry["by_epsilon"].values())
            out["targets"][tname] = entry
        for g in galleries.values():
            g.close()
    return out


def white_box_probe(zoo: Path, entries: dict, val: dict, seed: int):  # noqa: ANN201
    """A :class:`~modelprint.probes.ProbeAttributor` over the diffusion test classes (candidates = those models),
    fit on their validation images; ``None`` with fewer than 2 diffusion test classes."""
    from modelprint.probes import ProbeAttributor
    from modelprint.probes.workflow import load_candidates

    names = [m for m in val if entries[m]["kind"] == "diffusion"]
    if len(names) < 2:
        return None
    candidates = load_candidates([f"{m}={m}" for m in names], zoo=zoo)
    return ProbeAttributor(candidates, seed=seed).fit(np.stack([x for m in names for x in val[m]]),
                                                      [m for m in names for _ in val[m]])


def probe_transfer(probe, path: Path) -> dict:  # noqa: ANN001
    """The probe's source rate before and after on the anonymized images (cached beside ``path``) whose source is
    one of its candidates."""
    cache = path.with_suffix(".probe.json")
    if not cache.is_file():
        z = np.load(path)
        keep = np.isin(z["sources"], list(probe.candidates))
        rates = transfer_rates({"p": probe}, list(z["originals"][keep]), list(z["pixels"][keep]),
                               list(z["sources"][keep]))["p"] if keep.any() else None
        write_text(cache, json.dumps({} if rates is None else
                                     {"probe (white-box; diffusion sources only)": rates | {"n": int(keep.sum())}}))
    return json.loads(cache.read_text())


def enroll(gallery: Gallery, method, vectors: dict[str, np.ndarray], images: dict[str, list[np.ndarray]]) -> None:  # noqa: ANN001
    for m, vec in vectors.items():
        hashes = [hashlib.sha256(x.tobytes()).hexdigest() for x in images[m]]
        gallery.add_embeddings(m, np.asarray(vec, dtype=np.float32), hashes, [f"{m}:{h[:12]}" for h in hashes],
                               method.name, method.version)


def residual_costs(methods: dict, zoo: Path, entries: dict, seed: int) -> dict:
    """Seconds per 32² tile of each reconstruction residual (3 fresh tiles after a warm-up)."""
    from modelprint.causal.reconstruction import AutoencoderReconstruction, DireReconstruction, OneStepReconstruction

    view = methods["dire-stats"]
    x = np.random.default_rng(seed).integers(0, 256, (4, view.tile, view.tile, 3), dtype=np.uint8)
    runs = {f"dire ({view.steps} DDIM steps each way)": (DireReconstruction(steps=view.steps, tile=view.tile),
                                                         view.candidate),
            "one-step": (OneStepReconstruction(fraction=view.fraction, tile=view.tile), view.candidate)}
    ldm = next((n for n, e in entries.items() if e["family"] == "ldm"), None)
    if ldm:
        runs[f"autoencoder ({ldm}'s AutoencoderKL)"] = (AutoencoderReconstruction(),
                                                        Zoo(zoo).load(ldm).diffusion.vae)
    out = {}
    for name, (rec, model) in runs.items():
        rec.residuals(model, x[:1])
        t0 = time.perf_counter()
        for i in range(1, 4):
            rec.residuals(model, x[i:i + 1])
        out[name] = round((time.perf_counter() - t0) / 3, 4)
    return out


# ------------------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    ap.add_argument("--models", default="", help="comma-separated zoo models (default: all generators)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run on a tiny zoo; not the benchmark")
    ap.add_argument("--val", type=int, default=8)
    ap.add_argument("--test", type=int, default=24)
    ap.add_argument("--support", type=int, default=10)
    ap.add_argument("--realworld", type=Path, default=None)
    ap.add_argument("--rw-val", type=int, default=2)
    ap.add_argument("--rw-cap", type=int, default=12)
    ap.add_argument("--rw-crop", type=int, default=256)
    ap.add_argument("--rw-classes", type=int, default=0, help="at most this many classes (0: all)")
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--jpeg", type=int, default=90)
    ap.add_argument("--pair-photos", type=int, default=12)
    ap.add_argument("--pair-faces", type=int, default=4)
    ap.add_argument("--decoupler-epochs", type=int, default=200)
    ap.add_argument("--anon-per-model", type=int, default=4)
    ap.add_argument("--anon-steps", type=int, default=50)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--readme-only", action="store_true", help="rewrite the README section from results/causal.json")
    args = ap.parse_args()
    if args.readme_only:
        update_readme_section("causal", readme(json.loads((RESULTS_DIR / "causal.json").read_text())))
        return
    if args.quick:
        args.workdir = args.workdir or Path("out/bench-causal/quick")
        args.zoo = args.workdir / "zoo"
        args.val, args.test, args.support = 4, 10, 3
        args.rw_cap, args.rw_crop, args.rw_classes, args.tiles = 8, 64, 4, 1
        args.pair_photos, args.pair_faces, args.decoupler_epochs = 6, 2, 60
        args.anon_per_model, args.anon_steps, args.n_boot = 2, 20, 100
    args.workdir = args.workdir or Path("out/bench-causal")
    seed_everything(args.seed)
    configure_torch_threads()
    t_start = time.perf_counter()
    if args.quick:
        from modelprint.zoo.build import build_zoo

        build_zoo(args.zoo, tier="tiny", only=TINY_MODELS, n_samples=args.val + args.test, seed=args.seed)
    methods = {v: load_method(v, **({"max_tiles": args.tiles} if v.startswith("dire") else {})) for v in VIEWS}
    store = Embeddings(args.workdir, methods)
    entries, zval, ztest = zoo_data(args.zoo, [m for m in args.models.split(",") if m], args.val, args.test)
    test_classes, pair_models = split_models(entries, args.seed)
    redrawable = [n for n in entries if entries[n]["kind"] != "flow"]
    rw_folder = args.realworld or shared_dir() / "realworld"
    rval, rtest = realworld_data(rw_folder, args.rw_val, args.rw_cap, args.rw_crop, args.rw_classes)
    print(f"zoo: test classes {test_classes}; pair models {pair_models}; real-world: {len(rval)} classes", flush=True)

    pimages, pcontents, _ = pair_set(args.zoo, redrawable, args, args.workdir)
    held = split_contents(pcontents, 0.5, args.seed)
    result = {"benchmark": "causal" + ("-quick (smoke run on a tiny zoo: NOT the benchmark)" if args.quick else ""),
              "machine": machine(),
              "settings": {k: shown_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "versions": {v: m.tag for v, m in methods.items()},
              "zoo": {"models": list(entries), "test_classes": test_classes, "pair_models": pair_models,
                      "split": "models ordered by family then seeded hash, alternately test class / pair model; "
                               "flows: test",
                      "held_out_contents": held.tolist(), "contents": int(len(np.unique(pcontents))),
                      "model_files": {n: entries[n]["files"] for n in entries}},
              "realworld": {"classes": list(rval), "crop": args.rw_crop}, "conditions": {}}
    for cond, quality in (("clean", None), (f"jpeg{args.jpeg}", args.jpeg)):
        t0 = time.perf_counter()
        pe = store.sets(f"pairs-{cond}", encode(pimages, quality))
        pm = np.asarray([m for m, ims in pimages.items() for _ in ims])
        pc = np.concatenate([pcontents for _ in pimages])
        is_held = np.isin(pc, held)
        dec_zoo = fit_decouplers(pe, pm, pc, ~is_held & np.isin(pm, [*pair_models, REAL]), args)
        dec_rw = fit_decouplers(pe, pm, pc, np.ones(len(pm), dtype=bool), args)
        zv, zt = encode({m: zval[m] for m in test_classes}, quality), encode({m: ztest[m] for m in test_classes},
                                                                             quality)
        zoo_row = evaluate(store.sets(f"zoo-{cond}-val", zv), store.sets(f"zoo-{cond}-test", zt), labels_of(zv),
                           labels_of(zt), dec_zoo, args.support, args.seed)
        print(cond, "zoo", {k: round(r["identification_accuracy"], 3) for k, r in zoo_row["results"].items()},
              flush=True)
        rv, rt = encode(rval, quality), encode(rtest, quality)
        rw_row = evaluate(store.sets(f"rw-{cond}-val", rv), store.sets(f"rw-{cond}-test", rt), labels_of(rv),
                          labels_of(rt), dec_rw, 5, args.seed)
        print(cond, "realworld", {k: round(r["identification_accuracy"], 3) for k, r in rw_row["results"].items()},
              flush=True)
        groups = {"pair models (seen by the decoupler), held-out contents": [*pair_models, REAL],
                  "test classes (unseen by the decoupler), held-out contents": [m for m in test_classes
                                                                                 if m in redrawable]}
        entry = {"zoo": zoo_row, "realworld": rw_row,
                 "decouplers": {"zoo": {k: {"best_epoch": d.best_epoch_, "images": int((~is_held & np.isin(
                     pm, [*pair_models, REAL])).sum())} for k, d in dec_zoo.items()},
                                "realworld": {k: {"best_epoch": d.best_epoch_, "images": len(pm)}
                                              for k, d in dec_rw.items()}},
                 "invariance": (invariance(pe, pm, pc, is_held, groups, dec_zoo, args.n_boot, args.seed)
                                if quality is None else "original files only")}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result["conditions"][cond] = entry
        save(result, args, entries, t_start, ["format control", "anonymization", "cost"][(quality is not None):])
    weights = tuple(result["conditions"]["clean"]["zoo"]["learned_weights"].values())
    result["anonymization"] = anonymize(methods, store, {m: zval[m] for m in test_classes},
                                        {m: ztest[m] for m in test_classes}, weights, entries, args, args.workdir)
    save(result, args, entries, t_start, ["cost"])
    result["cost"] = {"views_seconds_per_image": costs(methods, args.seed, sides=(32, 256)),
                      "residual_seconds_per_tile": residual_costs(methods, args.zoo, entries, args.seed)}
    save(result, args, entries, t_start, [])
    if not args.quick and not args.no_readme:
        update_readme_section("causal", readme(result))


def save(result: dict, args: argparse.Namespace, entries: dict, t_start: float, pending: list[str]) -> None:
    """Write the result so far; it is labelled partial while stages are pending or standard zoo models missing."""
    from modelprint.zoo.recipes import tier_recipes

    missing = [] if args.quick else [r.name for r in tier_recipes("standard")
                                     if r.family != "autoencoder" and r.name not in entries]
    result["partial"] = {"missing_standard_models": missing, "stages_pending": pending} if missing or pending else False
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    path = write_result("causal-quick" if args.quick else "causal", result)
    print(f"wrote {path}" + (" (partial)" if result["partial"] else ""), flush=True)


def _table(rows: dict) -> list[str]:
    lines = ["| method | identification [95% CI] | mean of 10 draws | verification AUC [95% CI] |", "|---|---|---|---|"]
    for name, x in rows.items():
        lines.append(f"| {name} | {fmt_ci(x['identification_accuracy'], x['identification_accuracy_ci'])} | "
                     f"{x['accuracy_10_draws_mean']:.3f} ± {x['accuracy_10_draws_std']:.3f} | "
                     f"{fmt_ci(x['verification_auc'], x['verification_auc_ci'])} |")
    return lines


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _acc(e: dict, name: str) -> float:
    return e["results"][name]["identification_accuracy"]


def _reading(r: dict) -> list[str]:
    """The reading, sentence by sentence from the numbers (so a rerun cannot leave it stale)."""
    c = r["conditions"]
    jp = next((k for k in c if k != "clean"), "clean")
    out = ["**Reading.**"]
    for where in ("zoo", "realworld"):
        e, j = c["clean"][where], c[jp][where]
        t, tj = e["target"], j["target"]
        out.append(f"- {where}: best single view {t['best_single_view']} ({_acc(e, t['best_single_view']):.3f}); "
                   f"equal fusion {_acc(e, 'fused-equal'):.3f}, learned fusion {_acc(e, 'fused-learned'):.3f}, "
                   f"decoupled {_acc(e, 'decoupled'):.3f} (decoupled on `learned` alone "
                   f"{_acc(e, 'decoupled-learned'):.3f}): the decoupling target is {_met(t['met'])}."
                   + ("" if jp == "clean" else f" With every image re-encoded ({jp}): best view "
                      f"{tj['best_single_view']} ({_acc(j, tj['best_single_view']):.3f}), learned fusion "
                      f"{_acc(j, 'fused-learned'):.3f}, decoupled {_acc(j, 'decoupled'):.3f}."))
    for group, g in c["clean"]["invariance"].items():
        if "reports" in g:
            raw, dec = g["reports"]["raw fused (all five)"], g["reports"]["decoupled"]
            out.append(f"- leakage, {group}: raw fused {raw['leakage']['accuracy']['mean']:.3f}, decoupled "
                       f"{dec['leakage']['accuracy']['mean']:.3f}, chance {dec['leakage']['chance']:.3f}; model "
                       f"identification (prototype) {raw['identification']['prototype']['mean']:.3f} → "
                       f"{dec['identification']['prototype']['mean']:.3f}.")
    for tname, t in r.get("anonymization", {}).get("targets", {}).items():
        ok = [eps for eps, x in t["by_epsilon"].items() if x["meets_target"]]
        out.append(f"- anonymization of {tname}: success ≥ 0.90 at PSNR ≥ 40 dB at ε = {', '.join(ok) or 'none'} "
                   f"(target {_met(t['target_met'])}); views held without gradient: "
                   f"{', '.join(t['held_views']) or 'none'}.")
    out.append("- Small samples: few test classes, few images a class and a few hundred real-world images, so "
               "differences inside the intervals are not findings.")
    return out


def readme(r: dict) -> str:
    s, z = r["settings"], r["zoo"]
    cmd = (f"python benchmarks/bench_causal.py --zoo {s['zoo']} --seed {s['seed']} --rw-cap {s['rw_cap']} "
           f"--anon-per-model {s['anon_per_model']}" + (f" --models {s['models']}" if s.get("models") else ""))
    partial = r.get("partial") or {}
    out = [f"## Causal fingerprints: views, fusion, decoupling, format control, anonymization (`{cmd}`)", "",
           *([f"**Partial run.** Standard zoo models not yet built when it ran: "
              f"{', '.join(partial['missing_standard_models']) or 'none'}; stages not yet run: "
              f"{', '.join(partial['stages_pending']) or 'none'}.", ""] if partial else []),
           f"`results/causal.json`. Zoo models present: {', '.join(z['models'])}. Test classes (every method is "
           f"evaluated on these): {', '.join(z['test_classes'])}; pair models (their redrawings of {z['contents']} "
           f"contents train the decoupler; never a test class): {', '.join(z['pair_models'])} "
           f"(split: {z['split']}). Per test class {s['val']} validation images (fusion weights) and {s['test']} test "
           f"images, support {s['support']}. Real-world: {len(r['realworld']['classes'])} classes of "
           f"shared/realworld, {s['rw_val']} validation and up to {s['rw_cap'] - s['rw_val']} test images a class, "
           f"centre crop ≤ {s['rw_crop']}², support 5; its decoupler is fit on all zoo pairs. DIRE views at most "
           f"{s['tiles']} tiles an image. 95% bootstrap intervals; seed {s['seed']}; "
           f"{r['machine']['threads']} torch thread(s) on a shared machine; {r['seconds'] / 60:.0f} min.", ""]
    for cond, c in r["conditions"].items():
        label = "original files" if cond == "clean" else f"format control: every image re-encoded as JPEG q{cond[4:]}"
        for where in ("zoo", "realworld"):
            e = c[where]
            t = e["target"]
            out += [f"**{where}, {label}** ({len(e['classes'])} classes, {e['test_images']} test images; learned "
                    "weights " + ", ".join(f"{k} {v:g}" for k, v in e["learned_weights"].items()) + ")", "",
                    *_table(e["results"]), "",
                    f"Target decoupled ≥ best single view ({t['best_single_view']}) + 0.05: "
                    f"{t['decoupled_minus_best']:+.3f}, {_met(t['met'])}.", ""]
    out += ["**Invariance and leakage** (original files; pair images of the contents held out of the decoupler's fit; "
            "leakage = content id read by logistic regression trained on the other models' images; ratio = "
            "fixed-model / fixed-content cosine distance; identification = nearest prototype, grouped by content)",
            "", "| models | fingerprint | leakage [95% CI] | chance | distance ratio | identification |",
            "|---|---|---|---|---|---|"]
    for group, g in r["conditions"]["clean"]["invariance"].items():
        if "skipped" in g:
            out.append(f"| {group} | skipped: {g['skipped']} | | | | |")
            continue
        for name, rep in g["reports"].items():
            lk, d = rep["leakage"], rep["distances"]["ratio"]
            out.append(f"| {group} | {name} | {fmt_ci(lk['accuracy']['mean'], lk['accuracy']['ci95'])} | "
                       f"{lk['chance']:.3f} | {d['mean']:.3f} | {rep['identification']['prototype']['mean']:.3f} |")
    for group, g in r["conditions"]["clean"]["invariance"].items():
        if "target" in g:
            t = g["target"]
            out.append(f"\nLeakage target ({group}): decoupled {t['decoupled_leakage']:.3f} vs chance "
                       f"{t['chance']:.3f}: {_met(t['met'])}.")
    a = r.get("anonymization", {"steps": s["anon_steps"], "queries": 0, "targets": {}})
    out += [] if "anonymization" not in r else [
            "", f"**Anonymization** (untargeted PGD, ≤ {a['steps']} steps of ε/4 at first, halved after 3 without "
            f"progress (at most 3 times), {a['queries']} queries of the zoo test classes; success over those the "
            "gallery attributed to their source before, Wilson 95% interval; "
            "transfer = share still attributed to their source by a gallery of each view alone, before → after)", "",
            "| attacked | held (no gradient) | ε | success [95% CI] (n) | PSNR dB (min) | SSIM | s/image | "
            "transfer: source rate before → after |", "|---|---|---|---|---|---|---|---|"]
    for tname, t in a["targets"].items():
        for eps, x in t["by_epsilon"].items():
            attacked = {v for v in t["views"] if v not in t["held_views"]}
            tr = "; ".join(f"{v}{' (attacked)' if v in attacked else ''} {y['before']:.2f} → {y['after']:.2f}"
                           for v, y in x["transfer"].items())
            psnr = "n/a" if x["psnr"] is None else f"{x['psnr']:.1f} ({x['min_psnr']:.1f})"
            out.append(f"| {tname} | {', '.join(t['held_views']) or 'none'} | {eps} | {x['success']:.2f} "
                       f"[{x['success_ci'][0]:.2f}, {x['success_ci'][1]:.2f}] ({x['attributed_before']}) | {psnr} | "
                       f"{x['ssim']:.4f} | {x['seconds_per_image']:.2f} | {tr} |")
        out.append(f"| {tname}: target success ≥ 0.90 at PSNR ≥ 40 dB | | | {_met(t['target_met'])} | | | | |")
    out += ["", *_reading(r)]
    if "cost" not in r:
        return "\n".join(out)
    cost = r["cost"]
    out += ["", "**Cost** (seconds, fresh random images one at a time, on this machine's load):", "",
            "| view | s/image 32² | s/image 256² |", "|---|---|---|"]
    out += [f"| {v} | {c['32']} | {c['256']} |" for v, c in cost["views_seconds_per_image"].items()]
    out += ["", "| residual | s per 32² tile |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in cost["residual_seconds_per_tile"].items()]
    return "\n".join(out)


if __name__ == "__main__":
    main()
