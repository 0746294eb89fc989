"""Bayesian linear regression on normal scores: the outcome model's predictor at one step.

Inputs and target are normal scores of ranks, Φ⁻¹((rank + ½) / n), each within its own study:
only orders matter, a diverged trial at chance weighs like any other bad trial, and a study with
higher or lower accuracies is on the same scale as any other (what lets a prior study's model
predict this study's trials). A linear model is fitted on the completed trials, but a trial's
input is ranked among *every* trial that reached the step (pruned ones too), so a trial worse
than any completed one is extrapolated along the fitted line instead of falling back to a prior
mean: selecting the completed trials on their inputs leaves a linear fit of the outcome on those
inputs unbiased.

Priors: intercept flat, slopes ``N(0, SLOPE_VAR)`` in score units whatever the noise (a signal
the completed trials never varied keeps that spread, so a trial that differs there stays open),
noise variance from the residuals with ``NOISE_A``, ``NOISE_B`` pseudo-observations. The
predictive distribution is a Student t with the residuals' degrees of freedom, its scale the
noise plus the slopes' posterior variance at the input.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata
from scipy.stats import t as student_t

SLOPE_VAR = 1.0  # a slope of ±2 score units per score unit is already far out
NOISE_A, NOISE_B = 1.0, 0.1  # weak: about 2 pseudo-observations of a noise variance of 0.1
_FLAT = 1e-6  # the intercept's prior precision


def normal_scores(values: np.ndarray) -> np.ndarray:
    """Φ⁻¹((rank + ½) / n) of each value (rank from 0; ties share their mean rank)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values.copy()
    return ndtri((rankdata(values) - 0.5) / len(values))


def score_among(value: float, pool: np.ndarray) -> float:
    """The normal score of ``value`` ranked among ``pool`` and itself (ties count half)."""
    below = float(np.count_nonzero(pool < value)) + 0.5 * float(np.count_nonzero(pool == value))
    return float(ndtri((below + 0.5) / (len(pool) + 1)))


class RankLinearModel:
    """``y ≈ b₀ + b·x`` on normal scores, with a Student-t predictive distribution.

    Args:
        x: (n, d) inputs (normal scores), one row per completed trial.
        y: (n,) the completed trials' objectives, larger better (ranked here).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        self.values = np.sort(np.asarray(y, dtype=np.float64))
        self.scores = normal_scores(y)
        n, d = x.shape
        design = np.hstack([np.ones((n, 1)), x])
        prior = np.diag([_FLAT] + [1.0 / SLOPE_VAR] * d)
        gram, moment = design.T @ design, design.T @ self.scores
        self.dof = 2.0 * NOISE_A + n
        noise = 1.0  # the scores' own variance, then the residuals' (two passes suffice)
        for _ in range(2):
            self._chol = np.linalg.cholesky(gram / noise + prior)
            self.coef = self._solve(moment / noise)
            rss = float(np.sum((self.scores - design @ self.coef) ** 2))
            noise = (2.0 * NOISE_B + rss) / self.dof
        self._chol = np.linalg.cholesky(gram / noise + prior)
        self.coef = self._solve(moment / noise)
        self.noise = noise  # σ² of the predictive t
        self._design = design

    def _solve(self, b: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, b))

    def predict(self, x: np.ndarray) -> tuple[float, float]:
        """Predictive mean and scale (of the Student t with ``dof``) of one input's score."""
        a = np.r_[1.0, np.asarray(x, dtype=np.float64)]
        return float(a @ self.coef), math.sqrt(self.noise + a @ self._solve(a))

    def predict_many(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.hstack([np.ones((len(x), 1)), np.asarray(x, dtype=np.float64)])
        spread = np.einsum("ij,ji->i", a, self._solve(a.T))
        return a @ self.coef, np.sqrt(self.noise + spread)

    def loo(self) -> np.ndarray:
        """Leave-one-out predictions of the fitted rows (the ridge hat matrix's closed form)."""
        hat = np.einsum("ij,ji->i", self._design, self._solve(self._design.T)) / self.noise
        fitted = self._design @ self.coef
        return fitted - hat * (self.scores - fitted) / np.maximum(1.0 - hat, 1e-9)

    def probability_above(self, mean: float, scale: float, threshold: float) -> float:
        """P(score > threshold) under the predictive t."""
        return float(student_t.sf((threshold - mean) / scale, self.dof))

    def objective_at(self, score: float) -> float:
        """The objective a score stands for: interpolated between the fitted trials'."""
        return float(np.interp(score, np.sort(self.scores), self.values))
