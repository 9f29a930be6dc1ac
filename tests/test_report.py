"""The HTML report: one self-contained file with the figures embedded."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import numpy as np
import pytest

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
