"""Aggregate statistics with hand-computed cases (rliable's definitions)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from scpr_jax.stats import iqm, mean_se, stratified_bootstrap_ci, summary


def test_iqm_cuts_a_quarter_at_each_end():
    # 8 values: cut 2 at each end -> mean(3, 4, 5, 6) = 4.5 (the outliers do not count)
    assert iqm([-100, 1, 3, 4, 5, 6, 9, 1000]) == 4.5
    assert iqm([1.0, 2.0, 6.0]) == 3.0  # n = 3: floor(3/4) = 0 cut, the plain mean
    x = np.random.default_rng(0).normal(size=(10, 3))  # pooled over all runs and tasks
    assert iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None))


def test_mean_and_standard_error():
    mean, se = mean_se([1.0, 2.0, 3.0])  # std (ddof 1) = 1, se = 1 / sqrt(3)
    assert mean == 2.0 and se == pytest.approx(1 / np.sqrt(3))
    assert mean_se([5.0]) == (5.0, 0.0)


def test_bootstrap_of_constant_scores_is_a_point_and_of_two_values_is_their_range():
    assert stratified_bootstrap_ci(np.full((4, 2), 0.7)) == (0.7, 0.7)
    # runs {0, 1}, mean statistic: replicates are 0, 0.5 or 1 with prob. 1/4, 1/2, 1/4, so
    # the 95% percentile interval is [0, 1]; a 40% interval sits on the middle value
    lo, hi = stratified_bootstrap_ci([0.0, 1.0], np.mean, reps=4000, size=0.95)
    assert (lo, hi) == (0.0, 1.0)
    assert stratified_bootstrap_ci([0.0, 1.0], np.mean, reps=4000, size=0.4) == (0.5, 0.5)


def test_bootstrap_is_stratified_by_task():
    # runs redrawn per task column independently: each column mean is 0, 5 or 10 (1/4, 1/2,
    # 1/4), the overall mean 0 with prob. 1/16, so the 95% interval is [0, 10]; redrawing
    # whole runs (rows) instead would always give 5
    x = np.array([[0.0, 10.0], [10.0, 0.0]])
    assert stratified_bootstrap_ci(x, np.mean, reps=4000) == (0.0, 10.0)


def test_summary_and_bad_input():
    out = summary([[1.0], [2.0], [3.0], [4.0]], reps=500)
    assert out["mean"] == 2.5 and out["iqm"] == 2.5 and out["n_runs"] == 4
    assert out["iqm_ci95"][0] <= 2.5 <= out["iqm_ci95"][1]
    with pytest.raises(ValueError, match="finite"):
        iqm([1.0, np.nan])
    with pytest.raises(ValueError, match="size=1.5"):
        stratified_bootstrap_ci([1.0, 2.0], size=1.5)
