"""Causal decoupling: a projection of fingerprint features that keeps which model made an image and drops what the
image shows.

:class:`CausalDecoupler` is a small MLP ``x ↦ z`` (standardised input, one hidden ReLU layer, L2-normalised
output) trained with two heads on ``z``:

- **attribution**: a cosine-softmax cross-entropy over the models (normalised class weights times ``scale``), so
  that cosine similarity, which the gallery and ``evaluate`` compare embeddings with, is what separates models,
  plus ``compactness_weight`` times the mean cosine distance of each image to its model's class weight (a centre
  loss: whatever varies within one model across contents is pushed out of ``z``);
- **content adversary** behind a *gradient-reversal* layer (Ganin & Lempitsky, 2015): the adversary learns to read
  content from ``z``, the projection receives the opposite gradient and learns to hide it. The reversal weight
  ramps up as ``adversary_weight · (2 / (1 + e^{-10p}) − 1)`` over training progress ``p``, as in DANN.
  ``adversary="pairs"`` (default) is told two images of different models and says whether they show the same
  content, from ``|z_i − z_j|`` and ``z_i ⊙ z_j``; ``"content"`` names the content id. The pair adversary knows no
  content identity, so what it finds (and the projection hides) carries over to contents never trained on; the
  content-id adversary only has to be defeated on the training contents, and on planted content it left more
  leakage on new contents (tests/test_causal_decoupling.py measures both).

Why an adversary rather than an independence (HSIC) penalty: leakage is measured by a classifier that reads content
from the fingerprint, so the adversary attacks what is measured; a linear-kernel HSIC against one-hot content labels
only decorrelates ``z`` from the per-content means, which a non-linear reader can still use. An adversary can still
hide content from itself and not from a fresh reader; that is why leakage is measured by a fresh classifier
(:mod:`modelprint.causal.invariance`), never by the adversary.

**Removal form** (``rank`` > 0): instead of the MLP, ``z`` is the centred input minus its projection on ``rank``
learned orthonormal directions, started at the top principal directions of the within-model variation (nuisance
attribute projection) and refined by the same two heads without a centre loss. Everything outside those directions
is kept as it is, so models the decoupler never saw keep what tells them apart (the MLP maps every image into the
span of the training models' classes). It drops content only where content lies in a few directions: on the standard
zoo's features it kept identification but did not lower leakage (benchmarks/bench_decouplers.py).

**Selection.** Before training, a share ``val_fraction`` of the *contents* (all their images) is held out of the
gradient steps. Every ``eval_every`` epochs the projection is scored on them: model accuracy of the held-out images
against model prototypes of the training images, minus the excess over chance of content leakage on the held-out
contents (each held-out image matched to content centroids of the *other* models' images of held-out contents). The
best-scoring epoch's weights are kept. Nothing the caller holds out of :meth:`fit` is read.

Weights are saved as safetensors with a JSON sidecar (parameters, classes, input size, sha256) through
:mod:`modelprint.artefacts`; :meth:`load` checks the sha256 and any damage is one :class:`CheckpointError` line.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn

from modelprint.artefacts import one_line, open_artefact, read_tensors, write_sidecar, write_tensors
from modelprint.errors import CheckpointError, ModelprintError

__all__ = ["DECOUPLER_FORMAT", "CausalDecoupler", "cross_model_content_accuracy", "within_model_residuals"]

DECOUPLER_FORMAT = "modelprint-decoupler/1"



class _Reverse(torch.autograd.Function):
    """Gradient reversal: identity forward, ``-weight`` times the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:  # noqa: ANN401
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        return -ctx.weight * grad, None


class _Removal(nn.Module):
    """``x − U Uᵀ x``: ``x`` with ``rank`` learned directions removed (``U`` the orthonormal basis of a free
    ``(d, rank)`` matrix, by QR), everything else kept as it is."""

    def __init__(self, d_in: int, rank: int) -> None:
        super().__init__()
        self.directions = nn.Parameter(torch.randn(d_in, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.linalg.qr(self.directions)[0]
        return x - (x @ u) @ u.T


def within_model_residuals(x: np.ndarray, models: np.ndarray) -> np.ndarray:
    """``x`` minus the mean of its model's rows: how one model's images vary with what they show."""
    r = np.array(x, copy=True)
    for m in np.unique(models):
        r[models == m] -= x[models == m].mean(0)
    return r


def _within_model_directions(x: np.ndarray, models: np.ndarray, rank: int) -> torch.Tensor:
    """The ``rank`` principal directions of :func:`within_model_residuals`: the removal form's starting point,
    which the adversary then refines."""
    r = within_model_residuals(x, models)
    return torch.from_numpy(np.ascontiguousarray(np.linalg.svd(r, full_matrices=False)[2][:rank].T))


def _projection(d_in: int, hidden: int, dim: int, rank: int = 0) -> nn.Module:
    """The removal of ``rank`` directions when ``rank`` > 0, else one hidden ReLU layer of ``hidden`` units, or a
    linear map when ``hidden`` is 0."""
    if rank > 0:
        return _Removal(d_in, rank)
    if hidden == 0:
        return nn.Sequential(nn.Linear(d_in, dim))
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, dim))


def _embed(projection: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(projection(x), dim=1)


def _pair_loss(adversary: nn.Module, z: torch.Tensor, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The pair adversary's balanced loss: told two images of *different* models, does it see that they show the
    same content? Its input (``|z_i − z_j|`` and ``z_i ⊙ z_j``) carries no content identity, so what it learns to
    see (and the projection learns to hide) holds for contents it never trained on."""
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    keep = m[i] != m[j]
    i, j = i[keep], j[keep]
    same = (c[i] == c[j]).float()
    if not len(i) or same.sum() == 0 or same.sum() == len(same):
        return z.sum() * 0.0
    logits = adversary(torch.cat([(z[i] - z[j]).abs(), z[i] * z[j]], dim=1)).squeeze(1)
    weights = torch.where(same > 0, 0.5 / same.sum(), 0.5 / (len(same) - same.sum()))
    return (F.binary_cross_entropy_with_logits(logits, same, reduction="none") * weights).sum()


def _prototype_accuracy(z_ref: np.ndarray, y_ref: np.ndarray, z: np.ndarray, y: np.ndarray) -> float:
    """Share of rows of ``z`` whose nearest (cosine) class prototype of ``z_ref`` is their class."""
    classes = np.unique(y_ref)
    protos = np.stack([z_ref[y_ref == c].mean(0) for c in classes])
    protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
    return float(np.mean(classes[np.argmax(z @ protos.T, axis=1)] == y))


def cross_model_content_accuracy(z: np.ndarray, models: np.ndarray, contents: np.ndarray) -> float:
    """Content read from ``z`` by nearest content centroid, each image matched against centroids of the *other*
    models' images (so a content is recognised only through other models); images whose contents some other model
    does not cover are left out. ``nan`` if none is left."""
    hits: list[bool] = []
    uniq = np.unique(contents)
    for m in np.unique(models):
        own, other = models == m, models != m
        if not all(np.any(other & (contents == c)) for c in uniq):
            continue
        cents = np.stack([z[other & (contents == c)].mean(0) for c in uniq])
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
        hits += list(uniq[np.argmax(z[own] @ cents.T, axis=1)] == contents[own])
    return float(np.mean(hits)) if hits else float("nan")


class CausalDecoupler(TransformerMixin, BaseEstimator):
    """Projection of fingerprint features that keeps model identity and drops content (see the module).

    Parameters: ``dim`` output size, ``hidden`` hidden units, ``rank`` when > 0 the *removal* form instead of
    the MLP (the centred input minus its projection on ``rank`` learned orthonormal directions, no scaling, so the
    output keeps the input's size and geometry apart from what is removed; ``dim`` and ``hidden`` unused),
    ``adversary_weight`` the final gradient-reversal
    weight (0 trains attribution alone), ``adversary_hidden`` the adversary's hidden units, ``epochs``,
    ``batch_size``, ``lr`` and ``weight_decay`` (AdamW), ``scale`` the cosine-softmax scale, ``compactness_weight``
    the centre loss's weight, ``adversary`` ``"pairs"`` or ``"content"``, ``val_fraction`` the
    share of contents held out for selection (0: keep the last epoch), ``eval_every`` epochs between selections,
    ``seed`` (initialisation, batches, the held-out contents).
    """

    def __init__(self, dim: int = 32, hidden: int = 128, rank: int = 0, adversary: str = "pairs",
                 adversary_weight: float = 1.0,
                 adversary_hidden: int = 64,
                 epochs: int = 200, batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4,
                 scale: float = 16.0, compactness_weight: float = 1.0, val_fraction: float = 0.25,
                 eval_every: int = 10, seed: int = 0) -> None:
        self.dim = dim
        self.hidden = hidden
        self.rank = rank
        self.adversary = adversary
        self.adversary_weight = adversary_weight
        self.adversary_hidden = adversary_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.scale = scale
        self.compactness_weight = compactness_weight
        self.val_fraction = val_fraction
        self.eval_every = eval_every
        self.seed = seed

    # ------------------------------------------------------------------------------------------------- fitting
    def _split(self, contents: np.ndarray) -> np.ndarray:
        """The held-out contents: ``val_fraction`` of them, at least 2 (to measure leakage) when any, and at least
        2 left to train on; none if that is impossible."""
        uniq = np.unique(contents)
        n_val = int(round(float(self.val_fraction) * len(uniq)))
        if float(self.val_fraction) > 0:
            n_val = max(n_val, 2)
        if n_val and len(uniq) - n_val < 2:
            n_val = 0
        return np.sort(np.random.default_rng(int(self.seed)).permutation(uniq)[:n_val])

    def fit(self, X: np.ndarray, model_labels: np.ndarray, content_labels: np.ndarray) -> CausalDecoupler:  # noqa: N803
        """Train on features ``X`` ``(n, d)`` of images labelled by model and by content."""
        X = np.asarray(X, dtype=np.float32)  # noqa: N806
        models, contents = np.asarray(model_labels), np.asarray(content_labels)
        if X.ndim != 2 or not len(X) == len(models) == len(contents) or not np.isfinite(X).all():
            raise ModelprintError(f"decoupler: need finite features (n, d) and n model and content labels, got "
                                  f"{X.shape}, {len(models)}, {len(contents)}")
        if len(np.unique(models)) < 2 or len(np.unique(contents)) < 2:
            raise ModelprintError("decoupler: need at least 2 models and 2 contents")
        if (not 0.0 <= float(self.val_fraction) < 1.0 or int(self.epochs) < 1 or int(self.eval_every) < 1
                or self.adversary not in ("pairs", "content") or not 0 <= int(self.rank) < X.shape[1]):
            raise ModelprintError(f"decoupler: bad parameters {self.get_params()}")
        val_contents = self._split(contents)
        is_val = np.isin(contents, val_contents)
        fit_models, val_models = models[~is_val], models[is_val]
        self.classes_ = np.unique(models)
        if len(np.unique(fit_models)) != len(self.classes_):
            raise ModelprintError("decoupler: every model needs images of the contents it trains on")
        fit_contents = np.unique(contents[~is_val])
        self.mean_ = X[~is_val].mean(0)
        self.std_ = np.ones_like(self.mean_) if int(self.rank) else np.maximum(X[~is_val].std(0), 1e-6)
        self.n_features_in_ = X.shape[1]
        xs = torch.from_numpy((X - self.mean_) / self.std_)
        x_fit, x_val = xs[torch.from_numpy(~is_val)], xs[torch.from_numpy(is_val)]
        y = torch.from_numpy(np.searchsorted(self.classes_, fit_models))
        c = torch.from_numpy(np.searchsorted(fit_contents, contents[~is_val]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            projection = _projection(X.shape[1], int(self.hidden), int(self.dim), int(self.rank))
            if int(self.rank):
                projection.directions.data = _within_model_directions(x_fit.numpy(), fit_models, int(self.rank))
            classes = nn.Parameter(0.1 * torch.randn(len(self.classes_), self.output_dim_))
            pairs = self.adversary == "pairs"
            width = int(self.adversary_hidden)
            adversary = nn.Sequential(nn.Linear(self.output_dim_ * (2 if pairs else 1), width), nn.ReLU(),
                                      nn.Linear(width, 1 if pairs else len(fit_contents)))
        params = [*projection.parameters(), classes, *adversary.parameters()]
        opt = torch.optim.AdamW(params, lr=float(self.lr), weight_decay=float(self.weight_decay))
        gen = torch.Generator().manual_seed(int(self.seed))
        bs = min(int(self.batch_size), len(x_fit))
        per_epoch = math.ceil(len(x_fit) / bs)
        total, step = int(self.epochs) * per_epoch, 0
        best: tuple[float, dict[str, torch.Tensor], int] = (-math.inf, {}, 0)
        self.history_: list[dict[str, float]] = []
        for epoch in range(1, int(self.epochs) + 1):
            order = torch.randperm(len(x_fit), generator=gen)
            sums = np.zeros(2)
            for b in range(per_epoch):
                idx = order[b * bs:(b + 1) * bs]
                weight = float(self.adversary_weight) * (2.0 / (1.0 + math.exp(-10.0 * step / total)) - 1.0)
                z = _embed(projection, x_fit[idx])
                centres = F.normalize(classes, dim=1)
                loss_model = F.cross_entropy(float(self.scale) * z @ centres.T, y[idx])
                loss_model = loss_model + float(self.compactness_weight) * (1.0 - (z * centres[y[idx]]).sum(1)).mean()
                hidden = _Reverse.apply(z, weight)
                loss_content = (_pair_loss(adversary, hidden, y[idx], c[idx]) if pairs
                                else F.cross_entropy(adversary(hidden), c[idx]))
                opt.zero_grad(set_to_none=True)
                (loss_model + loss_content).backward()
                opt.step()
                sums += (loss_model.item(), loss_content.item())
                step += 1
            if epoch % int(self.eval_every) and epoch != int(self.epochs):
                continue
            record = {"epoch": epoch, "loss_model": sums[0] / per_epoch, "loss_content": sums[1] / per_epoch}
            if len(val_contents):
                record.update(self._validate(projection, x_fit, fit_models, x_val, val_models, contents[is_val]))
            score = record.get("val_score", float(epoch))
            if score >= best[0]:
                best = (score, copy.deepcopy(projection.state_dict()), epoch)
            self.history_.append(record)
        projection.load_state_dict(best[1])
        self.projection_ = projection.eval()
        self.best_epoch_ = best[2]
        self.val_contents_ = val_contents
        return self

    def _validate(self, projection: nn.Module, x_fit: torch.Tensor, m_fit: np.ndarray, x_val: torch.Tensor,
                  m_val: np.ndarray, c_val: np.ndarray) -> dict[str, float]:
        """Model accuracy of the held-out contents' images against the training images' model prototypes, content
        leakage across models among them, and the selection score (accuracy minus leakage above chance)."""
        with torch.no_grad():
            z_fit, z_val = _embed(projection, x_fit).numpy(), _embed(projection, x_val).numpy()
        accuracy = _prototype_accuracy(z_fit, m_fit, z_val, m_val)
        leakage = cross_model_content_accuracy(z_val, m_val, c_val)
        chance = 1.0 / len(np.unique(c_val))
        excess = max(0.0, leakage - chance) if np.isfinite(leakage) else 0.0
        return {"val_model_accuracy": accuracy, "val_content_leakage": leakage, "val_content_chance": chance,
                "val_score": accuracy - excess}

    @property
    def output_dim_(self) -> int:
        """Size of :meth:`transform`'s rows: the input's for the removal form, else ``dim``."""
        return int(self.n_features_in_) if int(self.rank) else int(self.dim)

    # ------------------------------------------------------------------------------------------------- using
    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """L2-normalised projections ``(n, output_dim_)`` float32 of features ``X`` ``(n, d)``."""
        if not hasattr(self, "projection_"):
            raise ModelprintError("decoupler: not fitted (call fit or load)")
        X = np.asarray(X, dtype=np.float32)  # noqa: N806
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ModelprintError(f"decoupler: expected features (n, {self.n_features_in_}), got {X.shape}")
        with torch.no_grad():
            z = _embed(self.projection_, torch.from_numpy((X - self.mean_) / self.std_))
        return z.numpy().astype(np.float32)

    def save(self, path: str | Path, info: Mapping[str, Any] | None = None) -> str:
        """Write the projection as safetensors and its sidecar (parameters, classes, held-out contents, history and
        ``info``, e.g. the base method), atomically; returns the sha256."""
        if not hasattr(self, "projection_"):
            raise ModelprintError("decoupler: not fitted (call fit before save)")
        tensors = {f"projection.{k}": v.contiguous() for k, v in self.projection_.state_dict().items()}
        tensors |= {"mean": torch.from_numpy(self.mean_.astype(np.float32)),
                    "std": torch.from_numpy(self.std_.astype(np.float32))}
        write_tensors(path, tensors)
        doc = {"format": DECOUPLER_FORMAT, "params": self.get_params(), "n_features_in": int(self.n_features_in_),
               "classes": self.classes_.tolist(), "val_contents": self.val_contents_.tolist(),
               "best_epoch": self.best_epoch_, "history": self.history_, "info": dict(info or {})}
        return write_sidecar(path, json.loads(json.dumps(doc, default=str)))

    @classmethod
    def load(cls, path: str | Path) -> CausalDecoupler:
        """A decoupler written by :meth:`save`, its sha256 checked; ``info_`` holds the saved ``info`` and
        ``sha256_`` the file's digest. Any problem is one :class:`CheckpointError` naming the file."""
        art = open_artefact(path, "decoupler weights")
        side = art.sidecar
        if side.get("format") != DECOUPLER_FORMAT:
            raise CheckpointError(f"{art.path}: sidecar format {side.get('format')!r}, expected "
                                  f"{DECOUPLER_FORMAT!r} (write it with CausalDecoupler.save)")
        try:
            obj = cls(**side["params"])
            d_in = int(side["n_features_in"])
            projection = _projection(d_in, int(obj.hidden), int(obj.dim), int(obj.rank))
            tensors, _ = read_tensors(art.path)
            projection.load_state_dict({k.removeprefix("projection."): v for k, v in tensors.items()
                                        if k.startswith("projection.")}, strict=True)
            mean, std = tensors["mean"].numpy(), tensors["std"].numpy()
            if mean.shape != (d_in,) or std.shape != (d_in,):
                raise ValueError(f"mean/std of shape {tuple(mean.shape)}, expected ({d_in},)")
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{art.path}: not a decoupler ({one_line(exc)})") from None
        obj.projection_, obj.mean_, obj.std_, obj.n_features_in_ = projection.eval(), mean, std, d_in
        obj.classes_ = np.asarray(side.get("classes", []))
        obj.val_contents_ = np.asarray(side.get("val_contents", []))
        obj.best_epoch_, obj.history_ = side.get("best_epoch", 0), side.get("history", [])
        obj.info_, obj.sha256_ = dict(side.get("info", {})), art.sha256
        return obj
