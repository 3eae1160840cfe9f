"""The report of a run: results table (Markdown, JSON), learning curves, Pareto scatter, config.

Figures are drawn on a bare `matplotlib.figure.Figure` (Agg canvas, no pyplot state, no
display) into a buffer and written atomically like every other artifact.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scpr_jax.evaluation import table_markdown
from scpr_jax.runs import atomic_write_bytes, atomic_write_json


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _curve_arrays(name: str, curve: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """(step [T], return [n_seeds, T], cost [n_seeds, T]) of one method, validated."""
    for field in ("step", "return", "cost"):
        if field not in curve:
            raise ValueError(f"curves[{name!r}] has no {field!r}; needs step, return, cost")
    step = np.asarray(curve["step"], np.float64)
    ret = np.atleast_2d(np.asarray(curve["return"], np.float64))
    cost = np.atleast_2d(np.asarray(curve["cost"], np.float64))
    for field, x in (("return", ret), ("cost", cost)):
        if step.ndim != 1 or x.ndim != 2 or x.shape[1] != step.size:
            raise ValueError(
                f"curves[{name!r}][{field!r}] has shape {x.shape} with step {step.shape}; "
                "expected step [T] and [n_seeds, T]"
            )
    return step, ret, cost


def curves_png(curves: Mapping[str, Mapping[str, Any]], title: str) -> bytes:
    """Eval return and cost vs update step per method: seed mean with a shaded ±SE band."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for name, curve in curves.items():
        step, ret, cost = _curve_arrays(name, curve)
        for ax, y in zip(axes, (ret, cost), strict=True):
            mean = y.mean(0)
            n = y.shape[0]
            se = y.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
            (line,) = ax.plot(step, mean, label=f"{name} (n={n})")
            ax.fill_between(step, mean - se, mean + se, color=line.get_color(), alpha=0.2)
    for ax, label in zip(axes, ("eval return", "eval cost"), strict=True):
        ax.set_xlabel("update step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if curves:
        axes[0].legend(fontsize="small")
    else:
        axes[0].text(0.5, 0.5, "no curves", ha="center", transform=axes[0].transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def scatter_png(table: Mapping[str, Any], title: str) -> bytes:
    """Normalised reward vs normalised cost per method with SE bars (raw if unavailable)."""
    methods = table["methods"]
    rows = table["rows"]
    # normalisation depends only on the reference, so availability is per axis
    x_key = "cost_norm" if all(rows[m]["cost_norm"] is not None for m in methods) else "cost"
    y_key = "rew_norm" if all(rows[m]["rew_norm"] is not None for m in methods) else "return"
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for name in methods:
        x, y = rows[name][x_key], rows[name][y_key]
        ax.errorbar(x["mean"], y["mean"], xerr=x["se"], yerr=y["se"], fmt="o", capsize=3)
        ax.annotate(name, (x["mean"], y["mean"]), textcoords="offset points", xytext=(5, 5))
    labels = {
        "cost_norm": f"cost / {table['cost_ref']} cost",
        "cost": "cost (raw)",
        "rew_norm": f"return / {table['reward_ref']} return",
        "return": "return (raw)",
    }
    ax.set_xlabel(labels[x_key])
    ax.set_ylabel(labels[y_key])
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def cells_png(cells: Mapping[str, Mapping[str, Any]], names: Mapping[str, str],
              paper: Mapping[str, Mapping[str, tuple]] | None = None) -> bytes:  # fmt: skip
    """One panel per env: normalised reward vs cost of each method (IQM with its 95% CI),
    ``paper``'s (reward, cost) as crosses. cells: env -> method -> cell with ``rew_norm`` /
    ``cost_norm`` summaries (`stats.summary`, or None)."""
    envs, paper = list(cells), paper or {}
    fig = Figure(figsize=(4.5 * len(envs), 4))
    for ax, env in zip(np.atleast_1d(fig.subplots(1, len(envs))), envs, strict=True):
        for i, (m, c) in enumerate(cells[env].items()):
            if c["rew_norm"] is None or c["cost_norm"] is None:
                continue
            x, y = c["cost_norm"], c["rew_norm"]
            xerr = [[x["iqm"] - x["iqm_ci95"][0]], [x["iqm_ci95"][1] - x["iqm"]]]
            yerr = [[y["iqm"] - y["iqm_ci95"][0]], [y["iqm_ci95"][1] - y["iqm"]]]
            ax.errorbar(x["iqm"], y["iqm"], xerr=xerr, yerr=yerr, fmt="o", color=f"C{i}",
                        capsize=3, label=names.get(m, m))  # fmt: skip
            if (ref := paper.get(env, {}).get(m)) is not None:
                ax.plot(ref[1], ref[0], "x", color=f"C{i}", markersize=9)
        ax.set(title=env, xlabel="cost / Task-Only cost", ylabel="return / Oracle return")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8, title="o ours (IQM, 95% CI), x paper")
    fig.tight_layout()
    return _png(fig)


def curve_grid_png(curves: Mapping[str, Mapping[str, Mapping[str, Any]]],
                   names: Mapping[str, str]) -> bytes:  # fmt: skip
    """Evaluation return (top row) and cost (bottom) vs update per env, mean +- SE over runs.
    curves: env -> method -> {"step": [T], "return": [runs, T], "cost": [runs, T]}."""
    envs = list(curves)
    fig = Figure(figsize=(4.5 * len(envs), 6.4))
    axes = np.asarray(fig.subplots(2, len(envs), squeeze=False))
    for col, env in enumerate(envs):
        for i, (m, c) in enumerate(curves[env].items()):
            for ax, key in zip(axes[:, col], ("return", "cost"), strict=True):
                y = np.asarray(c[key], np.float64)
                mean = y.mean(0)
                se = y.std(0, ddof=1) / np.sqrt(len(y)) if len(y) > 1 else np.zeros_like(mean)
                ax.plot(c["step"], mean, color=f"C{i}", label=f"{names.get(m, m)} (n={len(y)})")
                ax.fill_between(c["step"], mean - se, mean + se, color=f"C{i}", alpha=0.2)
        axes[0, col].set(title=env, ylabel="evaluation return")
        axes[1, col].set(xlabel="update", ylabel="evaluation cost")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def write_report(
    out_dir: str | os.PathLike,
    table: Mapping[str, Any],
    curves: Mapping[str, Mapping[str, Any]],
    config_dict: Mapping[str, Any] | Any,
    title: str,
) -> dict[str, Path]:
    """Writes table.md, table.json, curves.png, scatter.png and config.json to ``out_dir``.

    ``table``: a `evaluation.normalised_table`; ``curves``: method -> {"step": [T],
    "return": [n_seeds, T], "cost": [n_seeds, T]}; ``config_dict``: a dict or ConfigDict.
    Every file is written atomically (rewriting replaces it). Returns file name -> path.
    """
    out_dir = Path(out_dir)
    if hasattr(config_dict, "to_dict"):  # ml_collections.ConfigDict
        config_dict = config_dict.to_dict()
    # render everything before writing, so a bad input leaves the old report intact
    files: dict[str, bytes] = {
        "table.md": f"# {title}\n\n{table_markdown(table)}".encode(),
        "curves.png": curves_png(curves, title),
        "scatter.png": scatter_png(table, title),
    }
    names = ("table.md", "table.json", "curves.png", "scatter.png", "config.json")
    paths = {name: out_dir / name for name in names}
    for name, data in files.items():
        atomic_write_bytes(paths[name], data)
    atomic_write_json(paths["table.json"], table)
    atomic_write_json(paths["config.json"], config_dict)
    return paths
