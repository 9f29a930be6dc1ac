"""Which decoupler keeps model identity for models it never saw, and which drops content? Variants on the causal
benchmark's data (issue 14), selection on the fit data only.

The decoupled fingerprint of `bench_causal.py` (a trained projection, :class:`~modelprint.causal.decoupler.
CausalDecoupler`) loses identification against the fused features it starts from: it is fit on the pair models and
evaluated on other models. This benchmark puts closed-form alternatives beside it, on the same cached embeddings,
pairs, split and protocols as `bench_causal.py` (run that first, with the same `--models`; this reads its
`--workdir`):

- `raw`: the fused features, unit length (no decoupling);
- `mlp`: the shipped trained decoupler (cosine softmax over the pair models, pair adversary behind gradient
  reversal);
- `mlp-adv4`: the same with four times the gradient-reversal weight; `mlp-content`: with the content-id
  adversary instead of the pair adversary;
- `nap-within-k`: nuisance attribute projection: the top k principal directions of the within-model residuals
  `x − μ_model` of the pair images (how one model's images move with content) projected out, everything else kept;
- `nap-content-k`: the same with the top k directions of the per-content means of those residuals;
- `inlp-n`: iterative nullspace projection (Ravfogel et al., 2020): n rounds of a logistic regression reading the
  content id, its weight directions projected out each round;
- `removal-k`: the trained decoupler's removal form (`CausalDecoupler(rank=k)`): k directions, started at
  `nap-within-k`'s, refined by the same cosine softmax (no centre loss) and pair adversary as `mlp`; the rest of
  the features kept as they are;
- `nap-real-k`: the top k principal directions of a bank of real photo crops (`--bank` crops of the real pool's
  *train* split, so never a pair content; one "model", the camera, over varied content) projected out: the content
  subspace read from unlabelled images, with no pair model's images at all;
- `wccn-a`: within-class covariance normalisation: the within-model scatter of the pair images whitened (shrunk
  toward identity by a), so content directions are scaled down, not removed;
- `lda`: only the discriminant directions of the pair models kept (shrinkage LDA: at most models − 1 dimensions),
  the smallest room left for content.

Bases `contrast-equal` / `contrast-learned` (`--bases`) put the counterfactual contrast under every variant: each
view's embedding minus the mean embedding of the same image redrawn by reference generators (the shipped ones or
`--contrast POOL`; `modelprint.causal.contrast`, the `contrast` method), before fusion; `raw` on them is the
training-free `contrast` method itself. `--contrast-views` contrasts only the views named (the others enter raw).

Each variant is fit on the features of the causal benchmark's fusion (`--base equal`: all five views; `learned`:
weights fit on each set's validation split) of the pair models' images of the fit contents (zoo) or of every zoo
pair (real world), as `bench_causal.py` fits its decoupler. **Selection score** (read on the fit data only): three
folds of held-out *pair models* × held-out contents: nearest-prototype identification of the held-out models on
held-out contents, minus leakage above chance + 0.05. Reported: zoo and real-world identification (the causal
benchmark's test classes and protocol, support 10 / 5, 95% bootstrap intervals) and content leakage on the held-out
contents (`modelprint.causal.invariance.content_leakage`: pair models / test classes).

    python benchmarks/bench_decouplers.py --zoo out/zoo --seed 0
    python benchmarks/bench_decouplers.py --zoo out/zoo --seed 0 --bases contrast-equal,contrast-learned \
        --name decouplers_contrast
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_causal import Embeddings, labels_of, pair_set, realworld_data, shown_path, split_models, zoo_data
from bench_views import VIEWS, fuse
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from bench_extractor_realworld import protocol
from common import fmt_ci, machine, shared_dir, update_readme_section, write_result
from modelprint.causal.contrast import SHIPPED_REFERENCES, ReferenceRedrawers, contrast
from modelprint.causal.decoupler import CausalDecoupler, within_model_residuals
from modelprint.causal.invariance import content_leakage, split_contents
from modelprint.causal.pairs import REAL
from modelprint.io.pool import RealPool
from modelprint.methods import load_method
from modelprint.methods.fusion import fit_weights
from modelprint.scores import l2_normalize
from modelprint.seeding import configure_torch_threads, seed_everything
from modelprint.synthesis.pool import read_manifest


class _Removal:
    """Project a fitted content basis ``u`` (orthonormal columns) out of the centred features."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        y = x - self.mu
        return l2_normalize(y - (y @ self.u) @ self.u.T)


class Nap(_Removal):
    """Remove the top-k directions of within-model variation (or of content means)."""

    def __init__(self, k: int, source: str = "within") -> None:
        self.k, self.source = k, source

    def fit(self, x: np.ndarray, m: np.ndarray, c: np.ndarray) -> Nap:
        self.mu = x.mean(0)
        r = within_model_residuals(x, m)
        if self.source == "content":
            r = np.stack([r[c == g].mean(0) for g in np.unique(c)])
        self.u = np.linalg.svd(r, full_matrices=False)[2][: self.k].T
        return self


class Inlp(_Removal):
    """Iterative nullspace projection against a linear content classifier."""

    def __init__(self, n: int) -> None:
        self.n = n

    def fit(self, x: np.ndarray, m: np.ndarray, c: np.ndarray) -> Inlp:
        self.mu = x.mean(0)
        y = x - self.mu
        self.u = np.zeros((x.shape[1], 0))
        for _ in range(self.n):
            yp = y - (y @ self.u) @ self.u.T
            sd = np.maximum(yp.std(0), 1e-9)
            w = (LogisticRegression(C=1.0, max_iter=2000).fit(yp / sd, c).coef_ / sd).T
            self.u = np.linalg.qr(np.concatenate([self.u, w - self.u @ (self.u.T @ w)], axis=1))[0]
        return self


class NapReal(_Removal):
    """Remove the top-k principal directions of a bank of real images' features (content variation, one source)."""

    def __init__(self, k: int, bank: np.ndarray) -> None:
        self.k, self.bank = k, bank

    def fit(self, x: np.ndarray, m: np.ndarray, c: np.ndarray) -> NapReal:
        self.mu = x.mean(0)
        self.u = np.linalg.svd(self.bank - self.bank.mean(0), full_matrices=False)[2][: self.k].T
        return self


class Wccn:
    """Within-class covariance normalisation: whiten the within-model (content) scatter, shrunk toward identity."""

    def __init__(self, shrinkage: float = 0.1) -> None:
        self.shrinkage = shrinkage

    def fit(self, x: np.ndarray, m: np.ndarray, c: np.ndarray) -> Wccn:
        self.mu = x.mean(0)
        r = within_model_residuals(x, m)
        cov = r.T @ r / len(r)
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        vals, vecs = np.linalg.eigh(cov)
        self.w = vecs / np.sqrt(np.maximum(vals, 1e-12))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize((x - self.mu) @ self.w)


class Lda:
    """Keep only the discriminant directions of the fit models (within-model scatter shrunk, Ledoit-Wolf)."""

    def fit(self, x: np.ndarray, m: np.ndarray, c: np.ndarray) -> Lda:
        self.lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(x, m)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize(self.lda.transform(x))


class Raw(_Removal):
    def fit(self, x, m, c):  # noqa: ANN001, ANN201
        self.mu, self.u = np.zeros(x.shape[1]), np.zeros((x.shape[1], 0))
        return self


def variants(seed: int, bank: np.ndarray | None) -> dict:
    """Every variant's factory; ``bank``: the fused features of the real-image bank (``nap-real-k``; None: left out)."""
    out = {"raw": lambda: Raw(), "mlp": lambda: CausalDecoupler(seed=seed),
           "mlp-adv4": lambda: CausalDecoupler(adversary_weight=4.0, seed=seed),
           "mlp-content": lambda: CausalDecoupler(adversary="content", seed=seed)}
    out |= {f"nap-within-{k}": (lambda k=k: Nap(k)) for k in (8, 32)}
    out["nap-content-7"] = lambda: Nap(7, "content")
    out |= {f"inlp-{n}": (lambda n=n: Inlp(n)) for n in (2, 4)}
    out |= {f"wccn-{a:g}": (lambda a=a: Wccn(a)) for a in (0.1, 0.5)}
    out["lda"] = lambda: Lda()
    out |= {f"removal-{k}": (lambda k=k: CausalDecoupler(rank=k, compactness_weight=0.0, seed=seed)) for k in (8, 32)}
    if bank is not None:
        out |= {f"nap-real-{k}": (lambda k=k: NapReal(k, bank)) for k in (8, 32, 64)}
    return out


def internal_score(make, x: np.ndarray, m: np.ndarray, c: np.ndarray, seed: int) -> dict:
    """Leave models out (3 folds) x contents out: identification of unseen models on unseen contents, leakage."""
    rng = np.random.default_rng(seed)
    models = rng.permutation(np.unique(m))
    val_c = split_contents(c, 0.375, seed)
    is_vc = np.isin(c, val_c)
    accs, leaks = [], []
    for f in range(3):
        out_models = models[f::3]
        fit = ~np.isin(m, out_models) & ~is_vc
        dec = make().fit(x[fit], m[fit], c[fit])
        z = dec.transform(x)
        ref = np.isin(m, out_models) & ~is_vc
        q = np.isin(m, out_models) & is_vc
        classes = np.unique(m[ref])
        protos = l2_normalize(np.stack([z[ref & (m == g)].mean(0) for g in classes]))
        accs.append(float(np.mean(classes[np.argmax(z[q] @ protos.T, 1)] == m[q])))
        leaks.append(content_leakage(z[is_vc], m[is_vc], c[is_vc], n_boot=0, seed=seed)["accuracy"]["mean"])
    chance = 1 / len(val_c)
    acc, leak = float(np.mean(accs)), float(np.mean(leaks))
    return {"acc": acc, "leak": leak, "chance": chance, "score": acc - max(0.0, leak - chance - 0.05)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("out/zoo"))
    ap.add_argument("--workdir", type=Path, default=Path("out/bench-causal"))
    ap.add_argument("--models", default="", help="comma-separated zoo models, as given to bench_causal.py")
    ap.add_argument("--rw-cap", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated variant name prefixes")
    ap.add_argument("--bases", default="equal,learned",
                    help="comma-separated bases: equal, learned, and with --contrast contrast-equal, contrast-learned")
    ap.add_argument("--contrast", type=Path, default=None, help="synthetic pool folder whose generators redraw "
                    "every image for the contrast bases (default: the shipped contrast references)")
    ap.add_argument("--contrast-ids", default="", help="comma-separated model ids of --contrast (default: all)")
    ap.add_argument("--contrast-views", default=",".join(VIEWS), help="comma-separated views the contrast bases "
                    "contrast (the others enter raw)")
    ap.add_argument("--bank", type=int, default=256, help="real photo crops (train split) for the nap-real variants")
    ap.add_argument("--pair-photos", type=int, default=12, help="photo contents of the pair set (bench_causal's)")
    ap.add_argument("--pair-faces", type=int, default=4, help="face contents of the pair set")
    ap.add_argument("--held-contents", type=int, default=0, help="contents held out of every fit for the leakage "
                    "and selection reads (default: half of them)")
    ap.add_argument("--synthetic", default="", help="comma-separated synthetic pool folders: every generator in them "
                    "redraws the fit contents and joins every fit as one more model (raw bases only)")
    ap.add_argument("--name", default="decouplers", help="result file and README section name")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cviews = [v for v in args.contrast_views.split(",") if v]
    if unknown := sorted(set(cviews) - set(VIEWS)):
        ap.error(f"--contrast-views: unknown views {unknown}; choose from {', '.join(VIEWS)}")
    pools = [Path(f) for f in args.synthetic.split(",") if f]
    if pools and any(b.startswith("contrast-") for b in args.bases.split(",")):
        ap.error("--synthetic takes the raw bases only (equal, learned)")

    def selected(name: str) -> bool:
        return not args.only or any(name.startswith(o) for o in args.only.split(","))
    seed_everything(args.seed)
    configure_torch_threads()
    t_start = time.perf_counter()
    ns = argparse.Namespace(pair_photos=args.pair_photos, pair_faces=args.pair_faces, seed=args.seed)
    methods = {v: load_method(v, **({"max_tiles": 4} if v.startswith("dire") else {})) for v in VIEWS}
    store = Embeddings(args.workdir, methods)
    only = [m for m in args.models.split(",") if m]
    entries, zval, ztest = zoo_data(args.zoo, only, 8, 24)
    test_classes, pair_models = split_models(entries, args.seed)
    redrawable = [n for n in entries if entries[n]["kind"] != "flow"]
    rval, rtest = realworld_data(shared_dir() / "realworld", 2, args.rw_cap, 256, 0)
    pimages, pcontents, _ = pair_set(args.zoo, redrawable, ns, args.workdir)
    n_contents = len(np.unique(pcontents))
    held = split_contents(pcontents, (args.held_contents or n_contents / 2) / n_contents, args.seed)
    pe = store.sets("pairs-clean", pimages)
    bank_images = ({"bank": list(RealPool().crops(args.bank, size=pimages[REAL][0].shape[0], seed=args.seed,
                                                  split="train"))} if selected("nap-real") else {})
    be = store.sets("bank", bank_images) if bank_images else None
    pm = np.asarray([m for m, ims in pimages.items() for _ in ims])
    pc = np.concatenate([pcontents for _ in pimages])
    is_held = np.isin(pc, held)
    keep_zoo = ~is_held & np.isin(pm, [*pair_models, REAL])
    fit_content = ~np.isin(pcontents, held)
    synth = {f"{pool.name}--{rid}": redrawer.redraw(k, [x for x, f in zip(pimages[REAL], fit_content) if f])
             for pool in pools for redrawer in [ReferenceRedrawers(pool, sorted(read_manifest(pool)))]
             for k, rid in enumerate(redrawer.ids)}
    se = store.sets("synthetic", synth) if synth else None
    sm = np.asarray([m for m, ims in synth.items() for _ in ims])
    sc = np.concatenate([pcontents[fit_content] for _ in synth]) if synth else np.zeros(0, int)
    named = {"zoo": ({m: zval[m] for m in test_classes}, {m: ztest[m] for m in test_classes}, 10, "zoo-clean"),
             "realworld": (rval, rtest, 5, "rw-clean")}
    sets = {k: (store.sets(f"{tag}-val", v), labels_of(v), store.sets(f"{tag}-test", t), labels_of(t), support)
            for k, (v, t, support, tag) in named.items()}
    bases = [b for b in args.bases.split(",") if b]
    if any(b.startswith("contrast-") for b in bases):
        pool = args.contrast or SHIPPED_REFERENCES
        refs = ReferenceRedrawers(pool, [i for i in args.contrast_ids.split(",") if i] or sorted(read_manifest(pool)))

        def contrasted(name: str, by_label: dict, emb: dict) -> dict:
            red = [store.sets(f"{name}@{rid}", {lab: refs.redraw(k, ims) for lab, ims in by_label.items()})
                   for k, rid in enumerate(refs.ids)]
            return {v: contrast(emb[v], [r[v] for r in red]) if v in cviews else emb[v] for v in VIEWS}

        pe_contrast = contrasted("pairs-clean", pimages, pe)
        be_contrast = contrasted("bank", bank_images, be) if be else None
        sets_contrast = {k: (contrasted(f"{tag}-val", v, sets[k][0]), sets[k][1],
                             contrasted(f"{tag}-test", t, sets[k][2]), sets[k][3], support)
                         for k, (v, t, support, tag) in named.items()}
    groups = {"pair models": is_held & np.isin(pm, [*pair_models, REAL]),
              "test classes": is_held & np.isin(pm, [m for m in test_classes if m in redrawable])}
    result = {"benchmark": "decouplers", "machine": machine(), "settings": vars(args) | {
        "zoo": shown_path(args.zoo), "workdir": shown_path(args.workdir),
        "contrast": args.contrast and shown_path(args.contrast), "synthetic": ",".join(map(shown_path, pools))},
        "zoo": {"models": list(entries), "test_classes": test_classes, "pair_models": pair_models},
        "realworld_classes": list(rval), "synthetic_models": sorted(synth), "bases": {}}
    if any(b.startswith("contrast-") for b in bases):
        result["contrast_references"] = {"pool": "shipped" if args.contrast is None else shown_path(args.contrast),
                                         "ids": refs.ids, "digest": refs.digest}
    raw_sets, raw_pe, raw_be = sets, pe, be
    for base in bases:
        sets, pe, be = ((sets_contrast, pe_contrast, be_contrast) if base.startswith("contrast-")
                        else (raw_sets, raw_pe, raw_be))
        weights = {k: [1.0] * len(VIEWS) if base.endswith("equal") else
                   list(fit_weights([ev[v] for v in VIEWS], lv, resolution=0.1).weights)
                   for k, (ev, lv, _, _, _) in sets.items()}
        fits = {"zoo": (fuse([pe[v] for v in VIEWS], weights["zoo"])[keep_zoo], pm[keep_zoo], pc[keep_zoo]),
                "realworld": (fuse([pe[v] for v in VIEWS], weights["realworld"]), pm, pc)}
        if se is not None:
            fits = {k: (np.concatenate([x, fuse([se[v] for v in VIEWS], weights[k])]), np.concatenate([m, sm]),
                        np.concatenate([c, sc])) for k, (x, m, c) in fits.items()}
        makers = {k: variants(args.seed, be and fuse([be[v] for v in VIEWS], weights[k])) for k in sets}
        rows = {}
        for name in makers["zoo"]:
            if not selected(name):
                continue
            t0 = time.perf_counter()
            row = {"selection": internal_score(makers["zoo"][name], *fits["zoo"], args.seed)}
            fitted = {k: makers[k][name]().fit(*fits[k]) for k in sets}
            for k, (_, _, et, lt, support) in sets.items():
                r = protocol(fitted[k].transform(fuse([et[v] for v in VIEWS], weights[k])), lt, args.seed, support)
                row[k] = {"identification": r["identification_accuracy"], "ci95": r["identification_accuracy_ci"]}
            zoo_pairs = fuse([pe[v] for v in VIEWS], weights["zoo"])
            row["leakage"] = {g: content_leakage(fitted["zoo"].transform(zoo_pairs[mask]), pm[mask], pc[mask],
                                                 n_boot=0, seed=args.seed)["accuracy"]["mean"]
                              for g, mask in groups.items()}
            rows[name] = row
            print(f"{base} {name:16s} select {row['selection']['score']:.3f} | zoo {row['zoo']['identification']:.3f} "
                  f"rw {row['realworld']['identification']:.3f} leak {row['leakage']} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        chosen = max(rows, key=lambda n: rows[n]["selection"]["score"])
        result["bases"][base] = {"weights": weights, "variants": rows, "selected": chosen,
                                 "leakage_chance": 1.0 / len(held)}
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    write_result(args.name, result)
    update_readme_section(args.name, readme(result))


def readme(r: dict) -> str:
    z, st = r["zoo"], r["settings"]
    defaults = {"bases": "equal,learned", "contrast_views": ",".join(VIEWS), "bank": 256, "pair_photos": 12,
                "pair_faces": 4}
    flags = "".join(f" --{k.replace('_', '-')} {st[k]}"
                    for k in ("models", "bases", "contrast", "contrast_ids", "contrast_views", "bank", "pair_photos",
                              "pair_faces", "held_contents", "synthetic", "only")
                    if st.get(k) and st[k] != defaults.get(k))
    if st.get("workdir", "out/bench-causal") != "out/bench-causal":
        flags += f" --workdir {st['workdir']}"
    if st.get("name", "decouplers") != "decouplers":
        flags += f" --name {st['name']}"
    refs = r.get("contrast_references")
    names = ", ".join(refs["ids"]) if refs else ""
    lines = [f"## Decoupler variants (`python benchmarks/bench_decouplers.py --zoo out/zoo --seed 0{flags}`)", "",
             f"`results/{st.get('name', 'decouplers')}.json`. "
             + (f"Contrast bases: each of the views {st.get('contrast_views') or ', '.join(VIEWS)} as its embedding "
                f"minus the mean embedding of the same image redrawn by {len(refs['ids'])} synthetic pool generators "
                f"({refs['pool']}: {names}), the other views raw, then fused. " if refs else "")
             + (f"nap-real: {st.get('bank', 256)} real photo crops of the pool's train split. "
                if any(n.startswith("nap-real") for b in r["bases"].values() for n in b["variants"]) else "")
             + (f"Synthetic models in every fit: {len(r['synthetic_models'])} pool generators redrawing the fit "
                "contents. " if r.get("synthetic_models") else "")
             + f"Zoo models: {', '.join(z['models'])}; test classes "
             f"{', '.join(z['test_classes'])}; pair models {', '.join(z['pair_models'])} (bench_causal's split and "
             f"caches). Real world: {len(r['realworld_classes'])} classes, support 5. Selection score on the fit "
             f"data only (held-out pair models × held-out contents); leakage chance "
             f"{next(iter(r['bases'].values()))['leakage_chance']:.3f}. Seed {r['settings']['seed']}; "
             f"{r['seconds'] / 60:.0f} min.", ""]
    for base, b in r["bases"].items():
        lines += [f"**Base: {base} fusion** (weights zoo {b['weights']['zoo']}, real world "
                  f"{b['weights']['realworld']}; selected on the fit data: `{b['selected']}`)", "",
                  "| variant | selection score | zoo identification [95% CI] | real-world identification [95% CI] | "
                  "leakage, pair models | leakage, test classes |", "|---|---|---|---|---|---|"]
        for name, row in b["variants"].items():
            lines.append(f"| {name} | {row['selection']['score']:.3f} | "
                         f"{fmt_ci(row['zoo']['identification'], row['zoo']['ci95'])} | "
                         f"{fmt_ci(row['realworld']['identification'], row['realworld']['ci95'])} | "
                         f"{row['leakage']['pair models']:.3f} | {row['leakage']['test classes']:.3f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
