"""``make demo``: enroll and identify the bundled demo set (plus real-world classes when present)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from modelprint.config import realworld_dir
from modelprint.demo.build import DEMO_SET_DIR
from modelprint.io.datasets import Dataset, Sample

# Real-world classes added when ../shared/realworld is beside the repository (never copied into it).
REALWORLD_CLASSES = ("celeba64_gan", "celeba64_wgan_gp", "ldm_txt2img", "sd2_768v")
REALWORLD_PER_CLASS = 16
SUPPORT = 5


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def default_realworld() -> Path | None:
    env = realworld_dir()
    candidates = [Path(env)] if env else [Path.cwd().parent / "shared" / "realworld", Path(__file__).resolve().parents[4] / "shared" / "realworld"]
    return next((p for p in candidates if p.is_dir()), None)


def demo_dataset(realworld: Path | None, seed: int) -> Dataset:
    samples = list(Dataset.from_folder(DEMO_SET_DIR))
    if realworld is not None:
        rng = np.random.default_rng(seed)
        for cls in REALWORLD_CLASSES:
            files = sorted((realworld / cls).glob("*")) if (realworld / cls).is_dir() else []
            if len(files) > REALWORLD_PER_CLASS:
                files = [files[i] for i in sorted(rng.choice(len(files), REALWORLD_PER_CLASS, replace=False))]
            samples += [Sample(f, cls) for f in files]
    return Dataset(samples, "demo set")


def run_demo(workdir: Path, seed: int = 0, realworld: Path | None = None, console: Console | None = None) -> dict:
    """Embed the demo set once, enroll ``SUPPORT`` images per model, identify the rest, evaluate, report."""
    from modelprint.api import embed_paths
    from modelprint.evaluation import evaluate_embeddings
    from modelprint.gallery import Gallery
    from modelprint.methods import load_method
    from modelprint.reports import write_html_report
    from modelprint.reports.spectra import mean_spectra_per_model

    console = console or Console()
    start = time.perf_counter()
    realworld = realworld or default_realworld()
    ds = demo_dataset(realworld, seed)
    method = load_method()
    console.print(f"[bold]modelprint demo[/bold]: {len(ds)} images of {len(ds.classes)} models "
                  f"({'with' if realworld else 'without'} real-world classes), method {method.name}, seed {seed}")
    emb = embed_paths(method, ds.paths)
    labels = [s.label for s in ds if str(s.path) in set(emb.paths)]
    rng = np.random.default_rng(seed)
    enrolled = np.zeros(len(labels), dtype=bool)
    for cls in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        enrolled[rng.choice(idx, SUPPORT, replace=False)] = True

    workdir.mkdir(parents=True, exist_ok=True)
    gallery_path = workdir / "gallery.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{gallery_path}{suffix}").unlink(missing_ok=True)
    with Gallery(gallery_path) as g:
        for cls in sorted(set(labels)):
            idx = [i for i in np.flatnonzero(enrolled) if labels[i] == cls]
            g.add_embeddings(cls, emb.vectors[idx], [emb.hashes[i] for i in idx], [emb.paths[i] for i in idx], method.name, method.version)
        queries = np.flatnonzero(~enrolled)
        results = g.identify_embeddings(emb.vectors[queries], method.name, method.version, top_k=3)

    table = Table(title=f"1:N identification, {SUPPORT} enrolled images per model")
    for col in ("model", "source", "queries", "correct", "unknown", "accuracy", "confused with"):
        table.add_column(col, justify="right" if col in ("queries", "correct", "unknown", "accuracy") else "left",
                         overflow="fold")
    total_correct = 0
    for cls in sorted(set(labels)):
        preds = [r.model for q, r in zip(queries, results) if labels[q] == cls]
        correct = sum(p == cls for p in preds)
        total_correct += correct
        wrong = Counter(p for p in preds if p not in (cls, "unknown")).most_common(1)
        table.add_row(cls, "realworld" if cls in REALWORLD_CLASSES else "bundled", str(len(preds)), str(correct), str(sum(p == "unknown" for p in preds)),
                      f"{correct / max(1, len(preds)):.2f}", wrong[0][0] if wrong else "—")
    console.print(table)
    accuracy = total_correct / max(1, len(queries))
    console.print(f"overall accuracy (unknown counts as wrong): [bold]{accuracy:.3f}[/bold] on {len(queries)} queries; "
                  f"chance {1 / len(set(labels)):.3f}")

    root = os.path.commonpath([os.path.abspath(p) for p in emb.paths])  # the report names no machine paths
    result = evaluate_embeddings(emb.vectors, labels, support=SUPPORT, pairs=1000, seed=seed, method=method.tag,
                                 paths=[os.path.relpath(p, root) for p in emb.paths])
    report = workdir / "report.html"
    write_html_report(result, report, embeddings=emb.vectors, labels=labels,
                      mean_spectra=mean_spectra_per_model(emb.paths, labels, method, per_model=8),
                      title=f"modelprint demo: {method.name} fingerprints")
    result.to_json(workdir / "evaluation.json")
    d = result.to_dict()
    ident, verif = d["identification"], d["verification"]
    console.print(f"evaluation protocol (seed {seed}): identification accuracy {_fmt(ident.get('accuracy'))}, "
                  f"verification AUC {_fmt(verif.get('auc'))}, EER {_fmt(verif.get('eer'))}")
    console.print(f"gallery: {gallery_path}\nreport:  {report}\ntime:    {time.perf_counter() - start:.1f} s")
    return {"accuracy": accuracy, "evaluation": d}
