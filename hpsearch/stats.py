"""Statistics shared by the worker (the bound's running estimate) and the report: ranks,
Spearman's ρ, and the bound's constant ĉ with its rank correlation."""
from __future__ import annotations

import math
from typing import Any, Sequence

from optuna.trial import FrozenTrial, TrialState


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
    pts = [(t.number, t.user_attrs["energy"], t.user_attrs["adaptation_l2"]) for t in trials
           if t.state == TrialState.COMPLETE
           and finite(t.user_attrs.get("energy"), t.user_attrs.get("adaptation_l2"))]
    ratios = [(a / e, n) for n, e, a in pts if e > 0]
    c_hat, arg = max(ratios) if ratios else (None, None)
    rho = spearman_rho([e for _, e, _ in pts], [a for _, _, a in pts])
    return {"c_hat": c_hat, "c_hat_trial": arg, "n_ratio": len(ratios), "spearman_rho": rho,
            "n_rho": len(pts)}
