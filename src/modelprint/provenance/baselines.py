"""Membership-inference baselines on the same :class:`~modelprint.probes.candidates.DiffusionCandidate` and images
as the trajectory features (``docs``: the provenance anchors). Each measures one score per candidate timestep; ``fit``
on a validation split keeps the timestep with the best AUC (never the test split: the anchors' PIA and SimA code
picks it on test), and the protocol picks the threshold on validation too.

- ``naive-loss``: minus the log denoising loss at one ``t`` (``repeats`` noises): ``T·R`` calls.
- ``secmi``: SecMI's statistical version, minus the log t-error after a deterministic DDIM inversion to ``t − k``
  in steps of ``k`` (default ``t ≤ 300``, ``k = 10``); one shared inversion chain serves every ``t``.
- ``pia`` / ``pian``: minus the log proximal-initialisation error (PIAN: ε₀ rescaled to Gaussian scale).
- ``sima``: minus the log ``mean ε̂(x₀, t)⁴`` on the clean image.
- ``gsa1`` / ``gsa2``: log L2 norms of the training-loss gradient per parameter tensor (GSA1: loss averaged over
  ``K = 10`` timesteps, one backward; GSA2: one backward per timestep, norms averaged), with a logistic regression
  (``linear``) or gradient boosting (``boosted``) fitted on the auditor's budget; features are standardised with
  the fitted rows' statistics, never the target set's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelprint.errors import ProbeError
from modelprint.probes.base import ProbeProgress, check_fitted, check_timesteps, validated
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.probes.loss import DenoisingLossProbe
from modelprint.provenance.base import ATTACKS, CallMeter, MembershipAttack, fit_rows, log_positive
from modelprint.provenance.measures import clean_norms, gradient_norms, proximal_errors, t_errors

__all__ = ["GSA", "GSA2", "PIA", "PIAN", "NaiveLoss", "SecMI", "SimA"]

_EARLY = (10, 20, 50, 100, 150, 200, 300)


@ATTACKS.register("naive-loss")
class NaiveLoss(MembershipAttack):
    """Minus the log denoising loss at each candidate timestep."""

    def __init__(self, timesteps: Sequence[int] = _EARLY, repeats: int = 4, seed: int = 0, batch_size: int = 64
                 ) -> None:
        self.timesteps = timesteps
        self.repeats = repeats
        self.seed = seed
        self.batch_size = batch_size

    def _probe(self) -> DenoisingLossProbe:
        return DenoisingLossProbe(self.timesteps, self.repeats, self.seed, self.batch_size)

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        return self._probe().calls_per_image

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        return -self._probe().signature(denoiser, images, progress)


@ATTACKS.register("secmi")
class SecMI(MembershipAttack):
    """Minus the log SecMI t-error at each candidate timestep ``t`` (inversion to ``t − k``, up to ``t``, back)."""

    def __init__(self, timesteps: Sequence[int] = (20, 50, 100, 150, 200, 300), k: int = 10, batch_size: int = 64
                 ) -> None:
        self.timesteps = timesteps
        self.k = k
        self.batch_size = batch_size

    def _chain(self, denoiser: DiffusionCandidate) -> tuple[list[int], list[int]]:
        steps, k = check_timesteps(denoiser, self.timesteps, "secmi"), int(self.k)
        if k < 1 or min(steps) < k:
            raise ProbeError(f"secmi: every timestep must be >= k = {k} >= 1, got {steps}")
        points = [t - k for t in steps]
        return sorted(set(range(k, max(steps) - k + 1, k)) | set(points) - {0}), points

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        chain, points = self._chain(denoiser)
        return len(chain) + 2 * len(points)

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        chain, points = self._chain(denoiser)
        z0 = denoiser.to_model_space(images)
        meter = CallMeter(len(z0) * self.calls_per_image(denoiser), progress)
        return -log_positive(t_errors(denoiser, z0, chain, points, int(self.k), meter, int(self.batch_size)))


@ATTACKS.register("pia")
class PIA(MembershipAttack):
    """Minus the log PIA error ``mean (ε̂(x_t, t) − ε₀)⁴`` with ``ε₀ = ε̂(x₀, 0)``, at each candidate timestep."""

    normalise: ClassVar[bool] = False

    def __init__(self, timesteps: Sequence[int] = _EARLY, batch_size: int = 64) -> None:
        self.timesteps = timesteps
        self.batch_size = batch_size

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        return 1 + len(check_timesteps(denoiser, self.timesteps, self.name))

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        steps = check_timesteps(denoiser, self.timesteps, self.name)
        z0 = denoiser.to_model_space(images)
        meter = CallMeter(len(z0) * (1 + len(steps)), progress)
        return -log_positive(proximal_errors(denoiser, z0, steps, meter, self.normalise, int(self.batch_size)))


@ATTACKS.register("pian")
class PIAN(PIA):
    """PIA with ε₀ standardised per image to Gaussian scale."""

    normalise = True


@ATTACKS.register("sima")
class SimA(MembershipAttack):
    """Minus the log ``mean ε̂(x₀, t)⁴`` of the clean image at each candidate timestep."""

    def __init__(self, timesteps: Sequence[int] = (0, 10, 20, 50, 100, 150, 200), batch_size: int = 64) -> None:
        self.timesteps = timesteps
        self.batch_size = batch_size

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        return len(check_timesteps(denoiser, self.timesteps, "sima"))

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        steps = check_timesteps(denoiser, self.timesteps, "sima")
        z0 = denoiser.to_model_space(images)
        meter = CallMeter(len(z0) * len(steps), progress)
        return -log_positive(clean_norms(denoiser, z0, steps, meter, int(self.batch_size)))


@ATTACKS.register("gsa1")
class GSA(MembershipAttack):
    """GSA: log per-parameter-tensor gradient norms, classified by a model fitted on the auditor's budget.

    ``timesteps`` default to ``K = 10`` evenly spaced ones (99, 199, …, 999 for 1000 steps); ``classifier`` is
    ``linear`` (standardised logistic regression) or ``boosted`` (histogram gradient boosting, seeded).
    """

    learned = True
    variant: ClassVar[int] = 1

    def __init__(self, timesteps: Sequence[int] | None = None, classifier: Literal["linear", "boosted"] = "boosted",
                 grouping: Literal["tensor", "block"] = "tensor", seed: int = 0, batch_size: int = 64) -> None:
        self.timesteps = timesteps
        self.classifier = classifier
        self.grouping = grouping
        self.seed = seed
        self.batch_size = batch_size

    def _steps(self, denoiser: DiffusionCandidate) -> list[int]:
        total = denoiser.num_timesteps
        steps = self.timesteps if self.timesteps is not None else [total * i // 10 - 1 for i in range(1, 11)]
        return check_timesteps(denoiser, steps, self.name)

    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        return len(self._steps(denoiser))

    def backwards_per_image(self, denoiser: DiffusionCandidate) -> int:
        return 1 if self.variant == 1 else len(self._steps(denoiser))

    def settings(self) -> list[str]:
        return []

    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        steps = self._steps(denoiser)
        z0 = denoiser.to_model_space(images)
        meter = CallMeter(len(z0) * len(steps), progress)
        noise = DenoisingLossProbe(repeats=1, seed=self.seed).noise(tuple(z0.shape[1:]))[0]
        mode = "mean_loss" if self.variant == 1 else "per_timestep"
        _, norms, _ = gradient_norms(denoiser, z0, steps, noise, meter, self.grouping, mode, int(self.batch_size))
        return log_positive(norms.mean(dim=1))

    def _model(self) -> Pipeline | HistGradientBoostingClassifier:
        if self.classifier == "linear":
            return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        if self.classifier == "boosted":
            return HistGradientBoostingClassifier(random_state=self.seed)
        raise ProbeError(f"{self.name}: unknown classifier {self.classifier!r}; known: linear, boosted")

    def fit(self, X: np.ndarray, y: Sequence[bool]) -> GSA:  # noqa: N803
        x, member = fit_rows(self, X, y)
        self.model_ = self._model().fit(x, member)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Probability of membership of each row, ``(n,)``."""
        check_fitted(self, "model_")
        return self.model_.predict_proba(validated(self, X, reset=False, dtype=np.float64))[:, 1]


@ATTACKS.register("gsa2")
class GSA2(GSA):
    """GSA2: one backward per timestep, gradient norms averaged over the timesteps."""

    variant = 2
