"""Statistics shared by the worker (the bound's running estimate, the confirmation's answer), the
report and the replay: ranks, Spearman's ρ, Kendall's τ, the bound's constant ĉ with its rank
correlation, Student-t intervals of a mean and a bootstrap interval of a mean.

The t quantile is computed here, without scipy (which only the energy pruner imports): the
degrees of freedom are always whole numbers (seeds − 1), for which Student's t CDF has a closed
form (a finite sum in θ = atan(t / √ν)), and bisection inverts it to 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.record import TrialRecord


def finite(*values: Any) -> bool:
    """True when every value is a finite int or float (not None, not NaN)."""
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None below 2 points or when a
    variable is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b: (concordant − discordant pairs) / sqrt((pairs − ties in x)(pairs − ties in
    y)); a pair tied in both counts in neither. None below 2 points or when a variable is
    constant. Vectorised over the pairs: the energy pruner weighs its models with it at every
    decision."""
    import numpy as np

    if len(x) != len(y) or len(x) < 2:
        return None
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    upper = np.triu_indices(len(xs), 1)
    dx = np.sign(xs[:, None] - xs[None, :])[upper]
    dy = np.sign(ys[:, None] - ys[None, :])[upper]
    pairs_x, pairs_y = np.count_nonzero(dx), np.count_nonzero(dy)  # pairs not tied in x, in y
    if pairs_x == 0 or pairs_y == 0:
        return None
    return float((dx * dy).sum()) / math.sqrt(float(pairs_x) * float(pairs_y))


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float] | None:
    """The mean and its ``level`` percentile-bootstrap interval (``resamples`` resamples with a
    fixed seed, so the same values give the same interval); None for no values. One value, or
    values all equal, give a zero-width interval."""
    import numpy as np

    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        return None
    mean = float(data.mean())
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return mean, min(float(low), mean), max(float(high), mean)


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def bound_stats(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """ĉ = max over complete trials of adaptation_l2 / energy (the smallest constant with
    ‖z_T − z_0‖ ≤ ĉ · energy on every trial), the trial attaining it, and Spearman ρ between
    energy and adaptation_l2. Trials without both metrics, or with energy 0, do not count."""
    records = [(t.number, TrialRecord.of(t)) for t in trials if t.state == TrialState.COMPLETE]
    pts = [
        (n, r.energy, r.adaptation_l2)
        for n, r in records
        if r.finite("energy") is not None and r.finite("adaptation_l2") is not None
    ]
    ratios = [(a / e, n) for n, e, a in pts if e > 0]
    c_hat, arg = max(ratios) if ratios else (None, None)
    rho = spearman_rho([e for _, e, _ in pts], [a for _, _, a in pts])
    return {
        "c_hat": c_hat,
        "c_hat_trial": arg,
        "n_ratio": len(ratios),
        "spearman_rho": rho,
        "n_rho": len(pts),
    }


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` >= 1 whole degrees of freedom (t >= 0).

    With θ = atan(t / √df): for odd df, (2/π)(θ + sin θ · Σ_{k=0}^{(df-3)/2} a_k cos^{2k+1} θ)
    with a_0 = 1, a_k = a_{k-1} · 2k / (2k + 1); for even df, sin θ · Σ_{k=0}^{(df-2)/2} b_k
    cos^{2k} θ with b_0 = 1, b_k = b_{k-1} · (2k − 1) / (2k)."""
    if df < 1 or df != int(df):
        raise ValueError(f"df must be a whole number >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range((df - 1) // 2):
            if k:
                term *= c * c * (2 * k) / (2 * k + 1)
            total += term
        return (2 / math.pi) * (theta + s * total)
    total, term = 0.0, 1.0
    for k in range(df // 2):
        if k:
            term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| <= t) = ``level`` (two-sided; 0.95 gives t_{0.975, df})."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, df) < level:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and the half-width of its two-sided t interval at ``level``
    (None below two values: one seed says nothing about the spread)."""

    mean: float
    half: float | None
    n: int
    level: float = 0.95

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.half is not None and (self.low > 0 or self.high < 0)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval | None:
    """Mean ± t_{(1+level)/2, n−1} · s / √n of ``values``; None for no values."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, None, n, level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t_quantile(level, n - 1) * sd / math.sqrt(n), n, level)
