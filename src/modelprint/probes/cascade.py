"""Early exit: probe cheaply first, and pay for the expensive probe only when the cheap one is not sure.

A :class:`CascadeAttributor` holds fitted :class:`~modelprint.probes.attribution.ProbeAttributor` stages, cheapest
first, over the same classes. An image leaves at the first stage whose score margin (top-1 minus top-2 decision
score) reaches that stage's threshold; the last stage decides the rest. :func:`choose_margin` picks a threshold on a
validation split (out-of-fold scores, never test images): the smallest margin at which the cascade's validation
accuracy is no lower than the expensive stage's alone, so early exit saves calls without giving up accuracy there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelprint.errors import ProbeError
from modelprint.probes.attribution import ProbeAttributor

__all__ = ["CascadeAttributor", "CascadeDecision", "score_margin", "choose_margin"]


def score_margin(scores: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 score of each row of ``(n, C)`` scores (``inf`` with one class)."""
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return s[:, -1] - s[:, -2] if s.shape[1] > 1 else np.full(len(s), np.inf)


def choose_margin(cheap_scores: np.ndarray, final_scores: np.ndarray, y: Sequence[str], classes: Sequence[str],
                  tolerance: float = 0.0) -> float:
    """Smallest threshold on the cheap stage's :func:`score_margin` at which a two-stage cascade is at least as
    accurate on this (validation) split as the final stage alone, minus ``tolerance``; ``inf`` (never exit early)
    if none is. Scores are ``(n, C)`` in ``classes`` order."""
    classes, y = np.asarray(classes), np.asarray(y).astype(str)
    cheap_ok = classes[np.argmax(cheap_scores, axis=1)] == y
    final_ok = classes[np.argmax(final_scores, axis=1)] == y
    margin = score_margin(cheap_scores)
    target = final_ok.mean() - tolerance
    for threshold in np.unique(margin):  # ascending: the first that holds exits most images
        early = margin >= threshold
        if np.where(early, cheap_ok, final_ok).mean() >= target - 1e-12:
            return float(threshold)
    return float("inf")


@dataclass
class CascadeDecision:
    """Scores ``(n, C)`` in ``classes`` order from the stage that decided each image, that stage's index, and the
    denoiser calls each image cost (over all candidates)."""

    classes: np.ndarray
    scores: np.ndarray
    stage: np.ndarray
    calls: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.classes[np.argmax(self.scores, axis=1)]


class CascadeAttributor:
    """Fitted attributors from cheapest to most expensive with one margin threshold per stage but the last; see the
    module docstring. ``decide`` accepts uint8 images; each stage probes only the images still undecided."""

    def __init__(self, stages: Sequence[ProbeAttributor], margins: Sequence[float]) -> None:
        if len(stages) < 2 or len(margins) != len(stages) - 1:
            raise ProbeError(f"a cascade needs at least two stages and one margin per stage but the last; got "
                             f"{len(stages)} stages and {len(margins)} margins")
        classes = [list(map(str, s.classes_)) for s in stages]
        if any(c != classes[0] for c in classes):
            raise ProbeError(f"cascade stages must have the same classes, got {classes}")
        self.stages = list(stages)
        self.margins = [float(m) for m in margins]

    def decide(self, images: np.ndarray) -> CascadeDecision:
        n = len(images)
        classes = np.asarray(self.stages[0].classes_)
        scores = np.zeros((n, len(classes)))
        stage = np.full(n, -1)
        calls = np.zeros(n, dtype=np.int64)
        todo = np.arange(n)
        for i, attributor in enumerate(self.stages):
            if not len(todo):
                break
            s = attributor.decision_function(attributor.signatures(images[todo]))
            calls[todo] += attributor.calls_per_image
            done = np.ones(len(todo), bool) if i == len(self.stages) - 1 else score_margin(s) >= self.margins[i]
            scores[todo[done]], stage[todo[done]] = s[done], i
            todo = todo[~done]
        return CascadeDecision(classes, scores, stage, calls)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.decide(images).predictions
