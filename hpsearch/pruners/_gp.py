"""The energy pruner's predictor: a Gaussian process on the ranks of the FT objective.

The gate asks one question: how likely is this trial to beat the ``top_k``-th best completed
trial? Only the order of the objective matters for that, and objectives have outliers (a learning
rate that diverges scores at chance) that would dominate a GP on raw values. So the GP models the
*normal scores* of the objective's ranks, ``Φ⁻¹((rank - ½) / n)``: a standard-normal-shaped
target whatever the objective's scale, where the threshold (the ``top_k``-th best) is a normal
score too.

The kernel is a squared-exponential with one lengthscale per input (ARD) on standardised inputs,
plus a signal and a noise variance; they are the MAP estimate under weak log-normal priors
(lengthscale median ``sqrt(2 d)``, Hvarfner et al., 2024; noise median 0.1 of the target's
variance), found by SciPy's L-BFGS-B with the exact gradient, always from the priors' medians, so
the fit is a deterministic function of the trials. A fit of 40 trials × 5 inputs takes about 2 ms
(scikit-learn's ``GaussianProcessRegressor`` on the same data: about 20 ms), which keeps a replay of
hundreds of orders in seconds.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from scipy.optimize import minimize

from hpsearch.stats import ranks

_STANDARD = NormalDist()
_NOISE_FLOOR = 1e-4  # added to the noise variance: keeps the kernel matrix positive definite
_NOISE_PRIOR_MEDIAN = 0.1
_PRIOR_VAR = 3.0  # of every log-hyperparameter's prior (sigma = sqrt(3): a factor ~5.6 per sigma)
_LOG_BOUNDS_LS = (math.log(0.05), math.log(100.0))
_LOG_BOUNDS_SIGNAL = (math.log(0.01), math.log(20.0))
_LOG_BOUNDS_NOISE = (math.log(1e-3), math.log(4.0))
_FIT_ITERATIONS = 100


def normal_scores(y: np.ndarray) -> np.ndarray:
    """``Φ⁻¹((rank - ½) / n)`` of each value, ties sharing their mean rank (larger is better)."""
    return np.array([_STANDARD.inv_cdf((r - 0.5) / len(y)) for r in ranks(list(y))])


def normal_cdf(z: float) -> float:
    return _STANDARD.cdf(z)


class RankGaussianProcess:
    """GP regression of the normal scores of ``y`` (larger is better) on the rows of ``x``.

    ``predict`` gives the mean and standard deviation of a new trial's score (latent variance
    plus noise); ``scores`` are the history's own. Inputs with zero spread are ignored. Needs at
    least two rows; ``x`` and ``y`` must be finite. ``theta`` (the log-hyperparameters of an
    earlier fit, ``self.theta``) conditions on these rows without fitting them again: the
    posterior of a history that grew by a few trials, at the cost of one Cholesky.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, theta: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2:
            raise ValueError(
                f"RankGaussianProcess needs x of shape (n, d) and y of shape (n,) "
                f"with n >= 2, got {x.shape} and {y.shape}"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("RankGaussianProcess needs finite x and y")
        self._x_mean = x.mean(0)
        spread = x.std(0)
        self._x_scale = np.where(spread > 1e-12, spread, 1.0)
        self._x = (x - self._x_mean) / self._x_scale
        self.y = y
        self.scores = normal_scores(y)
        if theta is None:
            self._fit()
        else:
            if np.shape(theta) != (x.shape[1] + 2,):
                raise ValueError(f"theta must have {x.shape[1] + 2} values, got {np.shape(theta)}")
            self._condition(np.asarray(theta, dtype=np.float64))

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, float, float]:
        d = self._x.shape[1]
        return np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1]) + _NOISE_FLOOR

    def _covariance(self, theta: np.ndarray, sq_diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The kernel matrix of the history (noise on the diagonal) and its correlation part."""
        lengthscale, signal, noise = self._unpack(theta)
        corr = np.exp(-0.5 * (sq_diff / lengthscale**2).sum(-1))
        return signal * corr + noise * np.eye(len(corr)), corr

    def _objective(
        self, theta: np.ndarray, sq_diff: np.ndarray, prior_median: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """Negative log posterior of the hyperparameters and its gradient; ``sq_diff`` holds the
        squared differences of the inputs, per pair and input."""
        d = self._x.shape[1]
        lengthscale, signal, noise = self._unpack(theta)
        k, corr = self._covariance(theta, sq_diff)
        try:
            chol = np.linalg.cholesky(k)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        inv = np.linalg.inv(k)
        alpha = inv @ self.scores
        value = 0.5 * self.scores @ alpha + np.log(np.diag(chol)).sum()
        w = 0.5 * (np.outer(alpha, alpha) - inv)  # d(-value) / dK
        grad = np.empty_like(theta)
        grad[:d] = -np.einsum("ij,ijk->k", w * signal * corr, sq_diff) / lengthscale**2
        grad[d] = -(w * signal * corr).sum()
        grad[d + 1] = -np.trace(w) * (noise - _NOISE_FLOOR)
        offset = theta - prior_median
        return value + 0.5 * (offset**2).sum() / _PRIOR_VAR, grad + offset / _PRIOR_VAR

    def _fit(self) -> None:
        d = self._x.shape[1]
        sq_diff = (self._x[:, None, :] - self._x[None, :, :]) ** 2
        prior_median = np.r_[
            np.full(d, 0.5 * math.log(2.0 * d)), 0.0, math.log(_NOISE_PRIOR_MEDIAN)
        ]
        bounds = [_LOG_BOUNDS_LS] * d + [_LOG_BOUNDS_SIGNAL, _LOG_BOUNDS_NOISE]
        result = minimize(
            self._objective,
            prior_median.copy(),
            args=(sq_diff, prior_median),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": _FIT_ITERATIONS},
        )
        self._condition(result.x, sq_diff)

    def _condition(self, theta: np.ndarray, sq_diff: np.ndarray | None = None) -> None:
        """The posterior of the rows under the hyperparameters ``theta``."""
        if sq_diff is None:
            sq_diff = (self._x[:, None, :] - self._x[None, :, :]) ** 2
        self.theta = theta
        self._chol = np.linalg.cholesky(self._covariance(theta, sq_diff)[0])
        self._alpha = np.linalg.solve(self._chol.T, np.linalg.solve(self._chol, self.scores))

    @property
    def lengthscales(self) -> np.ndarray:
        """Fitted lengthscale per input, in standard deviations of that input (long = ignored)."""
        return self._unpack(self.theta)[0]

    @property
    def noise(self) -> float:
        """Fitted noise variance, as a share of the scores' (about 1)."""
        return self._unpack(self.theta)[2]

    def predict(self, x: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of a new trial's normal score at the input ``x``."""
        lengthscale, signal, noise = self._unpack(self.theta)
        xs = (np.asarray(x, dtype=np.float64).reshape(-1) - self._x_mean) / self._x_scale
        k_star = signal * np.exp(-0.5 * (((self._x - xs) / lengthscale) ** 2).sum(-1))
        v = np.linalg.solve(self._chol, k_star)
        var = max(signal - float(v @ v), 0.0) + noise
        return float(k_star @ self._alpha), math.sqrt(var)

    def predict_many(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` at every row of ``x``: the means and standard deviations."""
        lengthscale, signal, noise = self._unpack(self.theta)
        xs = (np.asarray(x, dtype=np.float64) - self._x_mean) / self._x_scale
        d2 = (((xs[:, None, :] - self._x[None, :, :]) / lengthscale) ** 2).sum(-1)
        k_star = signal * np.exp(-0.5 * d2)
        v = np.linalg.solve(self._chol, k_star.T)
        var = np.maximum(signal - (v * v).sum(0), 0.0) + noise
        return k_star @ self._alpha, np.sqrt(var)

    def loo(self) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out mean and standard deviation of every row's score under the fitted
        hyperparameters (closed form: ``score - alpha / K⁻¹ᵢᵢ`` and ``1 / sqrt(K⁻¹ᵢᵢ)``,
        Rasmussen & Williams eq. 5.12)."""
        inv_chol = np.linalg.inv(self._chol)
        inv_diag = (inv_chol**2).sum(0)
        return self.scores - self._alpha / inv_diag, 1.0 / np.sqrt(inv_diag)

    def objective_at(self, score: float) -> float:
        """The objective a trial with this normal score would have: the history's objective
        interpolated at that score (monotone; clipped to the history's worst and best)."""
        order = np.argsort(self.scores, kind="stable")
        return float(np.interp(score, self.scores[order], self.y[order]))
