"""The HTML report: one self-contained file with the figures embedded."""

from __future__ import annotations

import base64
import html
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import modelprint
from conftest import natural_like
from modelprint.evaluation import evaluate_embeddings
from modelprint.reports import embedding_map_2d, write_html_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(n_classes, per_class, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, 12))
    labels = [f"gen<{c}>&co" if c == 0 else f"model_{c}" for c in range(n_classes) for _ in range(per_class)]
    x = np.repeat(centers, per_class, axis=0) + noise * rng.normal(size=(n_classes * per_class, 12))
    return x, labels


def _images(text):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _assert_self_contained(text):
    assert 'src="http' not in text and "src='http" not in text
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_full_report_is_self_contained_with_all_figures(tmp_path):
    x, y = _data(4, 12)
    result = evaluate_embeddings(x, y, seed=2, n_boot=50, method="toy@1",
                                 paths=[f"/data/{i}.png" for i in range(len(y))])
    spectra = {name: np.random.default_rng(i).random((16, 16)) for i, name in enumerate(sorted(set(y)))}
    out = tmp_path / "reports" / "report.html"
    out.parent.mkdir()
    out.write_text("old content")
    write_html_report(result, out, embeddings=x, labels=y, mean_spectra=spectra, title="Toy <report>")

    text = out.read_text(encoding="utf-8")
    _assert_self_contained(text)
    for fig_id in ("fig-confusion", "fig-roc", "fig-embedding", "fig-spectra"):
        assert f'id="{fig_id}"' in text
    images = _images(text)
    assert len(images) == 4 and all(img.startswith(PNG_MAGIC) for img in images)
    assert "Toy &lt;report&gt;" in text and "<report>" not in text  # escaped title
    assert "gen&lt;0&gt;&amp;co" in text  # class names, escaped
    assert "model_3" in text and "toy@1" in text
    assert f"{result.identification.accuracy:.3f}" in text and f"{result.verification.auc:.3f}" in text
    assert "95% CI" in text and "t-SNE" in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # replaced atomically, no temp file left

    meta = re.search(r"<p class='meta'>(.*?)</p>", text).group(1)  # version, method tag and date up front
    assert f"modelprint {modelprint.__version__}" in meta and "toy@1" in meta
    assert datetime.now(timezone.utc).strftime("%Y-%m-%d") in meta
    glossary = text[text.index("<h2>Glossary</h2>"):]
    for term in ("accuracy (1:N)", "macro-F1", "ROC AUC", "EER", "TPR @ 1% FPR", "AUROC (known vs unknown)", "OSCR", "silhouette",
                 "Davies–Bouldin", "95% CI"):
        assert f"<dt>{html.escape(term)}</dt><dd>" in glossary
    point = text[text.index("id='operating-point'"):text.index("<h2>Embedding map")]
    osr = result.open_set
    assert f"{osr.unknown_threshold:.4f}" in point and f"{osr.unknown_rejected:.3f}" in point
    assert html.escape(osr.threshold_rule) in point and "leave-one-out" in point


def test_spectrum_panels_have_frequency_axes_and_one_colour_scale():
    from modelprint.reports.html import _spectra_figure

    spectra = {f"m{i}": np.random.default_rng(i).random((16, 16)) + i for i in range(7)}
    fig = _spectra_figure(spectra, sorted(spectra))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images and ax.get_title()]
    assert len(panels) == 7
    assert {ax.images[0].get_clim() for ax in panels} == {panels[0].images[0].get_clim()}  # one scale
    assert all(ax.get_xlim() == (-0.5, 0.5) and ax.get_xticks().size for ax in panels)
    assert all("cycles/px" in ax.get_xlabel() for ax in panels[1:])  # the bottom panel of every column
    assert "cycles/px" in panels[0].get_ylabel() and "cycles/px" in panels[6].get_ylabel()
    colorbars = [ax for ax in fig.axes if ax not in panels and ax.get_visible()]
    assert len(colorbars) == 1 and "log power" in colorbars[0].get_ylabel()


def _tiny_dataset(root, n_classes=3, per_class=8):
    for c in range(n_classes):
        (root / f"m{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(natural_like(48, 48, seed=10 * c + i)).save(root / f"m{c}" / f"{i}.png")
    return root


def test_dataset_report_names_images_relative_to_the_dataset_and_reuses_the_embedding_spectra(tmp_path):
    from modelprint.api import evaluate_dataset
    from modelprint.methods.spectral import SpectralMethod

    ds = _tiny_dataset(tmp_path / "data")
    phases = []

    def phase(label, steps):
        phases.append((label, steps))
        if label.startswith("evaluating"):  # everything needed was computed while embedding: the images may go
            for f in ds.rglob("*.png"):
                f.unlink()

    out = tmp_path / "report.html"
    res = evaluate_dataset(ds, SpectralMethod(residual="highpass", reference=None), support=3, pairs=100,
                           report=out, phase=phase)
    text = out.read_text(encoding="utf-8")
    assert [label.split(":")[0].split(" ")[0] for label, _ in phases] == ["embedding", "evaluating", "report"]
    assert phases[0][1] == 24
    assert 'id="fig-spectra"' in text
    mistakes = res.result.identification.errors  # chance-level data: there are mistakes, named by path
    assert mistakes and all(e["path"].startswith("m") and not os.path.isabs(e["path"]) for e in mistakes)
    assert html.escape(mistakes[0]["path"]) in text
    assert str(tmp_path) not in text and os.getcwd() not in text and "/home/" not in text


def test_report_spectra_are_computed_with_progress_when_the_method_computes_none(tmp_path):
    from modelprint.api import evaluate_dataset
    from modelprint.methods import FingerprintMethod

    class Means(FingerprintMethod):
        name = "means"
        version = "1"

        def embed(self, images):
            return np.stack([np.concatenate([im.mean((0, 1)), im.std((0, 1))]) for im in images]).astype(np.float32)

    ds = _tiny_dataset(tmp_path / "data", per_class=14)
    phases, steps = [], []
    evaluate_dataset(ds, Means(), support=3, pairs=100, report=tmp_path / "r.html",
                     phase=lambda label, n: phases.append((label, n)), progress=steps.append)
    assert ("report: spectra of 3 models", 36) in phases  # 12 images per model, each one progress step
    assert sum(steps) == 3 * 14 + 36
    assert 'id="fig-spectra"' in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_minimal_report_without_spectra_and_with_skipped_protocols(tmp_path):
    x, y = _data(2, 3)  # 6 images: PCA map; support 2 leaves one query per class: verification skipped
    result = evaluate_embeddings(x, y, support=2, n_boot=10)
    out = tmp_path / "r.html"
    write_html_report(result, out, embeddings=x, labels=y)
    text = out.read_text(encoding="utf-8")
    _assert_self_contained(text)
    assert 'id="fig-roc"' not in text and 'id="fig-spectra"' not in text
    assert 'id="fig-confusion"' in text and 'id="fig-embedding"' in text
    assert "Skipped" in text and "PCA" in text
    assert len(_images(text)) == 2


def test_embedding_map_shapes_and_determinism():
    rng = np.random.default_rng(0)
    for n, dim, method in ((4, 1, "PCA"), (9, 5, "PCA"), (12, 1, "t-SNE"), (15, 70, "t-SNE")):
        x = rng.normal(size=(n, dim))
        coords, used = embedding_map_2d(x, seed=0)
        assert coords.shape == (n, 2) and used == method and np.all(np.isfinite(coords))
    x = rng.normal(size=(20, 8))
    assert np.array_equal(embedding_map_2d(x, seed=1)[0], embedding_map_2d(x, seed=1)[0])


def test_bad_inputs_are_rejected(tmp_path):
    x, y = _data(3, 8)
    result = evaluate_embeddings(x, y, n_boot=10)
    with pytest.raises(ValueError):
        write_html_report(result, tmp_path / "r.html", embeddings=x, labels=y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        write_html_report(result, tmp_path / "r.html", embeddings=x, labels=y,
                          mean_spectra={"model_1": np.zeros((2, 2, 2, 2))})
    assert not (tmp_path / "r.html").exists()


def test_importing_reports_does_not_import_matplotlib():
    code = "import sys, modelprint.reports, modelprint.evaluation; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_report_names_no_machine_paths(tmp_path):
    from modelprint.demo import REALWORLD_CLASSES, REALWORLD_PER_CLASS, run_demo

    realworld = tmp_path / "realworld"  # look-alike classes (plain photos-like images): they get confused
    for k, cls in enumerate(REALWORLD_CLASSES):
        (realworld / cls).mkdir(parents=True)
        for i in range(REALWORLD_PER_CLASS):
            Image.fromarray(natural_like(48, 48, seed=100 * k + i)).save(realworld / cls / f"{i}.png")
    out = run_demo(workdir=tmp_path / "demo", seed=0, realworld=realworld)
    text = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert out["evaluation"]["identification"]["errors"]  # mistakes are listed, by path
    assert "celeba64_gan/" in text and str(tmp_path) not in text and str(Path(modelprint.__file__).parent) not in text


def test_methods_hand_over_the_spectra_they_compute_while_embedding():
    from modelprint.methods import load_method

    images = [natural_like(64, 80, seed=i).astype(np.float32) / 255 for i in range(2)]
    spectral = load_method("spectral", residual="highpass", reference=None)
    vectors, spectra = spectral.embed_with_spectra(images)
    np.testing.assert_array_equal(vectors, spectral.embed(images))
    np.testing.assert_array_equal(spectra, spectral.log_spectra(images))
    fused = load_method("fused", views=[("spectral", 1.0)], params={"spectral": {"residual": "highpass", "reference": None}})
    fused_vectors, fused_spectra = fused.embed_with_spectra(images)
    np.testing.assert_array_equal(fused_vectors, fused.embed(images))
    np.testing.assert_array_equal(fused_spectra, spectra)
    learned = load_method("learned")
    vectors, spectra = learned.embed_with_spectra(images)
    np.testing.assert_array_equal(vectors, learned.embed(images))
    np.testing.assert_allclose(spectra[1], learned.window_spectra(images[1]).mean(axis=(0, 1)), rtol=1e-6)
