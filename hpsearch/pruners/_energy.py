"""The energy pruner: decide at the gate between head probing and finetuning."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner, NopPruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.pruners._decision import GateAction, GateDecision, InvalidSignalError
from hpsearch.pruners._gp import RankGaussianProcess, normal_cdf
from hpsearch.pruners._signals import GATE_SIGNALS, SIGNALS


def _signal_vector(
    attrs: Mapping[str, Any], signals: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """The transformed signals, and the names of those missing or not finite."""
    values, bad = [], []
    for name in signals:
        raw = attrs.get(name)
        try:
            value = SIGNALS[name](float(raw)) if raw is not None else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            bad.append(f"{name}={raw!r}" if name in attrs else f"{name} missing")
        values.append(value)
    return np.asarray(values, dtype=np.float64), bad


class EnergyPruner(BasePruner):
    """Prune a trial after head probing, before it pays for finetuning, when its HP-phase signals
    make it unlikely to beat the ``top_k``-th best completed trial.

    The pruner is consulted twice in a trial's life. At the *gate* (``trial.should_prune()``
    called after HP has set the signal user attrs and before any FT step is reported, so
    ``trial.last_step is None``) it decides, in this order:

    1. a signal it reads (or the energy) missing, or any HP signal NaN or infinite: raise
       ``InvalidSignalError`` — the trial fails with that reason (an energy of NaN means HP
       diverged; keeping or pruning it would both hide it);
    2. energy outside ``[energy_min, energy_max]``: prune. The band is the user's rule (too little
       energy leaves the features where they are, too much distorts them), not a learned one, so
       it applies from the first trial;
    3. fewer than ``n_startup_trials`` completed trials with valid signals: keep;
    4. otherwise fit the predictor on the completed trials (signals -> rank of the objective),
       predict the trial's rank and prune when the probability that it beats the ``top_k``-th
       best completed trial is below ``min_prob``; keep otherwise.

    After the gate, FT epochs are judged by ``ft_pruner`` (e.g. ``MedianPruner`` or
    ``HyperbandPruner``; ``None`` never prunes an FT epoch).

    The predictor (``RankGaussianProcess``) models the normal scores of the objective's ranks
    with an ARD Gaussian process: only the order matters to the question asked, a diverged trial
    scoring at chance does not stretch the scale, and the threshold is a score on the same scale.
    A trial unlike any completed one gets the prior's wide spread, so its probability stays near
    that of a random trial and it is kept unless ``min_prob`` is large. The probability counts
    the noise of one evaluation, because the threshold itself is one noisy evaluation.

    A gate-pruned trial is PRUNED with no intermediate value: Optuna's TPE sampler ranks pruned
    trials after every complete one, and those without a step last, so it sees them as the worst
    configurations of the study — what the gate predicted them to be.

    Every decision is kept as a ``GateDecision``; the objective fetches it with
    ``take_decision(trial.number)`` and records it as trial user attrs (``DECISION_ATTRS``),
    since a pruner cannot write on the ``FrozenTrial`` it is given. A decision is a function of
    the completed trials and the trial's signals alone, so it is reproducible from the study.

    Example:

        .. code::

            import optuna
            from hpsearch.pruners import EnergyPruner, InvalidSignalError

            pruner = EnergyPruner(optuna.pruners.MedianPruner(), n_startup_trials=5)
            study = optuna.create_study(direction="maximize", pruner=pruner)

            def objective(trial):
                ...  # suggest a schedule, run head probing
                for key, value in hp_signals.items():  # energy, hp_val_acc, ..., ft_lr
                    trial.set_user_attr(key, value)
                try:
                    pruned = trial.should_prune()  # the gate: no FT step reported yet
                finally:
                    decision = pruner.take_decision(trial.number)
                    for key, value in decision.user_attrs().items():
                        trial.set_user_attr(key, value)
                if pruned:
                    raise optuna.TrialPruned(decision.reason)
                for epoch in range(1, n_epochs + 1):
                    ...  # one FT epoch
                    trial.report(val_acc, epoch)
                    if trial.should_prune():  # judged by the MedianPruner
                        raise optuna.TrialPruned()
                return val_acc

            study.optimize(objective, n_trials=30, catch=(InvalidSignalError,))

    Args:
        ft_pruner:
            Pruner for the FT epochs (steps reported after the gate); ``None``: never prune them.
        n_startup_trials:
            The gate prunes by prediction only once this many trials completed (at least 2).
        top_k:
            The trial must be likely to beat the ``top_k``-th best completed trial; 1 asks "could
            it become the best?", larger values keep more trials (``<= n_startup_trials``).
        min_prob:
            Prune when that probability is below this, in (0, 1); larger prunes more and risks
            more (docs/energy-pruner.md has the cost-vs-regret frontier).
        energy_min, energy_max:
            Optional hard band on the energy; ``None`` leaves that side open.
        signals:
            Names of the user attrs the predictor reads (keys of ``SIGNALS``); None:
            ``GATE_SIGNALS``.
        prior_trials:
            Completed trials of earlier studies on related data (same objective, same
            direction): the predictor is fitted on them too, ranked with this study's trials,
            so the gate knows the space before this study has many trials. The startup count
            and the threshold (the ``top_k``-th best) are this study's alone.
    """

    def __init__(
        self,
        ft_pruner: BasePruner | None = None,
        *,
        n_startup_trials: int = 4,
        top_k: int = 1,
        min_prob: float = 0.003,
        energy_min: float | None = None,
        energy_max: float | None = None,
        signals: Sequence[str] | None = None,
        prior_trials: Sequence[FrozenTrial] = (),
    ) -> None:
        if n_startup_trials < 2:
            raise ValueError(f"n_startup_trials must be >= 2 but got {n_startup_trials}.")
        if not 1 <= top_k <= n_startup_trials:
            raise ValueError(
                f"top_k must be in [1, n_startup_trials={n_startup_trials}] but got {top_k}."
            )
        if not (math.isfinite(min_prob) and 0 < min_prob < 1):
            raise ValueError(f"min_prob must be in (0, 1) but got {min_prob}.")
        for name, value in (("energy_min", energy_min), ("energy_max", energy_max)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be None or a finite number >= 0 but got {value}.")
        if energy_min is not None and energy_max is not None and energy_min >= energy_max:
            raise ValueError(f"energy_min must be < energy_max={energy_max} but got {energy_min}.")
        signals = GATE_SIGNALS if signals is None else signals
        unknown = [s for s in signals if s not in SIGNALS]
        if not signals or unknown:
            raise ValueError(
                f"signals must be a non-empty subset of {', '.join(SIGNALS)}; unknown: {unknown}."
            )
        self._ft_pruner = ft_pruner if ft_pruner is not None else NopPruner()
        self._n_startup_trials = n_startup_trials
        self._top_k = top_k
        self._min_prob = min_prob
        self._energy_min, self._energy_max = energy_min, energy_max
        self._signals = tuple(signals)
        self._decisions: dict[int, GateDecision] = {}
        self._fit: tuple[Any, RankGaussianProcess] | None = None  # the last history and its fit
        self._prior = self._rows(prior_trials)

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        if trial.last_step is not None:  # an FT epoch: not the gate
            return self._ft_pruner.prune(study, trial)
        decision = self.decide(study, trial)
        self._decisions[trial.number] = decision
        if decision.action is GateAction.FAIL:
            raise InvalidSignalError(decision.reason)
        return decision.prune

    def take_decision(self, trial_number: int) -> GateDecision | None:
        """The gate decision this pruner made for the trial (once; None if there was none)."""
        return self._decisions.pop(trial_number, None)

    def decide(self, study: optuna.study.Study, trial: FrozenTrial) -> GateDecision:
        """The gate decision for ``trial`` given the study's completed trials; no side effects
        but keeping the predictor's fit for the next decision (``_predictor``)."""
        # The signals it reads and the energy (the band needs it) must be there and finite; any
        # other HP signal the trial has must be finite too (a head norm of inf: HP diverged).
        needed = self._signals if "energy" in self._signals else self._signals + ("energy",)
        values, bad = _signal_vector(
            trial.user_attrs,
            needed
            + tuple(name for name in SIGNALS if name in trial.user_attrs and name not in needed),
        )
        if bad:
            return GateDecision(
                trial.number,
                GateAction.FAIL,
                "HP signals not finite: "
                + ", ".join(bad)
                + "; the energy pruner cannot judge this trial",
            )
        x = values[: len(self._signals)]  # ``needed`` starts with the signals it reads
        energy = float(trial.user_attrs["energy"])
        if self._energy_min is not None and energy < self._energy_min:
            return GateDecision(
                trial.number,
                GateAction.PRUNE,
                f"energy {energy:.4g} < energy_min "
                f"{self._energy_min:.4g} (too little to adapt the features)",
            )
        if self._energy_max is not None and energy > self._energy_max:
            return GateDecision(
                trial.number,
                GateAction.PRUNE,
                f"energy {energy:.4g} > energy_max "
                f"{self._energy_max:.4g} (enough to distort the features)",
            )

        xs, ys = self._history(study)
        n = len(ys)
        if n < self._n_startup_trials:
            return GateDecision(
                trial.number,
                GateAction.KEEP,
                f"startup: {n} of {self._n_startup_trials} "
                "completed trials needed before predicting",
                history_trials=n,
            )
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        prior_x, prior_y = self._prior
        model = self._predictor(np.vstack([prior_x, xs]), sign * np.r_[prior_y, ys])
        score, std = model.predict(x)
        # the threshold is this study's top_k-th best, scored among all the fitted trials
        threshold_score = float(np.sort(model.scores[len(prior_y) :])[-self._top_k])
        probability = 1.0 - normal_cdf((threshold_score - score) / std)
        threshold = float(sorted(ys, key=lambda v: -sign * v)[self._top_k - 1])
        predicted = sign * model.objective_at(score)
        rank = "" if self._top_k == 1 else f"{self._top_k}-th "
        numbers = dict(
            probability=probability,
            predicted=predicted,
            predicted_score=score,
            predicted_std=std,
            threshold=threshold,
            history_trials=n,
            prior_trials=len(prior_y),
        )
        words = (
            f"P(beats the {rank}best {threshold:.4f} of {n} completed trials) = "
            f"{probability:.3g} {'<' if probability < self._min_prob else '>='} min_prob "
            f"{self._min_prob:g} (predicted rank score {score:.2f} ± {std:.2f} vs "
            f"{threshold_score:.2f}; objective ~{predicted:.4f}"
            + (f"; with {len(prior_y)} prior trials)" if len(prior_y) else ")")
        )
        if probability < self._min_prob:
            return GateDecision(
                trial.number, GateAction.PRUNE, "unlikely to reach the top: " + words, **numbers
            )
        return GateDecision(trial.number, GateAction.KEEP, "may reach the top: " + words, **numbers)

    def _predictor(self, xs: np.ndarray, ys: np.ndarray) -> RankGaussianProcess:
        """The predictor fitted on this history. The fit is a deterministic function of the
        history, so it is refitted only when the history changed: a trial pruned or failed
        since the last decision added nothing to it, and the next decision reuses the fit."""
        key = (xs.shape, xs.tobytes(), ys.tobytes())
        if self._fit is None or self._fit[0] != key:
            self._fit = (key, RankGaussianProcess(xs, ys))
        return self._fit[1]

    def _history(self, study: optuna.study.Study) -> tuple[np.ndarray, np.ndarray]:
        """Signals and objective of the study's completed trials whose signals are all finite."""
        return self._rows(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _rows(self, trials: Sequence[FrozenTrial]) -> tuple[np.ndarray, np.ndarray]:
        """Signals and objective of those of ``trials`` that are complete with finite signals."""
        rows, values = [], []
        for t in trials:
            if t.state != TrialState.COMPLETE:
                continue
            x, bad = _signal_vector(t.user_attrs, self._signals)
            if not bad and t.value is not None and math.isfinite(t.value):
                rows.append(x)
                values.append(float(t.value))
        return np.asarray(rows).reshape(len(rows), len(self._signals)), np.asarray(values)
