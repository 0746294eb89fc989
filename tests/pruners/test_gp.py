"""The gate's predictor: a GP on the normal scores of the objective's ranks."""

from __future__ import annotations

import numpy as np
import pytest

from hpsearch.pruners._gp import RankGaussianProcess, normal_scores


def test_normal_scores_are_symmetric_ranked_and_share_ties() -> None:
    scores = normal_scores(np.array([0.5, 0.2, 0.5, 0.9]))
    assert scores[1] < scores[0] == scores[2] < scores[3]
    assert scores[0] == pytest.approx(0.0)  # ranks 2 and 3 of 4 share 2.5: the median
    assert scores[3] == pytest.approx(-scores[1])
    # an outlier changes nothing but its own rank
    assert np.allclose(
        normal_scores(np.array([0.9, 0.8, 0.85, -1e9])),
        normal_scores(np.array([0.9, 0.8, 0.85, 0.1])),
    )


def test_the_fit_finds_the_input_that_matters_and_ranks_new_points() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(40, 3))
    y = -(x[:, 0] ** 2) + 0.05 * rng.normal(size=40)  # only input 0 matters, peak at 0
    gp = RankGaussianProcess(x, y)
    ls = gp.lengthscales
    assert ls[0] < ls[1] / 3 and ls[0] < ls[2] / 3
    peak, mid, edge = (gp.predict(np.array([v, 0.0, 0.0]))[0] for v in (0.0, 1.0, 1.9))
    assert peak > mid > edge and peak > 1.0 and edge < -1.0
    assert gp.objective_at(peak) == pytest.approx(y.max(), abs=0.3)
    assert gp.noise < 0.2


def test_the_fit_is_deterministic_and_far_points_revert_to_the_prior() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 2))
    y = x[:, 0] + 0.1 * rng.normal(size=12)
    a, b = RankGaussianProcess(x, y), RankGaussianProcess(x.copy(), y.copy())
    assert np.array_equal(a.theta, b.theta)
    mean, std = a.predict(np.array([50.0, 0.0]))
    assert abs(mean) < 1e-3 and std > 0.8  # N(0, signal + noise): the scores' own spread


@pytest.mark.parametrize(
    "x, y",
    [
        (np.zeros((1, 2)), np.zeros(1)),
        (np.zeros((3, 2)), np.zeros(2)),
        (np.array([[0.0], [np.nan]]), np.zeros(2)),
    ],
)
def test_bad_inputs_are_refused(x, y) -> None:
    with pytest.raises(ValueError):
        RankGaussianProcess(x, y)
