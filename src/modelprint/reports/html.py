"""A single self-contained HTML evaluation report: inline CSS, figures embedded as base64 PNG, no external assets.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas (no ``pyplot``, so no global backend
state is touched); matplotlib and scikit-learn's t-SNE are imported only when a report is written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelprint import __version__, atomic
from modelprint.scores import l2_normalize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from modelprint.evaluation.results import EvaluationResult

__all__ = ["write_html_report", "embedding_map_2d"]

MAX_MAP_POINTS = 1500  # t-SNE above this is slow on small machines; a stratified subset is drawn instead
TSNE_MIN_POINTS = 10  # below this, PCA is used for the map
MAX_ERRORS_SHOWN = 20
_ESC = html.escape

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.meta { color: #555; font-size: .95em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .93em; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.skipped { color: #a60; font-style: italic; }
figure { margin: .8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; margin-top: .3em; }
pre { background: #f8f8f8; padding: .8em; overflow-x: auto; font-size: .85em; }
code { font-size: .92em; }
dl.glossary dt { font-weight: 600; margin-top: .4em; } dl.glossary dd { margin-left: 1.5em; color: #333; }
"""

_GLOSSARY = (  # (term, definition); similarities are cosines of L2-normalised fingerprint embeddings
    ("accuracy (1:N)", "share of query images whose most similar model prototype is their true model's."),
    ("macro-F1", "F1 score (harmonic mean of precision and recall) of each model, averaged over models, so every "
                 "model weighs the same whatever its number of images."),
    ("ROC AUC", "probability that a random same-model pair is more similar than a random different-model pair "
                "(1 perfect, 0.5 chance)."),
    ("EER", "equal error rate: the error rate at the similarity threshold where as many same-model pairs are "
            "rejected as different-model pairs accepted (lower is better)."),
    ("TPR @ 1% FPR", "share of same-model pairs accepted at the threshold that accepts 1% of different-model "
                     "pairs."),
    ("accuracy @ validation threshold", "share of test pairs decided right with the threshold chosen on the "
                                        "validation pairs (never on the test pairs)."),
    ("AUROC (known vs unknown)", "probability that an image of an enrolled model is more similar to its best "
                                 "prototype than an image of an unknown model is to its best one."),
    ("OSCR", "open-set classification rate: area under the curve of correctly attributed known images against "
             "accepted unknown images, over all thresholds (1 perfect)."),
    ("operating point", "the \"unknown\" threshold modelprint identify uses: calibrated on the enrolled images as "
                        "a gallery does; below it the answer is \"unknown\"."),
    ("silhouette", "how much closer images lie to their own model's images than to the nearest other model's "
                   "(cosine distance; −1 to 1, higher is better)."),
    ("Davies–Bouldin", "mean ratio of the models' spread to the distance between them (lower is better)."),
    ("95% CI", "percentile bootstrap interval: queries or pairs resampled within their classes."),
)


# ------------------------------------------------------------------------------------------------ helpers


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


def _fmt_ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "—"
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_html(fig: Figure, alt: str, caption: str, fig_id: str) -> str:
    return (
        f'<figure id="{fig_id}"><img alt="{_ESC(alt)}" src="{_png_data_uri(fig)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _class_colors(n: int) -> list[Any]:
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, n)]


# ------------------------------------------------------------------------------------------------ figures


def _confusion_figure(result: EvaluationResult) -> Figure:
    ident = result.identification
    names = [_short(n) for n in ident.labels]
    cm = np.asarray(ident.confusion_matrix, dtype=np.float64)
    k = len(names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(max(4.0, 0.45 * k + 2.0), 16.0)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true model's queries")
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8 if k > 12 else 9)
    ax.set_yticks(range(k), names, fontsize=8 if k > 12 else 9)
    ax.set_xlabel("predicted model")
    ax.set_ylabel("true model")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7 if k > 12 else 8,
                            color="white" if norm[i, j] > 0.55 else "black")
    return fig


def _roc_figure(result: EvaluationResult) -> Figure:
    ver = result.verification
    fig = _new_figure(5.0, 4.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbb", lw=1, ls="--", label="chance")
    ax.plot(ver.roc_fpr, ver.roc_tpr, color="C0", lw=2, label=f"test pairs (AUC {_fmt(ver.auc)})")
    if ver.eer is not None:
        ax.plot([ver.eer], [1.0 - ver.eer], "o", color="C3", ms=7, label=f"EER {_fmt(ver.eer)}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-positive rate (different models accepted)")
    ax.set_ylabel("true-positive rate (same model accepted)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def embedding_map_2d(embeddings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of L2-normalised ``embeddings`` and the method used (``"t-SNE"`` or ``"PCA"``).

    t-SNE (scikit-learn, PCA initialisation, ``random_state=seed``) with perplexity ``min(30, (n - 1) / 3)``
    (so it stays valid for small n) after reducing to at most 50 dimensions by PCA; plain PCA when
    ``n < 10``. Missing dimensions (d = 1, or n = 1) are padded with zeros.
    """
    from sklearn.decomposition import PCA

    x = l2_normalize(embeddings, np.float64)
    n, d = x.shape
    if n < TSNE_MIN_POINTS:
        n_comp = min(2, n, d)
        coords = PCA(n_components=n_comp, random_state=seed).fit_transform(x) if n_comp >= 1 and n > 1 else x[:, :0]
        method = "PCA"
    else:
        from sklearn.manifold import TSNE

        if d > 50:
            x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
        if x.shape[1] < 2:
            x = np.hstack([x, np.zeros((n, 2 - x.shape[1]))])
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                      random_state=seed).fit_transform(x)
        method = "t-SNE"
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((n, 2 - coords.shape[1]))])
    return coords, method


def _subsample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices of a class-stratified random subset of at most ``limit`` rows (all rows if fewer)."""
    n = labels.size
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, int(round(limit * rows.size / n)))
        keep.append(rng.choice(rows, size=min(take, rows.size), replace=False))
    return np.sort(np.concatenate(keep))


def _embedding_figure(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> tuple[Figure, str, int]:
    rows = _subsample(labels, MAX_MAP_POINTS, seed)
    coords, method = embedding_map_2d(embeddings[rows], seed=seed)
    lab = labels[rows]
    classes = sorted(np.unique(lab).tolist())
    colors = _class_colors(len(classes))
    fig = _new_figure(7.5, 6.0)
    ax = fig.add_subplot()
    size = 26 if rows.size < 300 else 12 if rows.size < 1000 else 6
    for color, c in zip(colors, classes, strict=True):
        sel = lab == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=color, alpha=0.8, lw=0, label=_short(c))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{method} of the fingerprint embeddings", fontsize=10)
    if len(classes) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=1.5, frameon=False)
    return fig, method, int(rows.size)


def _spectra_figure(mean_spectra: dict[str, np.ndarray], order: Sequence[str]) -> Figure:
    """One panel per model on axes of normalised frequency, all on one colour scale (shown beside them)."""
    names = [n for n in order if n in mean_spectra] + sorted(n for n in mean_spectra if n not in set(order))
    arrays = []
    for name in names:
        arr = np.asarray(mean_spectra[name], dtype=np.float64)
        if arr.ndim == 3:  # tolerate (H, W, C) by averaging channels
            arr = arr.mean(axis=2)
        if arr.ndim != 2:
            raise ValueError(f"mean spectrum of {name!r} must be a 2-D array, got shape {arr.shape}")
        arrays.append(arr)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    lo, hi = np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0)
    k = len(names)
    ncols = min(6, k)
    nrows = math.ceil(k / ncols)
    fig = _new_figure(2.3 * ncols + 0.8, 2.5 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for i, ax in enumerate(axes.ravel()):
        if i >= k:
            ax.set_visible(False)
            continue
        image = ax.imshow(arrays[i], cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1e-12,
                          interpolation="nearest", origin="lower", extent=(-0.5, 0.5, -0.5, 0.5))
        ax.set_title(_short(names[i], 20), fontsize=8)
        ax.set_xticks([-0.5, 0, 0.5])
        ax.set_yticks([-0.5, 0, 0.5])
        ax.tick_params(labelsize=6)
        if i // ncols == nrows - 1 or i + ncols >= k:
            ax.set_xlabel("horizontal frequency (cycles/px)", fontsize=6)
        if i % ncols == 0:
            ax.set_ylabel("vertical frequency (cycles/px)", fontsize=6)
    fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02).set_label(
        "log power of the noise residual", fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------------- tables


def _summary_rows(result: EvaluationResult) -> list[tuple[str, str, str, str]]:
    """(group, metric, value, 95% CI) rows; a skipped protocol is one row naming the reason."""
    ident, ver, osr, clu = result.identification, result.verification, result.open_set, result.clustering
    rows = [
        ("1:N identification", "accuracy", _fmt(ident.accuracy), _fmt_ci(ident.accuracy_ci)),
        ("1:N identification", "macro-F1", _fmt(ident.macro_f1), _fmt_ci(ident.macro_f1_ci)),
    ]
    if ver.skipped:
        rows.append(("1:1 verification", "skipped", ver.skipped, ""))
    else:
        rows += [
            ("1:1 verification", "ROC AUC", _fmt(ver.auc), _fmt_ci(ver.auc_ci)),
            ("1:1 verification", "EER", _fmt(ver.eer), ""),
            ("1:1 verification", "TPR @ 1% FPR", _fmt(ver.tpr_at_1pct_fpr), ""),
            ("1:1 verification", f"accuracy @ validation threshold {_fmt(ver.threshold)}", _fmt(ver.accuracy),
             _fmt_ci(ver.accuracy_ci)),
        ]
        rows += [("1:1 verification", name, _fmt(v), "") for name, v in sorted(ver.metrics.items())]
    if osr.skipped:
        rows.append(("open set", "skipped", osr.skipped, ""))
    else:
        rows += [
            ("open set", "AUROC (known vs unknown)", _fmt(osr.auroc), ""),
            ("open set", "OSCR", _fmt(osr.oscr), ""),
        ]
    rows += [
        ("clustering", "silhouette (cosine, ↑)", _fmt(clu.silhouette), ""),
        ("clustering", "Davies–Bouldin (↓)", _fmt(clu.davies_bouldin), ""),
    ]
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_ESC(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_ESC(c)}</td>' if i in numeric else f"<td>{_ESC(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ------------------------------------------------------------------------------------------------- report


def write_html_report(
    result: EvaluationResult,
    path: str | Path,
    *,
    embeddings: np.ndarray,
    labels: Sequence[str],
    mean_spectra: dict[str, np.ndarray] | None = None,
    title: str = "modelprint evaluation report",
) -> None:
    """Write ONE self-contained HTML file (atomically) describing ``result``.

    Sections: a header (modelprint version, method tag, date), the models left out and why, a summary table of
    all metrics with 95% bootstrap CIs, the identification confusion matrix and the most confident mistakes (by
    the paths in ``result``, as the caller gave them), the verification ROC curve on test pairs with the EER
    point, the open-set operating point ``modelprint identify`` uses, a 2-D map of ``embeddings`` coloured by
    ``labels`` (t-SNE, or PCA below 10 images; a class-stratified subset above 1500 images), the mean spectrum
    per model on frequency axes with one colour scale when ``mean_spectra`` (model name → 2-D array, computed by
    the caller) is given, a glossary of the metrics, the settings, and the full result as JSON.
    """
    emb = np.asarray(embeddings)
    lab = np.asarray([str(v) for v in labels])
    if emb.ndim != 2 or emb.shape[0] != lab.size:
        raise ValueError(f"embeddings must be (n, d) with one label per row; got {emb.shape} and {lab.size} labels")

    ident, ver, osr = result.identification, result.verification, result.open_set
    parts: list[str] = []
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"modelprint {_ESC(__version__)} · method <code>{_ESC(result.method or 'unnamed')}</code> · "
        f"{result.n_models} models · {result.n_images} images · support {result.support} per model · "
        f"seed {result.seed} · written {written}"
    )
    parts.append(f"<h1>{_ESC(title)}</h1><p class='meta'>{meta}</p>")
    if result.dropped_classes:
        dropped = "; ".join(f"{_ESC(k)}: {_ESC(v['reason'])}" for k, v in sorted(result.dropped_classes.items()))
        parts.append(f"<p class='skipped' id='dropped'>Models left out: {dropped}</p>")

    parts.append("<h2>Summary</h2>")
    parts.append(_table(["protocol", "metric", "value", "95% CI"], _summary_rows(result), numeric=(2, 3)))
    parts.append(
        f"<p class='meta'>Identification: {ident.n_queries} queries against prototypes of {ident.n_support} "
        f"images per model. Verification: threshold chosen on {ver.n_val_pairs} validation pairs "
        f"({ver.n_val_images} images), metrics on {ver.n_test_pairs} test pairs ({ver.n_test_images} other images)."
        + (
            f" Open set: unknown models {_ESC(', '.join(osr.unknown_classes))} "
            f"({osr.n_unknown} images) vs {osr.n_known} known queries."
            if not osr.skipped
            else ""
        )
        + " CIs: percentile bootstrap.</p>"
    )

    parts.append("<h2>Identification: confusion matrix</h2>")
    parts.append(
        _figure_html(
            _confusion_figure(result),
            "confusion matrix",
            "Rows: true model; columns: predicted model. Colour: fraction of the row; numbers: counts.",
            "fig-confusion",
        )
    )
    per_class = [
        (name, _fmt(acc), str(sum(row))) for name, acc, row in
        zip(ident.labels, [ident.per_class_accuracy.get(n) for n in ident.labels], ident.confusion_matrix,
            strict=True)
    ]
    parts.append(_table(["model", "accuracy", "queries"], per_class, numeric=(1, 2)))
    if ident.errors:
        shown = ident.errors[:MAX_ERRORS_SHOWN]
        rows = [
            (e.get("path", f"#{e['index']}"), e["true"], e["predicted"], _fmt(e["score"]), _fmt(e["score_true"]))
            for e in shown
        ]
        n_wrong = ident.n_queries - sum(row[i] for i, row in enumerate(ident.confusion_matrix))
        parts.append(f"<h3>Most confident mistakes ({len(shown)} of {n_wrong})</h3>")
        parts.append(_table(["image", "true", "predicted", "similarity", "similarity to true"], rows, numeric=(3, 4)))

    parts.append("<h2>Verification: ROC curve</h2>")
    if ver.skipped:
        parts.append(f"<p class='skipped'>Skipped: {_ESC(ver.skipped)}</p>")
    else:
        parts.append(
            _figure_html(
                _roc_figure(result),
                "ROC curve",
                f"Test pairs only. EER {_fmt(ver.eer)} at similarity {_fmt(ver.eer_threshold)}; the validation "
                f"threshold {_fmt(ver.threshold)} gives accuracy {_fmt(ver.accuracy)} on test pairs.",
                "fig-roc",
            )
        )

    parts.append("<h2 id='operating-point'>Open set: the operating point of <code>modelprint identify</code></h2>")
    if osr.skipped:
        parts.append(f"<p class='skipped'>Skipped: {_ESC(osr.skipped)}</p>")
    else:
        parts.append(_table(["", "value"], [
            ("unknown threshold (cosine similarity)", _fmt(osr.unknown_threshold, 4)),
            ("known-model queries answered with a model", _fmt(osr.known_accepted)),
            ("known-model queries answered with their true model", _fmt(osr.known_correct)),
            ("unknown-model images answered \"unknown\"", _fmt(osr.unknown_rejected)),
        ], numeric=(1,)))
        parts.append(
            f"<p class='meta'>A gallery enrolled with the support images of the {len(osr.known_classes)} known "
            f"models calibrates this threshold, and identify answers \"unknown\" below it. Rule: "
            f"{_ESC(osr.threshold_rule or 'not recorded')}.</p>"
        )

    parts.append("<h2>Embedding map</h2>")
    fig, method, n_points = _embedding_figure(emb, lab, result.seed)
    parts.append(
        _figure_html(
            fig,
            "2-D embedding map",
            f"{method} of {n_points} of {lab.size} images (cosine geometry: embeddings L2-normalised), "
            "coloured by model.",
            "fig-embedding",
        )
    )

    if mean_spectra:
        parts.append("<h2>Mean spectrum per model</h2>")
        parts.append(
            _figure_html(
                _spectra_figure(mean_spectra, result.labels),
                "mean spectra",
                "Centred Welch log-power spectrum of each model's noise residuals (mean over its images), on "
                "axes of normalised frequency; one colour scale for all panels (1st–99.5th percentile).",
                "fig-spectra",
            )
        )

    parts.append("<h2>Glossary</h2><dl class='glossary'>"
                 + "".join(f"<dt>{_ESC(t)}</dt><dd>{_ESC(d)}</dd>" for t, d in _GLOSSARY) + "</dl>")

    parts.append("<h2>Settings and raw result</h2>")
    settings = [(k, str(v)) for k, v in sorted(result.config.items())]
    parts.append(_table(["setting", "value"], [("seed", str(result.seed)), ("support", str(result.support)),
                                               *settings]))
    raw = json.dumps(result.to_dict(), indent=1, allow_nan=False)
    parts.append(f"<details><summary>result JSON</summary><pre>{_ESC(raw)}</pre></details>")

    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_ESC(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    atomic.write_text(path, doc)
