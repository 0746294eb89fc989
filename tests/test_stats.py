"""hpsearch.stats: Student-t quantiles and intervals of a mean."""

from __future__ import annotations

import math
import statistics

import pytest

from hpsearch.stats import mean_interval, t_cdf_two_sided, t_quantile

# t_{0.975, df} from published tables (two-sided 95%), and t_{0.995, df} (99%).
T_975 = {
    1: 12.7062047,
    2: 4.3026527,
    3: 3.1824463,
    4: 2.7764451,
    5: 2.5705818,
    9: 2.2621572,
    10: 2.2281389,
    29: 2.0452296,
    30: 2.0422725,
    120: 1.9799304,
}
T_995 = {1: 63.6567412, 2: 9.9248432, 4: 4.6040949, 10: 3.1692727}


@pytest.mark.parametrize("df", sorted(T_975))
def test_t_quantile_matches_the_tables(df):
    assert t_quantile(0.95, df) == pytest.approx(T_975[df], abs=1e-6)


@pytest.mark.parametrize("df", sorted(T_995))
def test_t_quantile_matches_the_tables_at_99_percent(df):
    assert t_quantile(0.99, df) == pytest.approx(T_995[df], abs=1e-6)


def test_t_cdf_is_cauchy_at_one_degree_and_normal_at_many():
    assert t_cdf_two_sided(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| <= 1) = 1/2
    assert t_cdf_two_sided(1.959964, 4000) == pytest.approx(0.95, abs=2e-4)


def test_t_quantile_agrees_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 60):
        for level in (0.8, 0.9, 0.95, 0.99):
            assert t_quantile(level, df) == pytest.approx(
                stats.t.ppf((1 + level) / 2, df), rel=1e-9
            )


def test_mean_interval_is_mean_plus_minus_t_s_over_root_n():
    values = [0.71, 0.74, 0.69, 0.75]
    iv = mean_interval(values)
    half = T_975[3] * statistics.stdev(values) / math.sqrt(4)
    assert (iv.mean, iv.n) == (pytest.approx(statistics.fmean(values)), 4)
    assert (iv.low, iv.high) == (pytest.approx(iv.mean - half), pytest.approx(iv.mean + half))
    assert iv.excludes_zero()  # 0.72 ± 0.04
    assert mean_interval([0.010, 0.012, 0.011]).excludes_zero()  # a consistent gain
    assert not mean_interval([-0.01, 0.02, 0.005]).excludes_zero()  # within the noise
    assert mean_interval([-0.010, -0.012, -0.011]).excludes_zero()  # a consistent loss


def test_one_value_has_no_interval_and_none_has_no_mean():
    one = mean_interval([0.7])
    assert one.mean == 0.7 and one.half is None and one.low is None
    assert not one.excludes_zero()
    assert mean_interval([]) is None


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_cdf_two_sided(1.0, 0)
