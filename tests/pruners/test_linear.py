"""The outcome model's predictor: Bayesian linear regression on normal scores of ranks."""

from __future__ import annotations

import numpy as np
import pytest

from hpsearch.pruners._linear import RankLinearModel, normal_scores, score_among


def test_normal_scores_rank_ties_together_and_ignore_the_scale() -> None:
    scores = normal_scores(np.array([0.2, 0.9, 0.5, 0.5]))
    assert scores[2] == scores[3] == pytest.approx(0.0)
    assert scores[0] < 0 < scores[1] and scores[0] == pytest.approx(-scores[1])
    assert np.allclose(
        normal_scores(np.array([1.0, 100.0, 3.0])), normal_scores(np.arange(3.0)[[0, 2, 1]])
    )


def test_a_value_outside_the_pool_ranks_at_its_edge() -> None:
    pool = np.array([0.1, 0.2, 0.3])
    assert score_among(5.0, pool) == score_among(0.31, pool) > 0
    assert score_among(-5.0, pool) == pytest.approx(-score_among(5.0, pool))
    assert score_among(0.2, pool) == pytest.approx(0.0)


def test_the_fit_follows_an_informative_input_and_ignores_noise() -> None:
    rng = np.random.default_rng(0)
    signal, noise = rng.normal(size=40), rng.normal(size=40)
    y = signal + 0.2 * rng.normal(size=40)
    model = RankLinearModel(np.column_stack([normal_scores(signal), normal_scores(noise)]), y)
    assert model.coef[1] > 0.8 and abs(model.coef[2]) < 0.2
    high, spread = model.predict(np.array([1.5, 0.0]))
    low, _ = model.predict(np.array([-1.5, 0.0]))
    assert high > 1.0 > -1.0 > low and 0 < spread < 0.6
    assert (
        model.probability_above(high, spread, 1.0) > 0.5 > model.probability_above(low, spread, 1.0)
    )


def test_an_input_the_history_never_varied_keeps_the_prior_spread() -> None:
    y = np.linspace(0, 1, 20)
    x = np.column_stack([normal_scores(y), np.zeros(20)])  # the second input: always tied
    model = RankLinearModel(x, y)
    _, seen = model.predict(np.array([0.0, 0.0]))
    _, unseen = model.predict(np.array([0.0, 2.0]))
    assert unseen > 1.5 > 0.5 > seen


def test_leave_one_out_matches_refitting_without_the_row() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2))
    y = x[:, 0] + 0.5 * rng.normal(size=12)
    model = RankLinearModel(x, y)
    # refit on the same noise and scores without row 3: the closed form at fixed noise
    keep = np.arange(12) != 3
    design = np.hstack([np.ones((12, 1)), x])
    prior = np.diag([1e-6, 1.0, 1.0])
    a, b = design[keep], model.scores[keep]
    coef = np.linalg.solve(a.T @ a / model.noise + prior, a.T @ b / model.noise)
    assert model.loo()[3] == pytest.approx(design[3] @ coef)
