"""Counterfactual anonymization: small L∞ perturbations that change what a gallery attributes an image to.

Projected gradient descent (PGD, sign steps, random start) on the pixels through a method's differentiable
embedding (:mod:`modelprint.methods.differentiable`), against the gallery's own prototypes and "unknown"
threshold. With ``s_j`` the cosine similarity of the image's fingerprint to model ``j``'s prototype and ``τ`` the
threshold (``-∞`` when the gallery has none), the objective minimised is

- ``untargeted``: ``s_src − max(max_{j≠src} s_j, τ)``: the source stops winning (another model or "unknown" does);
- ``targeted``: ``max(max_{j≠M} s_j, τ) − s_M``: model ``M`` wins;
- ``counterfactual``: ``−cos(f(x), v)`` with ``v = f − (f·p_src) p_src + (f·p_src) p_M``: the original fingerprint
  ``f`` with its component along the source prototype swapped for the same amount along ``M``'s (``M`` the
  given target, else the runner-up model); success is ``M`` winning.

The attack stops once the goal holds by ``margin`` and still holds on the 8-bit image (quantised inside the ε ball:
every pixel within ε of the original, in 8-bit steps); success is then judged again by the gallery's own
identification of the saved pixels through the method's ordinary (NumPy) path. Without success it returns the
iterate with the lowest objective.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from modelprint.errors import AttackError
from modelprint.gallery import Gallery
from modelprint.gallery.results import Identification
from modelprint.methods import FingerprintMethod
from modelprint.methods.differentiable import images_tensor, why_not_differentiable
from modelprint.registry import Parametrised

MODES = ("untargeted", "targeted", "counterfactual")


def parse_epsilon(text: str | float) -> float:
    """An L∞ budget in [0, 1] pixel units from ``"4/255"``, ``"0.0157"`` or a number; one-line error otherwise."""
    try:
        value = float(Fraction(str(text).strip())) if not isinstance(text, float) else text
    except (ValueError, ZeroDivisionError):
        raise AttackError(f"epsilon {text!r} is not a number or a fraction such as 4/255") from None
    if not 0 < value < 1 or not math.isfinite(value):
        raise AttackError(f"epsilon {text!r} must lie strictly between 0 and 1 (pixel units; e.g. 4/255)")
    return value


def quantise_in_ball(x: np.ndarray, original: np.ndarray, epsilon: float) -> np.ndarray:
    """``x`` (floats in [0, 1]) as uint8, each value the nearest 8-bit level within ``epsilon`` of ``original``
    (the nearest level to ``original`` itself when no level is that close)."""
    lo = np.ceil((original - epsilon) * 255.0 - 1e-6)
    hi = np.floor((original + epsilon) * 255.0 + 1e-6)
    empty = lo > hi
    lo[empty] = hi[empty] = np.rint(original[empty] * 255.0)
    return np.clip(np.clip(np.rint(x * 255.0), lo, hi), 0, 255).astype(np.uint8)


def image_quality(original: np.ndarray, attacked: np.ndarray) -> dict[str, float]:
    """PSNR (dB, on the 0–255 scale; ``inf`` for identical images), SSIM (scikit-image, per channel) and the
    realised L∞ distance (pixel units) of an 8-bit ``attacked`` image from the ``original`` floats in [0, 1]."""
    from skimage.metrics import structural_similarity

    ref = original.astype(np.float64) * 255.0
    if np.abs(ref - np.rint(ref)).max() < 1e-3:  # an 8-bit original: compare with its exact levels
        ref = np.rint(ref)
    out = attacked.astype(np.float64)
    mse = float(np.mean((ref - out) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    ssim = float(structural_similarity(ref, out, channel_axis=2, data_range=255.0))
    return {"psnr": psnr, "ssim": ssim, "linf": round(float(np.abs(out - ref).max()), 4) / 255.0}


class GalleryJudge:
    """A gallery's prototypes, "unknown" threshold and identification for one method: what an attack aims at and
    what decides its success (the same rule as ``modelprint identify``)."""

    def __init__(self, gallery: Gallery, method: FingerprintMethod, threshold: float | None = None) -> None:
        if (method.name, method.version) not in gallery.methods():
            raise AttackError(f"{gallery.path}: gallery holds no {method.tag} embeddings")
        self.gallery = gallery
        self.method = method
        self.names, self.prototypes = gallery.prototypes(method.name, method.version)
        self.threshold = threshold if threshold is not None else gallery.open_set_threshold(
            method.name, method.version).value

    def index(self, model: str) -> int:
        if model not in self.names:
            raise AttackError(f"{self.gallery.path}: model {model!r} is not in the gallery (it holds "
                              f"{', '.join(self.names)})")
        return self.names.index(model)

    def identify(self, pixels: np.ndarray) -> Identification:
        """The gallery's decision on one image (uint8 or float in [0, 1]) through the method's ordinary path."""
        image = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels
        vector = self.method.embed([image])
        return self.gallery.identify_embeddings(vector, self.method.name, self.method.version,
                                                top_k=len(self.names), threshold=self.threshold)[0]


@dataclass
class AttackResult:
    """One anonymized image: ``pixels`` (uint8, the input's size), the decisions before and after, and its cost."""

    pixels: np.ndarray
    mode: str
    source: str
    target: str | None
    before: Identification
    after: Identification
    success: bool
    steps: int
    seconds: float
    quality: dict[str, float]
    notes: list[str] = field(default_factory=list)
    last_step_size: float | None = None  # the step size when the attack stopped (None: no step taken)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the pixels; ``psnr`` is ``None`` when the image was left unchanged."""

        def decision(d: Identification) -> dict[str, Any]:
            return {"prediction": d.model, "similarity": d.similarity, "threshold": d.threshold,
                    "top_k": [{"model": m, "similarity": s} for m, s in d.top_k]}

        return {"success": self.success, "mode": self.mode, "source": self.source, "target": self.target,
                "attributed_to_source_before": self.before.model == self.source,
                "before": decision(self.before), "after": decision(self.after), "steps": self.steps,
                "seconds": self.seconds, **self.quality, "linf_255": self.quality["linf"] * 255.0,
                "psnr": self.quality["psnr"] if math.isfinite(self.quality["psnr"]) else None,
                "last_step_size_255": None if self.last_step_size is None else self.last_step_size * 255.0,
                "notes": list(self.notes)}


class Anonymizer(Parametrised):
    """PGD anonymization within an L∞ ball (see the module docstring).

    Parameters
    ----------
    epsilon:
        L∞ budget in pixel units (``4/255``).
    steps:
        At most this many gradient steps.
    step_size:
        Size of the first sign steps; ``None``: ``epsilon / 4``.
    patience:
        After this many steps without a lower objective the step size halves (at most three times) and the attack
        goes on from its best iterate, as step-size schedules of PGD variants do; ``0`` keeps one step size.
    mode:
        ``untargeted``, ``targeted`` or ``counterfactual``.
    target:
        The model to be attributed to (``targeted``: required; ``counterfactual``: default the runner-up).
    margin:
        Cosine similarity by which the goal must hold before the attack stops.
    random_start:
        Start from a uniform random point of the ball (drawn from ``seed``; the same for every image).
    seed:
        Seed of the random start.
    """

    def __init__(self, epsilon: float = 4 / 255, steps: int = 50, step_size: float | None = None, patience: int = 3,
                 mode: str = "untargeted", target: str | None = None, margin: float = 0.01,
                 random_start: bool = False, seed: int = 0) -> None:
        if mode not in MODES:
            raise AttackError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "targeted" and target is None:
            raise AttackError("a targeted attack needs a target model")
        if (not 0 < epsilon < 1 or steps < 0 or (step_size is not None and not step_size > 0) or margin < 0
                or patience < 0):
            raise AttackError(f"need 0 < epsilon < 1, steps ≥ 0, step_size > 0, patience ≥ 0 and margin ≥ 0; got "
                              f"{epsilon}, {steps}, {step_size}, {patience}, {margin}")
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.step_size = step_size
        self.patience = int(patience)
        self.mode = mode
        self.target = target
        self.margin = float(margin)
        self.random_start = bool(random_start)
        self.seed = int(seed)

    def attack(self, judge: GalleryJudge, image: np.ndarray, source: str | None = None) -> AttackResult:
        """Anonymize one ``(H, W, 3)`` float image in [0, 1] against ``judge``'s gallery; ``source`` defaults to
        the gallery's top-1 model for the image."""
        import torch

        start = time.perf_counter()
        before = judge.identify(image)
        src = judge.index(source if source is not None else before.top_k[0][0])
        target = self._target(judge, src, before)
        if self.mode == "untargeted" and len(judge.names) < 2 and judge.threshold is None:
            raise AttackError(f"{judge.gallery.path}: one model and no 'unknown' threshold: nothing else can win")
        fixed, notes = self._fixed_views(judge.method, image)
        x0 = images_tensor([image])
        protos = torch.from_numpy(judge.prototypes.astype(np.float32))
        goal = _Goal(self.mode, src, None if target is None else judge.index(target), judge.threshold, protos,
                     self._counterfactual(judge, image, src, target))

        def embed(x: Any) -> Any:
            e = judge.method.embed_torch(x, fixed=fixed) if fixed else judge.method.embed_torch(x)
            return torch.nn.functional.normalize(e, dim=1)[0]

        def holds_quantised(x: Any) -> tuple[bool, np.ndarray]:
            q = quantise_in_ball(x[0].detach().numpy().transpose(1, 2, 0), image, self.epsilon)
            with torch.no_grad():
                f = embed(images_tensor([q.astype(np.float32) / 255.0]))
            return goal.achieved(f, 0.0), q

        taken, alpha = 0, None
        done, q = holds_quantised(x0)
        if not done:
            delta = torch.zeros_like(x0)
            if self.random_start:
                gen = torch.Generator().manual_seed(self.seed)
                delta = ((torch.rand(x0.shape, generator=gen) * 2 - 1) * self.epsilon).clamp(-x0, 1 - x0)
            alpha = self.step_size if self.step_size is not None else self.epsilon / 4
            best_loss, best, stale, floor = math.inf, x0, 0, alpha / 8
            while True:
                x = (x0 + delta).requires_grad_(True)
                f = embed(x)
                loss = goal.loss(f)
                if float(loss.detach()) < best_loss:
                    best_loss, best, stale = float(loss.detach()), x.detach(), 0
                else:
                    stale += 1
                if goal.achieved(f.detach(), self.margin):
                    done, q = holds_quantised(x.detach())
                if done or taken == self.steps:
                    break
                if self.patience and stale >= self.patience and alpha > floor:
                    alpha, stale = alpha / 2, 0
                    x = best.clone().requires_grad_(True)
                    loss = goal.loss(embed(x))
                    delta = best - x0
                (grad,) = torch.autograd.grad(loss, x)
                delta = (delta - alpha * grad.sign()).clamp(-self.epsilon, self.epsilon)
                delta = (x0 + delta).clamp(0, 1) - x0
                taken += 1
            if not done:
                q = holds_quantised(best)[1]
        after = judge.identify(q)
        success = after.model != judge.names[src] if self.mode == "untargeted" else after.model == target
        return AttackResult(q, self.mode, judge.names[src], target, before, after, success, taken,
                            time.perf_counter() - start, image_quality(image, q), notes,
                            alpha if taken else None)

    def _target(self, judge: GalleryJudge, src: int, before: Identification) -> str | None:
        if self.mode == "untargeted":
            return None
        if self.target is not None:
            if judge.index(self.target) == src:
                raise AttackError(f"target {self.target!r} is the image's source; choose another model")
            return self.target
        runner_up = [m for m, _ in before.top_k if m != judge.names[src]]
        if not runner_up:
            raise AttackError(f"{judge.gallery.path}: a counterfactual needs a second model in the gallery")
        return runner_up[0]

    @staticmethod
    def _fixed_views(method: FingerprintMethod, image: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
        """For a fused method: the views without a differentiable path, held at the original's embedding (and a
        note for each); any other method without one is an :class:`AttackError`."""
        reason = why_not_differentiable(method)
        views = getattr(method, "views", None)
        if reason is None:
            return {}, []
        if not views:
            raise AttackError(f"cannot attack {method.tag}: {reason}")
        fixed = {n: method.view_method(n).embed([image]) for n, _ in views
                 if why_not_differentiable(method.view_method(n))}
        if len(fixed) == len(views):
            raise AttackError(f"cannot attack {method.tag}: none of its views is differentiable ({reason})")
        notes = [f"view {n} not attacked (held at the original's embedding): "
                 f"{why_not_differentiable(method.view_method(n))}" for n in fixed]
        return fixed, notes

    def _counterfactual(self, judge: GalleryJudge, image: np.ndarray, src: int, target: str | None) -> Any:
        """The counterfactual fingerprint ``v`` (unit torch vector), or ``None`` outside that mode."""
        import torch

        if self.mode != "counterfactual" or target is None:
            return None
        f = judge.method.embed([image])[0].astype(np.float64)
        f /= max(np.linalg.norm(f), 1e-12)
        p_s, p_t = judge.prototypes[src].astype(np.float64), judge.prototypes[judge.index(target)].astype(np.float64)
        v = f - (f @ p_s) * p_s + (f @ p_s) * p_t
        return torch.from_numpy((v / max(np.linalg.norm(v), 1e-12)).astype(np.float32))


class _Goal:
    """The objective of one attack on unit fingerprints ``f`` (torch), and whether its decision goal holds."""

    def __init__(self, mode: str, src: int, target: int | None, threshold: float | None, protos: Any,
                 counterfactual: Any) -> None:
        self.mode, self.src, self.target, self.protos, self.v = mode, src, target, protos, counterfactual
        self.threshold = -math.inf if threshold is None else float(threshold)

    def _gap(self, f: Any, j: int) -> Any:
        """``s_j − max(max_{i≠j} s_i, τ)``: positive when model ``j`` wins."""
        import torch

        sims = self.protos @ f
        others = torch.cat([sims[:j], sims[j + 1 :]])
        rival = others.max() if len(others) else sims.new_tensor(-math.inf)
        return sims[j] - torch.clamp(rival, min=self.threshold)

    def loss(self, f: Any) -> Any:
        if self.mode == "untargeted":
            return self._gap(f, self.src)
        if self.mode == "targeted":
            return -self._gap(f, self.target)
        return -(f @ self.v)

    def achieved(self, f: Any, margin: float) -> bool:
        if self.mode == "untargeted":
            return float(self._gap(f, self.src)) < -margin
        return float(self._gap(f, self.target)) > margin
