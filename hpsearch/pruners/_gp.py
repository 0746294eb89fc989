"""A small Gaussian-process regressor: the energy pruner's predictor of the FT objective.

Exact GP regression with an ARD Matérn-5/2 kernel on standardised inputs and outputs. The
hyperparameters (one lengthscale per input, signal and noise variance) are the MAP estimate under
weak log-normal priors, found with L-BFGS in float64. The lengthscale prior grows with the number
of inputs (median sqrt(2 d), as proposed by Hvarfner et al., 2024, for GPs in many dimensions), so
with a handful of trials an input has to earn a short lengthscale from the data. Sizes here are
tens of points, so the O(n^3) Cholesky costs nothing next to one FT epoch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

_NOISE_FLOOR = 1e-6  # in standardised units: keeps the kernel matrix positive definite
_FIT_ITERATIONS = 200
_NOISE_PRIOR_MEDIAN = 0.1  # a tenth of the objective's variance is noise, a priori
_PRIOR_SIGMA = math.sqrt(3.0)


def _matern52(a: torch.Tensor, b: torch.Tensor, lengthscale: torch.Tensor,
              signal: torch.Tensor) -> torch.Tensor:
    diff = (a[:, None, :] - b[None, :, :]) / lengthscale
    r = torch.sqrt((diff**2).sum(-1) + 1e-12)  # the epsilon keeps the gradient finite at r = 0
    s5r = math.sqrt(5.0) * r
    return signal * (1.0 + s5r + s5r**2 / 3.0) * torch.exp(-s5r)


def _log_normal_logpdf(log_x: torch.Tensor, log_median: float, sigma: float) -> torch.Tensor:
    return (-0.5 * ((log_x - log_median) / sigma) ** 2).sum()


class GaussianProcess:
    """GP regression of ``y`` on the rows of ``x``; ``predict`` gives mean and std of a new
    observation (latent variance plus noise), in the units of ``y``.

    Inputs with zero spread in ``x`` are ignored (their standardised value is 0 everywhere).
    Needs at least two rows; ``y`` must be finite.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2:
            raise ValueError(f"GaussianProcess needs x of shape (n, d) and y of shape (n,) with "
                             f"n >= 2, got {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("GaussianProcess needs finite x and y")
        self._x_mean = x.mean(0)
        spread = x.std(0)
        self._x_scale = np.where(spread > 1e-12, spread, 1.0)
        self._y_mean = float(y.mean())
        spread_y = float(y.std(ddof=1))
        # All-equal objectives: keep a small, non-zero scale so the std stays meaningful.
        self._y_scale = spread_y if spread_y > 1e-12 else max(abs(self._y_mean) * 1e-3, 1e-6)
        self._x = torch.from_numpy((x - self._x_mean) / self._x_scale)
        self._y = torch.from_numpy((y - self._y_mean) / self._y_scale)
        self._fit()

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self._log_ls.exp(), self._log_signal.exp(),
                _NOISE_FLOOR + self._log_noise.exp())

    def _cholesky(self) -> tuple[torch.Tensor, torch.Tensor]:
        lengthscale, signal, noise = self._params()
        k = _matern52(self._x, self._x, lengthscale, signal)
        k = k + noise * torch.eye(len(self._x), dtype=k.dtype)
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(self._y[:, None], chol)
        return chol, alpha

    def _fit(self) -> None:
        d = self._x.shape[1]
        ls_median = 0.5 * math.log(2.0 * d)  # log sqrt(2 d)
        self._log_ls = torch.full((d,), ls_median, dtype=torch.float64, requires_grad=True)
        self._log_signal = torch.zeros((), dtype=torch.float64, requires_grad=True)
        self._log_noise = torch.tensor(math.log(_NOISE_PRIOR_MEDIAN), dtype=torch.float64,
                                       requires_grad=True)
        params = [self._log_ls, self._log_signal, self._log_noise]
        optimizer = torch.optim.LBFGS(params, max_iter=_FIT_ITERATIONS,
                                      line_search_fn="strong_wolfe")
        best = [math.inf, [p.detach().clone() for p in params]]

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            try:
                chol, alpha = self._cholesky()
            except torch.linalg.LinAlgError:  # a step into a degenerate region: reject it
                return torch.tensor(math.inf, dtype=torch.float64, requires_grad=True)
            nll = (0.5 * (self._y[:, None] * alpha).sum() + chol.diagonal().log().sum()
                   - _log_normal_logpdf(self._log_ls, ls_median, _PRIOR_SIGMA)
                   - _log_normal_logpdf(self._log_signal, 0.0, _PRIOR_SIGMA)
                   - _log_normal_logpdf(self._log_noise, math.log(_NOISE_PRIOR_MEDIAN),
                                        _PRIOR_SIGMA))
            value = float(nll.detach())
            if math.isfinite(value) and value < best[0]:
                best[0], best[1] = value, [p.detach().clone() for p in params]
            nll.backward()
            return nll

        optimizer.step(closure)
        with torch.no_grad():  # the best point seen, in case the last line search wandered off
            for p, value in zip(params, best[1]):
                p.copy_(value)
            self._chol, self._alpha = self._cholesky()

    @property
    def lengthscales(self) -> np.ndarray:
        """Fitted lengthscale per input, in standard deviations of that input (long = ignored)."""
        return self._log_ls.detach().exp().numpy().copy()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of a new observation at each row of ``x``."""
        xs = torch.from_numpy((np.asarray(x, dtype=np.float64).reshape(-1, len(self._x_mean))
                               - self._x_mean) / self._x_scale)
        lengthscale, signal, noise = self._params()
        k_star = _matern52(xs, self._x, lengthscale, signal)
        mean = (k_star @ self._alpha)[:, 0]
        v = torch.linalg.solve_triangular(self._chol, k_star.T, upper=False)
        var = (signal - (v**2).sum(0)).clamp_min(0.0) + noise
        return (mean.numpy() * self._y_scale + self._y_mean,
                var.sqrt().numpy() * self._y_scale)
