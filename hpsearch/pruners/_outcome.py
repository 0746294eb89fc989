"""The energy pruner's model of a trial's outcome, asked at the gate and after every FT epoch.

One question at every step of a trial's life: how likely is the trial to *end* above the
``top_k``-th best completed trial? Step 0 is the gate (the HP signals); step ``s >= 1`` is after
FT epoch ``s`` (the FT validation accuracy at ``s`` and the curve signals, by default the FT
learning rate: a small one starts slowly and ends high). One ``RankLinearModel`` per step is
fitted on the completed trials (each gives a row at every step) with their inputs ranked among
*every* trial of the study that reached the step, pruned ones included: as the quantile rules
do, a trial is compared with all that were seen, and the fit says how far that rank carries to
the end.

Priors (``StudyRows`` of earlier studies) are combined as in RGPE (Feurer et al., 2018): every
model works on its *own* study's normal scores (quantiles), so a task with higher accuracies
does not dominate; each is weighted by how well it ranks this study's completed trials (Kendall's
τ, clipped at 0; this study's own model by its leave-one-out predictions), and the probability is
the weighted mean of the models' probabilities.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from hpsearch.pruners._linear import RankLinearModel, normal_scores, score_among
from hpsearch.stats import kendall_tau

_STANDARD = NormalDist()
_PRIOR_MODELS: dict[tuple[str, int], RankLinearModel] = {}  # fitted once per process


@dataclass(frozen=True)
class Query:
    """What the model knows of the trial it judges: its HP ``signals``, its ``curve_signals``
    and, after FT epoch ``step`` (0: the gate), its FT accuracy there (larger better)."""

    signals: np.ndarray
    curve_signals: np.ndarray
    step: int = 0
    accuracy: float | None = None


@dataclass(frozen=True)
class StudyRows:
    """A study's finished trials as the model sees them, in the order of their numbers:
    transformed HP signals (n, d), curve signals (n, c), FT accuracy after each epoch (n, E;
    NaN where not reported) and the objective (n,; NaN for a pruned trial), larger better."""

    signals: np.ndarray
    curve_signals: np.ndarray
    curves: np.ndarray
    values: np.ndarray
    # per searched parameter the model reads (``choice_columns``; the last columns of
    # ``signals``, already scores, so not ranked again): the mean final score of the completed
    # trials of each choice, what a new trial's choice is encoded as
    choice_means: tuple[dict[Hashable, float], ...] = field(default=(), compare=False)

    def choice_scores(self, choices: Sequence[Hashable | None]) -> np.ndarray:
        """A new trial's choices encoded as the rows' are: the mean final score of this study's
        completed trials that made the same choice; NaN when none did (the model cannot judge
        it); 0 (the mean of all) for a parameter the trial does not have."""
        return np.array(
            [
                means.get(c, math.nan) if c is not None else 0.0
                for means, c in zip(self.choice_means, choices)
            ],
            dtype=np.float64,
        )

    @property
    def complete(self) -> np.ndarray:
        return np.isfinite(self.values)

    def __len__(self) -> int:
        """The completed trials."""
        return int(np.count_nonzero(self.complete))

    def _reached(self, step: int) -> np.ndarray:
        """Which trials reached ``step`` (0, the gate: all of them)."""
        if step == 0:
            return np.ones(len(self.values), dtype=bool)
        if step > self.curves.shape[1]:
            return np.zeros(len(self.values), dtype=bool)
        return np.isfinite(self.curves[:, step - 1])

    def pool(self, step: int) -> np.ndarray:
        """The raw inputs at ``step`` of every trial that reached it: (m, k) columns."""
        if step == 0:
            return self.signals
        reached = self._reached(step)
        acc = self.curves[reached, step - 1] if reached.any() else np.empty(0)
        return np.column_stack([acc, self.curve_signals[reached]])

    def ranked_inputs(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The completed trials' inputs at ``step``, each column ranked (normal scores) among
        every trial that reached the step, and their objectives."""
        reached = self._reached(step)
        pool = self.pool(step)
        ranked = self._ranked_columns(step, pool.shape[1])
        scored = (
            np.column_stack([normal_scores(col) if r else col for col, r in zip(pool.T, ranked)])
            if len(pool)
            else pool
        )
        done = self.complete[reached]
        return scored[done], self.values[reached][done]

    def ranked_query(self, query: Query) -> np.ndarray:
        """The query's inputs at its step, each ranked among this study's pool."""
        if query.step == 0:
            raw = query.signals
        else:
            raw = np.r_[query.accuracy, query.curve_signals]
        pool = self.pool(query.step)
        ranked = self._ranked_columns(query.step, len(raw))
        return np.array(
            [
                score_among(float(v), pool[:, j]) if r else float(v)
                for j, (v, r) in enumerate(zip(raw, ranked))
            ]
        )

    def _ranked_columns(self, step: int, d: int) -> list[bool]:
        """Which of the ``d`` inputs at ``step`` are ranked: all but the encoded params."""
        p = len(self.choice_means) if step == 0 else 0
        return [True] * (d - p) + [False] * p

    @functools.cached_property
    def digest(self) -> str:
        """The rows' content hash, computed once (a prior's is looked up at every decision)."""
        h = hashlib.sha1()
        for a in (self.signals, self.curve_signals, self.curves, self.values):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
            h.update(str(a.shape).encode())
        return h.hexdigest()


def choice_columns(
    choices: Sequence[Sequence[Hashable | None]], values: np.ndarray, n_params: int
) -> tuple[np.ndarray, tuple[dict[Hashable, float], ...]]:
    """Searched categorical parameters (a backbone, a head depth) as inputs of the linear model.

    ``choices`` holds each trial's value of each of the ``n_params`` parameters read (None: the
    trial has none), ``values`` the objectives (NaN for a pruned trial). A choice is encoded by
    how the study's completed trials that made it ended: the mean normal score of their
    objectives, leaving the trial itself out (its own outcome must not be its input), 0 (the
    mean of all) when no other completed trial made it. One column per parameter whatever its
    number of choices, so a prior study with other choices fits the same inputs; a parameter the
    study never searched is a column of zeros, which moves no prediction.

    Returns the (n, n_params) columns and, per parameter, each choice's mean score over every
    completed trial (a new trial's encoding).
    """
    values = np.asarray(values, dtype=np.float64)
    complete = np.isfinite(values)
    scores = np.zeros(len(values))
    scores[complete] = normal_scores(values[complete])
    columns = np.zeros((len(values), n_params))
    means: list[dict[Hashable, float]] = []
    for j in range(n_params):
        column = [row[j] for row in choices]
        sums: dict[Hashable, float] = {}
        counts: dict[Hashable, int] = {}
        for c, s, done in zip(column, scores, complete):
            if c is not None and done:
                sums[c] = sums.get(c, 0.0) + s
                counts[c] = counts.get(c, 0) + 1
        for i, (c, s, done) in enumerate(zip(column, scores, complete)):
            if c is None:
                continue
            k = counts.get(c, 0) - int(done)
            if k > 0:
                columns[i, j] = (sums[c] - (s if done else 0.0)) / k
        means.append({c: sums[c] / counts[c] for c in sums})
    return columns, tuple(means)


def prior_model(rows: StudyRows, step: int) -> RankLinearModel | None:
    """The prior study's model at ``step``, fitted once per process (a replay builds a pruner
    per order); None when fewer than 3 of its completed trials have the step."""
    key = (rows.digest, step)
    if key not in _PRIOR_MODELS:
        x, y = rows.ranked_inputs(step)
        if len(y) < 3:
            return None
        _PRIOR_MODELS[key] = RankLinearModel(x, y)
    return _PRIOR_MODELS[key]


@dataclass(frozen=True)
class _Step:
    models: list[RankLinearModel | None]  # this study's first
    weights: np.ndarray
    threshold: float


@dataclass(frozen=True)
class Prediction:
    """The mixture's prediction of a trial's final normal score, and the share of each model."""

    score: float
    std: float
    threshold_score: float
    probability: float
    weights: tuple[float, ...]  # this study's model first, then each prior's


class OutcomeModel:
    """Every step's prediction for the trials of one study, given its finished trials
    (``history``) and the ``priors``; each step's models are fitted on first use and kept."""

    def __init__(
        self, history: StudyRows, priors: tuple[StudyRows, ...], top_k: int, n_startup_trials: int
    ) -> None:
        self.history = history
        self.priors = priors
        self.top_k = top_k
        self.n_startup_trials = n_startup_trials
        self._steps: dict[int, _Step] = {}

    def _step(self, step: int) -> _Step:
        """The models at ``step`` (this study's first; None where there is none), their weights
        (sum 1, or all 0 when none may decide) and the threshold score."""
        if step in self._steps:
            return self._steps[step]
        x, y = self.history.ranked_inputs(step)
        n = len(y)
        own = RankLinearModel(x, y) if n >= self.n_startup_trials and n >= 2 else None
        models: list[RankLinearModel | None] = [own]
        models += [prior_model(p, step) for p in self.priors]
        quality = np.zeros(len(models))
        if own is not None:
            quality[0] = max(kendall_tau(own.loo(), y) or 0.0, 0.0)
        for i, model in enumerate(models[1:], start=1):
            if model is None:
                continue
            # a prior's quality: how it ranks this study's completed trials; before it has 3,
            # a prior decides alone and unweighted
            tau = kendall_tau(model.predict_many(x)[0], y) if n >= 3 else 1.0
            quality[i] = max(tau or 0.0, 0.0)
        if quality.sum() == 0 and own is not None:
            quality[0] = 1.0  # no model ranks well: this study's own model still decides
        weights = quality / quality.sum() if quality.sum() > 0 else quality
        k = self.top_k
        if own is not None:
            threshold = float(np.sort(own.scores)[-k])
        else:  # the k-th best of n_startup_trials (or of n, once there are k)
            size = n if n >= max(k, 1) else self.n_startup_trials
            threshold = _STANDARD.inv_cdf((size - k + 0.5) / size)
        self._steps[step] = _Step(models, weights, threshold)
        return self._steps[step]

    def predict(self, query: Query) -> Prediction | None:
        """The trial's predicted final normal score; None when no model decides."""
        at = self._step(query.step)
        if not at.weights.any():
            return None
        x = self.history.ranked_query(query)
        mean = var = probability = 0.0
        for model, w in zip(at.models, at.weights):
            if model is None or w == 0:
                continue
            m, s = model.predict(x)
            mean += w * m
            var += w * s * s
            probability += w * model.probability_above(m, s, at.threshold)
        return Prediction(
            mean, math.sqrt(var), at.threshold, probability, tuple(float(w) for w in at.weights)
        )

    def objective_at(self, step: int, score: float) -> float | None:
        own = self._step(step).models[0]
        return own.objective_at(score) if own is not None else None
