"""The energy pruner's model of a trial's outcome, asked at the gate and after every FT epoch.

One question at every step of a trial's life: how likely is the trial to *end* above the
``top_k``-th best completed trial? Step 0 is the gate (the HP signals alone); step ``s >= 1`` is
after FT epoch ``s`` (the HP signals and the FT validation accuracy at ``s``). Each completed
trial gives a training row at every step: its signals, its accuracy at that step, and the rank
of its final objective. One ``RankGaussianProcess`` per step is fitted on those rows, so the
first FT epoch is judged with what head probing already said, and a late epoch mostly by the
curve.

Priors (``StudyRows`` of earlier studies) are combined as in RGPE (Feurer et al., 2018): every
model predicts on its *own* study's normal scores, i.e. quantiles, so a task with higher
accuracies does not dominate; the prediction is the mixture ``mean = Σ wᵢ meanᵢ``,
``var = Σ wᵢ varᵢ``, each model weighted by how well it ranks this study's completed trials
(Kendall's τ, clipped at 0; this study's own model by its leave-one-out predictions).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.special import ndtr

from hpsearch.pruners._gp import RankGaussianProcess, normal_scores

_STANDARD = NormalDist()
# History sizes at which a study's step models refit their hyperparameters (about x1.25 apart);
# in between, the posterior is conditioned on every row under the last fit's hyperparameters, a
# deterministic function of the history (its first ``size`` trials) at the cost of a Cholesky.
_LADDER = (2, 3, 4, 5, 6, 8, 10, 12, 15, 19, 24, 30, 38, 48, 60, 75, 94, 118, 148, 185, 231)
# The residual kernel's bandwidth: Silverman's rule, ``1.06 σ n^(-1/5)``, at least 0.05.
_BANDWIDTH, _MIN_BANDWIDTH = 1.06, 0.05
_PRIOR_MODELS: dict[tuple[str, int], RankGaussianProcess] = {}  # fitted once per process


def _fit_size(n: int) -> int:
    if n >= _LADDER[-1]:
        return n
    return max(m for m in _LADDER if m <= n)


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-b of two arrays (0 when undefined)."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    dx, dy = dx[iu], dy[iu]
    denom = math.sqrt(float(np.count_nonzero(dx)) * float(np.count_nonzero(dy)))
    return float((dx * dy).sum()) / denom if denom > 0 else 0.0


@dataclass(frozen=True)
class StudyRows:
    """A study's completed trials as the model sees them: transformed HP signals (n, d), FT
    accuracy after each epoch (n, E; NaN where not reported) and the objective (n,), larger
    better, in the order of the trial numbers."""

    signals: np.ndarray
    curves: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def inputs(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows that have ``step`` (0: the gate) and their objectives."""
        if step == 0:
            return self.signals, self.values
        if step > self.curves.shape[1]:
            return self.signals[:0], self.values[:0]
        acc = self.curves[:, step - 1]
        keep = np.isfinite(acc)
        return np.hstack([self.signals[keep], acc[keep, None]]), self.values[keep]

    def digest(self) -> str:
        h = hashlib.sha1()
        for a in (self.signals, self.curves, self.values):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
            h.update(str(a.shape).encode())
        return h.hexdigest()


def trial_inputs(signals: np.ndarray, step: int, accuracy: float | None) -> np.ndarray:
    """One trial's input at ``step``: its signals, and its FT accuracy after epoch ``step``."""
    return signals if step == 0 else np.r_[signals, accuracy]


def prior_model(rows: StudyRows, step: int) -> RankGaussianProcess | None:
    """The prior study's model at ``step``, fitted once per process (a replay builds a pruner
    per order); None when fewer than 3 of its trials have the step."""
    key = (rows.digest(), step)
    if key not in _PRIOR_MODELS:
        x, y = rows.inputs(step)
        if len(y) < 3:
            return None
        _PRIOR_MODELS[key] = RankGaussianProcess(x, y)
    return _PRIOR_MODELS[key]


@dataclass(frozen=True)
class _Step:
    models: list[RankGaussianProcess | None]
    weights: np.ndarray
    threshold: float
    residuals: list[np.ndarray | None]


@dataclass(frozen=True)
class Prediction:
    """The mixture's prediction of a trial's final normal score, and the share of each model."""

    score: float
    std: float
    threshold_score: float
    probability: float
    weights: tuple[float, ...]  # this study's model first, then each prior's


class OutcomeModel:
    """Every step's prediction for the trials of one study, given its completed ``history``
    and the ``priors``; fits are made lazily per step and kept (see ``_LADDER``) in
    ``theta_cache``, a dict the caller keeps between histories."""

    def __init__(
        self,
        history: StudyRows,
        priors: tuple[StudyRows, ...],
        top_k: int,
        n_startup_trials: int,
        theta_cache: dict[tuple[int, str], np.ndarray],
    ) -> None:
        self.history = history
        self.priors = priors
        self.top_k = top_k
        self.n_startup_trials = n_startup_trials
        self._thetas = theta_cache
        self._steps: dict[int, _Step] = {}

    def _own(self, x: np.ndarray, y: np.ndarray) -> RankGaussianProcess:
        m = _fit_size(len(y))
        key_rows = StudyRows(x[:m], x[:m, :0], y[:m])
        key = (x.shape[1], key_rows.digest())
        theta = self._thetas.get(key)
        if theta is None:
            gp = RankGaussianProcess(x[:m], y[:m])
            self._thetas[key] = gp.theta
            if m == len(y):
                return gp
            theta = gp.theta
        return RankGaussianProcess(x, y, theta=theta)

    def _step(self, step: int) -> _Step:
        """The models at ``step`` (this study's first; None where there is none), their weights
        (sum 1, or all 0 when none may decide), the threshold score and each model's
        standardised out-of-sample residuals on this study's completed trials."""
        if step in self._steps:
            return self._steps[step]
        x, y = self.history.inputs(step)
        n = len(y)
        own = self._own(x, y) if n >= self.n_startup_trials and n >= 2 else None
        models: list[RankGaussianProcess | None] = [own]
        models += [prior_model(p, step) for p in self.priors]
        quality = np.zeros(len(models))
        residuals: list[np.ndarray | None] = [None] * len(models)
        scores = None
        if own is not None:
            loo_mean, loo_std = own.loo()
            quality[0] = max(kendall_tau(loo_mean, y), 0.0)
            residuals[0] = (own.scores - loo_mean) / loo_std
            scores = own.scores
        elif n >= 3:
            scores = normal_scores(y)
        for i, model in enumerate(models[1:], start=1):
            if model is None:
                continue
            # a prior's quality: how it ranks this study's completed trials; before it has 3,
            # a prior decides alone and unweighted
            if n >= 3:
                predicted, spread = model.predict_many(x)
                quality[i] = max(kendall_tau(predicted, y), 0.0)
                residuals[i] = (scores - predicted) / spread
            else:
                quality[i] = 1.0
        if quality.sum() == 0 and own is not None:
            quality[0] = 1.0  # no model ranks well: this study's own model still decides
        weights = quality / quality.sum() if quality.sum() > 0 else quality
        k = self.top_k
        size = n if n >= max(k, 1) else self.n_startup_trials
        threshold = _STANDARD.inv_cdf((size - k + 0.5) / size)
        if own is not None:
            threshold = float(np.sort(own.scores)[-k])
        self._steps[step] = _Step(models, weights, threshold, residuals)
        return self._steps[step]

    def predict(self, step: int, x: np.ndarray) -> Prediction | None:
        """The trial's predicted final normal score at ``step``; None when no model decides."""
        at = self._step(step)
        if not at.weights.any():
            return None
        mean = var = probability = 0.0
        for model, w, res in zip(at.models, at.weights, at.residuals):
            if model is None or w == 0:
                continue
            m, s = model.predict(x)
            mean += w * m
            var += w * s * s
            if res is None:  # a prior before this study has 3 trials: its own Gaussian
                probability += w * (1.0 - _STANDARD.cdf((at.threshold - m) / s))
                continue
            # the model's errors on this study's trials, in units of its own predicted spread,
            # smoothed: P(m + s * error >= threshold)
            h = max(_BANDWIDTH * float(np.std(res)) * len(res) ** -0.2, _MIN_BANDWIDTH)
            probability += w * float(np.mean(ndtr((m + s * res - at.threshold) / (s * h))))
        return Prediction(
            mean, math.sqrt(var), at.threshold, probability, tuple(float(w) for w in at.weights)
        )

    def objective_at(self, step: int, score: float) -> float | None:
        models = self._step(step).models
        return models[0].objective_at(score) if models[0] is not None else None
