"""What every provenance method shares: the class labels, call counting with progress, and the interface and
registry of membership attacks (the "not fitted" check is the probes' :func:`~modelprint.probes.base.check_fitted`).

A membership attack is a two-stage estimator. :meth:`MembershipAttack.measure` sends images through a denoiser
(the expensive part: denoiser calls, backward passes) and returns a matrix ``(n, S)`` of per-image measurements;
``fit``/``decision_function`` work on those matrices only, so one measurement serves every split and protocol and
the protocol code (:mod:`~modelprint.provenance.splits`) can prove which rows a fit saw. A new attack is one
decorated class::

    @ATTACKS.register("mine")
    class Mine(MembershipAttack):
        ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator

from modelprint.errors import ProbeError
from modelprint.evaluation.metrics import roc_auc
from modelprint.probes.base import ProbeProgress, check_fitted, validated
from modelprint.probes.candidates import DiffusionCandidate
from modelprint.registry import Registry

__all__ = ["ATTACKS", "EXTERNAL", "GENERATED", "MEMBER", "PROVENANCE_CLASSES", "UNCERTAIN", "CallMeter",
           "MembershipAttack", "check_fitted", "fit_rows", "log_positive"]

MEMBER, GENERATED, EXTERNAL = "member", "generated", "external"
#: The three answers of provenance: in the training set, made by the model, or neither.
PROVENANCE_CLASSES = (MEMBER, GENERATED, EXTERNAL)
#: The answer below the validated confidence.
UNCERTAIN = "uncertain"


def log_positive(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``log`` of non-negative measurements (floored at 1e-30), float64."""
    values = x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    return np.log(np.maximum(values, 1e-30))


class CallMeter:
    """Counts the forward and backward images of one measurement run and reports ``progress(done, total)`` in
    forward images (``total``: the analytic count, so a bar knows its length up front)."""

    def __init__(self, total: int, progress: ProbeProgress | None = None) -> None:
        self.total = int(total)
        self.progress = progress
        self.forward = 0
        self.backward = 0

    def eps(self, denoiser: DiffusionCandidate, x_t: torch.Tensor, t: int | torch.Tensor, grad: bool = False
            ) -> torch.Tensor:
        """``denoiser.predict_noise``, counted."""
        out = denoiser.predict_noise(x_t, t, grad=grad)
        self.forward += int(x_t.shape[0])
        if self.progress is not None:
            self.progress(min(self.forward, self.total), self.total)
        return out

    def offset(self, done: int) -> ProbeProgress | None:
        """A progress callback for a sub-run (e.g. a loss probe) whose counts start at ``done`` of this run."""
        if self.progress is None:
            return None
        return lambda k, _total: self.progress(min(done + k, self.total), self.total)


class MembershipAttack(BaseEstimator, ABC):
    """Scores "was this image in the model's training set?"; higher = more likely a member.

    ``measure(denoiser, images)`` → ``(n, S)`` measurements. Training-free attacks (``learned = False``) hold one
    score per candidate setting (e.g. timestep) and ``fit`` keeps the setting with the best AUC on the (validation)
    rows it is given; learned attacks (``learned = True``) train a classifier on them.
    ``decision_function`` gives one member score per row. Thresholds are never part of ``fit``: the protocol picks
    them on a validation split (:func:`~modelprint.provenance.splits.evaluate_membership`).
    """

    name: ClassVar[str]
    learned: ClassVar[bool] = False

    @abstractmethod
    def measure(self, denoiser: DiffusionCandidate, images: np.ndarray, progress: ProbeProgress | None = None
                ) -> np.ndarray:
        """float64 ``(n, S)`` measurements of uint8 ``images`` through ``denoiser``."""

    @abstractmethod
    def calls_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Denoiser calls (forward images) that :meth:`measure` spends per image."""

    def backwards_per_image(self, denoiser: DiffusionCandidate) -> int:
        """Backward passes (images) that :meth:`measure` spends per image."""
        return 0

    def settings(self) -> list[Any]:
        """What each measured column is (e.g. its timestep)."""
        return list(getattr(self, "timesteps", ()))

    def fit(self, X: np.ndarray, y: Sequence[bool]) -> MembershipAttack:  # noqa: N803
        """Keep the column with the highest AUC of members (``y`` true) against non-members."""
        x, member = fit_rows(self, X, y)
        self.auc_by_setting_ = np.array([roc_auc(x[:, j], member) for j in range(x.shape[1])])
        self.setting_ = int(np.nanargmax(np.nan_to_num(self.auc_by_setting_, nan=-np.inf)))
        settings = self.settings()
        self.chosen_ = settings[self.setting_] if len(settings) == x.shape[1] else self.setting_
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Member score of each row, ``(n,)``."""
        check_fitted(self, "setting_")
        return validated(self, X, reset=False, dtype=np.float64)[:, self.setting_]


def fit_rows(attack: MembershipAttack, X: np.ndarray, y: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """``(X, y)`` :func:`~modelprint.probes.base.validated` (float64 ``(n, S)``, sets ``n_features_in_``) with
    ``y`` as bool ``(n,)``; ProbeError unless both members and non-members are there."""
    x, y = validated(attack, X, y, dtype=np.float64)
    member = np.asarray(y, dtype=bool)
    if member.all() or not member.any():
        raise ProbeError(f"{attack.name}: fitting needs both members and non-members (got one class)")
    return x, member


ATTACKS: Registry[MembershipAttack] = Registry("membership attack")
