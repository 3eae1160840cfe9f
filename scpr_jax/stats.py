"""Aggregate statistics over runs: mean +- standard error, the interquartile mean (IQM) and
stratified-bootstrap confidence intervals, as the rliable library defines them (Agarwal et
al., 2021), written in NumPy.

Scores are arrays [runs, tasks] (one column per environment, or one column). The IQM is the
mean of the middle 50% of all scores pooled (``scipy.stats.trim_mean(x, 0.25)`` of the
flattened array: ``floor(n / 4)`` values cut at each end). A stratified bootstrap redraws
the runs with replacement inside each task column independently and recomputes the
statistic; the interval is the percentile interval of those replicates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _scores(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] < 1 or not np.isfinite(x).all():
        raise ValueError(f"scores must be a finite [runs, tasks] array, got shape {x.shape}")
    return x


def iqm(x) -> float:
    """Interquartile mean of all scores: the mean after cutting floor(n/4) at each end."""
    flat = np.sort(_scores(x), axis=None)
    cut = flat.size // 4
    return float(flat[cut : flat.size - cut].mean())


def mean_se(x) -> tuple[float, float]:
    """(mean, standard error of the mean over runs; 0 for one run) of a [runs] array."""
    v = np.asarray(x, np.float64).ravel()
    se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
    return float(v.mean()), float(se)


def stratified_bootstrap_ci(
    x,
    statistic: Callable[[np.ndarray], float] = iqm,
    reps: int = 2000,
    size: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval (``size``, e.g. 0.95) of ``statistic`` over ``reps`` stratified
    bootstrap replicates of the scores x [runs, tasks] (runs redrawn per task)."""
    x = _scores(x)
    if not 0 < size < 1 or reps < 1:
        raise ValueError(f"size={size} must be in (0, 1) and reps={reps} >= 1")
    rng = np.random.default_rng(seed)
    n_runs, n_tasks = x.shape
    idx = rng.integers(0, n_runs, size=(reps, n_runs, n_tasks))  # per task column
    replicates = np.array([statistic(np.take_along_axis(x, i, axis=0)) for i in idx])
    lo, hi = np.percentile(replicates, [50 * (1 - size), 50 * (1 + size)])
    return float(lo), float(hi)


def summary(x, reps: int = 2000, seed: int = 0) -> dict:
    """Mean, standard error, IQM and its 95% stratified-bootstrap interval of scores x."""
    x = _scores(x)
    mean, se = mean_se(x.mean(axis=1))
    lo, hi = stratified_bootstrap_ci(x, iqm, reps, 0.95, seed)
    return {"mean": mean, "se": se, "iqm": iqm(x), "iqm_ci95": [lo, hi], "n_runs": x.shape[0]}
