"""The energy pruner: decide at the gate between head probing and finetuning."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.pruners._decision import GateAction, GateDecision, InvalidSignalError
from hpsearch.pruners._outcome import OutcomeModel, Query, StudyRows, choice_columns
from hpsearch.pruners._signals import CURVE_SIGNALS, GATE_PARAMS, GATE_SIGNALS, SIGNALS


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
    """Prune a trial, at the gate before finetuning or after any FT epoch, when it is unlikely to
    end above the ``top_k``-th best completed trial.

    One model (``OutcomeModel``) answers that question at every step of the trial: from the
    HP-phase signals at the gate, from the signals and the FT accuracy after FT epoch ``s``. At
    the *gate* (``trial.should_prune()``
    called after HP has set the signal user attrs and before any FT step is reported, so
    ``trial.last_step is None``) it decides, in this order:

    1. a signal it reads (or the energy) missing, or any HP signal NaN or infinite: raise
       ``InvalidSignalError`` — the trial fails with that reason (an energy of NaN means HP
       diverged; keeping or pruning it would both hide it);
    2. energy outside ``[energy_min, energy_max]``: prune. The band is the user's rule (too little
       energy leaves the features where they are, too much distorts them), not a learned one, so
       it applies from the first trial;
    3. no model may decide (fewer than ``n_startup_trials`` completed trials with valid signals,
       and no prior): keep;
    4. prune when the probability that the trial ends above the ``top_k``-th best completed
       trial is below ``min_prob``; keep otherwise.

    After FT epoch ``s`` (``ft_pruner`` None) the same question is asked with the accuracy at
    ``s``, against ``min_prob * (ft_epochs - s) / ft_epochs``: a late prune saves less, so it
    must be surer, and the last epoch is never pruned. With an ``ft_pruner`` (e.g.
    ``MedianPruner``; ``NopPruner()`` for the gate alone) that pruner judges the FT epochs.

    The model fits one ``RankLinearModel`` per step on the completed trials (each gives a row at
    every step): a Bayesian linear regression of the normal scores of their final objective's
    ranks on their inputs, each input ranked among *every* finished trial that reached the step
    (pruned ones too, as the quantile rules compare with all trials seen). Only orders matter: a
    diverged trial at chance does not stretch the scale, and the threshold is a score too. The
    probability comes from the fit's Student-t predictive; a trial worse than any completed one
    is extrapolated along the fit, while an input the completed trials never varied keeps the
    slope prior's spread, so such a trial stays open. Prior studies' models join as in RGPE:
    each on its own study's ranks (so a task with other accuracies does not dominate), weighted
    by how well it ranks this study's completed trials; with a prior, the model decides from the
    first trial.

    A gate-pruned trial is PRUNED with no intermediate value: Optuna's TPE sampler ranks pruned
    trials after every complete one, and those without a step last, so it sees them as the worst
    configurations of the study — what the gate predicted them to be.

    Every decision is kept as a ``GateDecision``; the objective fetches it with
    ``take_decision(trial.number)`` and records it as trial user attrs (``DECISION_ATTRS``),
    since a pruner cannot write on the ``FrozenTrial`` it is given. A decision is a function of
    the finished trials (complete and pruned) and the trial's signals alone, so it is reproducible
    from the study.

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
            Pruner for the FT epochs (steps reported after the gate); ``None``: the model.
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
            Names of the user attrs the model reads at the gate (keys of ``SIGNALS``);
            ``None``: ``GATE_SIGNALS``.
        curve_signals:
            Names of the user attrs it reads after an FT epoch besides the FT accuracy there;
            ``None``: ``CURVE_SIGNALS`` (the FT learning rate).
        params:
            Searched categorical parameters it reads at the gate besides the signals, each as
            the mean rank score of the completed trials that made the same choice
            (``choice_columns``), e.g. ``("backbone.name",)``; ``None``: ``GATE_PARAMS`` (none).
            A parameter the study does not search changes nothing.
        ft_epochs:
            FT epochs of a trial: scales ``min_prob`` by the share still to run and spares the
            last epoch; ``None``: ``min_prob`` at every step.
        prior_trials:
            Study name -> completed trials of an earlier study on related data (same objective
            and direction). Each study's model is fitted once per process on its own ranks and
            weighted by Kendall's τ (clipped at 0) with this study's completed trials; the
            threshold (the ``top_k``-th best) is this study's alone.
    """

    def __init__(
        self,
        ft_pruner: BasePruner | None = None,
        *,
        n_startup_trials: int = 4,
        top_k: int = 1,
        min_prob: float = 0.003,
        ft_epochs: int | None = None,
        energy_min: float | None = None,
        energy_max: float | None = None,
        signals: Sequence[str] | None = None,
        curve_signals: Sequence[str] | None = None,
        params: Sequence[str] | None = None,
        prior_trials: Mapping[str, Sequence[FrozenTrial]] | None = None,
    ) -> None:
        if n_startup_trials < 2:
            raise ValueError(f"n_startup_trials must be >= 2 but got {n_startup_trials}.")
        if not 1 <= top_k <= n_startup_trials:
            raise ValueError(
                f"top_k must be in [1, n_startup_trials={n_startup_trials}] but got {top_k}."
            )
        if not (math.isfinite(min_prob) and 0 < min_prob < 1):
            raise ValueError(f"min_prob must be in (0, 1) but got {min_prob}.")
        if ft_epochs is not None and (isinstance(ft_epochs, bool) or ft_epochs < 1):
            raise ValueError(f"ft_epochs must be None or >= 1 but got {ft_epochs}.")
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
        curve_signals = CURVE_SIGNALS if curve_signals is None else curve_signals
        unknown = [s for s in curve_signals if s not in SIGNALS]
        if unknown:
            raise ValueError(
                f"curve_signals must be a subset of {', '.join(SIGNALS)}; unknown: {unknown}."
            )
        self._ft_pruner = ft_pruner
        self._n_startup_trials = n_startup_trials
        self._top_k = top_k
        self._min_prob = min_prob
        self._ft_epochs = ft_epochs
        self._energy_min, self._energy_max = energy_min, energy_max
        self._signals = tuple(signals)
        self._curve_signals = tuple(curve_signals)
        self._params = tuple(GATE_PARAMS if params is None else params)
        if not all(isinstance(name, str) and name for name in self._params):
            raise ValueError(f"params must be parameter names but got {list(self._params)}.")
        self._decisions: dict[int, GateDecision] = {}
        self._model: tuple[str, OutcomeModel] | None = None  # the last history and its model
        self._priors = tuple(
            rows
            for trials in (prior_trials or {}).values()
            if len(rows := self._rows(trials, 1.0)) >= 3
        )

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:  # the gate
            decision = self.decide(study, trial)
            self._decisions[trial.number] = decision
            if decision.action is GateAction.FAIL:
                raise InvalidSignalError(decision.reason)
            return decision.prune
        if self._ft_pruner is not None:
            return self._ft_pruner.prune(study, trial)
        if self._ft_epochs is not None and step >= self._ft_epochs:
            return False  # the last epoch: nothing left to save
        accuracy = trial.intermediate_values[step]
        values, bad = _signal_vector(trial.user_attrs, self._signals + self._curve_signals)
        if bad or not math.isfinite(accuracy):
            return False  # the gate failed such a trial, or an epoch diverged: not judged here
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        query = self._query(values, step, sign * accuracy)
        prediction = self._outcome(study).predict(query)
        return prediction is not None and prediction.probability < self._step_min_prob(step)

    def _query(
        self,
        values: np.ndarray,
        step: int = 0,
        accuracy: float | None = None,
        choices: np.ndarray | None = None,
    ) -> Query:
        """``values``: the signals, then the curve signals; ``choices``: the encoded params the
        gate reads (``StudyRows.choice_scores``)."""
        d = len(self._signals)
        signals = values[:d] if choices is None else np.r_[values[:d], choices]
        return Query(signals, values[d:], step, accuracy)

    def _step_min_prob(self, step: int) -> float:
        """``min_prob`` at ``step``, scaled by the share of the FT epochs still to run: pruning
        late saves less, so it must be surer (cost-aware; constant without ``ft_epochs``)."""
        if self._ft_epochs is None:
            return self._min_prob
        return self._min_prob * max(self._ft_epochs - step, 0) / self._ft_epochs

    def take_decision(self, trial_number: int) -> GateDecision | None:
        """The gate decision this pruner made for the trial (once; None if there was none)."""
        return self._decisions.pop(trial_number, None)

    def decide(self, study: optuna.study.Study, trial: FrozenTrial) -> GateDecision:
        """The gate decision for ``trial`` given the study's completed trials; no side effects
        but keeping the model's fits for the next decision (``_outcome``)."""
        screened = self._screen(trial)
        if isinstance(screened, GateDecision):
            return screened
        model = self._outcome(study)
        n = len(model.history)
        choices = model.history.choice_scores([trial.params.get(p) for p in self._params])
        prediction = model.predict(self._query(screened, choices=np.nan_to_num(choices)))
        if prediction is None:
            return GateDecision(
                trial.number,
                GateAction.KEEP,
                f"startup: {n} of {self._n_startup_trials} "
                "completed trials needed before predicting",
                history_trials=n,
            )
        unseen = [
            f"{p}={trial.params[p]!r}" for p, c in zip(self._params, choices) if math.isnan(c)
        ]
        if unseen:
            return GateDecision(
                trial.number,
                GateAction.KEEP,
                f"first of its kind: no completed trial with {', '.join(unseen)} to judge it by",
                history_trials=n,
            )
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        ys = model.history.values[model.history.complete]
        threshold = sign * float(np.sort(ys)[-self._top_k]) if n >= self._top_k else None
        objective = model.objective_at(0, prediction.score)
        predicted = sign * objective if objective is not None else None
        prior_weight = sum(prediction.weights[1:])
        probability = prediction.probability
        min_prob = self._step_min_prob(0)
        rank = "" if self._top_k == 1 else f"{self._top_k}-th "
        numbers = dict(
            probability=probability,
            predicted=predicted,
            predicted_score=prediction.score,
            predicted_std=prediction.std,
            threshold=threshold,
            history_trials=n,
            prior_trials=sum(len(p) for p in self._priors),
            prior_weight=prior_weight if self._priors else None,
        )
        beats = (
            f"the {rank}best {threshold:.4f} of {n} completed trials"
            if threshold is not None
            else f"the {rank}best of {self._n_startup_trials} trials (no completed trial yet)"
        )
        words = (
            f"P(ends above {beats}) = {probability:.3g} "
            f"{'<' if probability < min_prob else '>='} min_prob {min_prob:g} (predicted rank "
            f"score {prediction.score:.2f} ± {prediction.std:.2f} vs "
            f"{prediction.threshold_score:.2f}"
            + (f"; objective ~{predicted:.4f}" if predicted is not None else "")
            + (f"; prior weight {prior_weight:.2f})" if self._priors else ")")
        )
        if probability < min_prob:
            return GateDecision(
                trial.number, GateAction.PRUNE, "unlikely to reach the top: " + words, **numbers
            )
        return GateDecision(trial.number, GateAction.KEEP, "may reach the top: " + words, **numbers)

    def _screen(self, trial: FrozenTrial) -> GateDecision | np.ndarray:
        """The rules that need no model: signals that cannot be judged fail the trial, an energy
        outside the band prunes it; otherwise the signals the model reads."""
        # The signals it reads and the energy (the band needs it) must be there and finite; any
        # other HP signal the trial has must be finite too (a head norm of inf: HP diverged).
        reads = self._signals + self._curve_signals
        needed = reads if "energy" in reads else reads + ("energy",)
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
        return values[: len(reads)]  # ``needed`` starts with the signals it reads

    def _outcome(self, study: optuna.study.Study) -> OutcomeModel:
        """The outcome model of the study's finished trials (complete and pruned). Its fits are
        a deterministic function of them, so it is rebuilt only when they changed: a trial
        failed since the last decision added nothing, and the next one reuses it."""
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        history = self._rows(finished, sign)
        key = history.digest
        if self._model is None or self._model[0] != key:
            model = OutcomeModel(history, self._priors, self._top_k, self._n_startup_trials)
            self._model = (key, model)
        return self._model[1]

    def _rows(self, trials: Sequence[FrozenTrial], sign: float) -> StudyRows:
        """Signals, curve signals, FT curves and objective (times ``sign``: larger is better;
        NaN for a pruned trial) of those of ``trials`` that are complete or pruned with finite
        signals, in the order of their numbers."""
        rows, curves, values, choices = [], [], [], []
        reads = self._signals + self._curve_signals
        for t in sorted(trials, key=lambda t: t.number):
            x, bad = _signal_vector(t.user_attrs, reads)
            if bad:
                continue
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
                values.append(sign * float(t.value))
            elif t.state == TrialState.PRUNED:
                values.append(math.nan)
            else:
                continue
            rows.append(x)
            curves.append(t.intermediate_values)
            choices.append(tuple(t.params.get(p) for p in self._params))
        epochs = max((max(c, default=0) for c in curves), default=0)
        if self._ft_epochs is not None:
            epochs = min(epochs, self._ft_epochs)
        curve = np.full((len(rows), epochs), np.nan)
        for i, c in enumerate(curves):
            for step, acc in c.items():
                if 1 <= step <= epochs and math.isfinite(acc):
                    curve[i, step - 1] = sign * acc
        table = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(reads))
        d = len(self._signals)
        values = np.asarray(values, dtype=np.float64)
        encoded, means = choice_columns(choices, values, len(self._params))
        signals = np.hstack([table[:, :d], encoded])
        return StudyRows(signals, table[:, d:], curve, values, means)
