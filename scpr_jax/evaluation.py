"""Downstream evaluation (PAPER.md 3.6, 6): rollouts and the normalised results table.

Rollouts: every episode resets the downstream environment, so it draws a random downstream
goal (in the observation); return = sum of r_new (cost never subtracted), cost = number of
unsafe steps. Table 1 normalises per seed: Rew = return / mean Oracle return, Cost = cost /
mean Task-Only cost, then reports mean and standard error over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.acting import is_host, rollout
from scpr_jax.envs import make

Policy = Callable[[Any, jax.Array], jax.Array]  # act(params, obs_full [O]) -> action [A]


def downstream_returns_fn(
    task_name: str,
    n_episodes: int,
    act: Policy,
    max_steps: int | None = None,
    interval: int = 1,
    **task_kwargs,
) -> Callable[[jax.Array, Any], tuple[jax.Array, jax.Array]]:
    """A pure ``f(key, params) -> (returns [n_episodes], costs [n_episodes])``.

    ``act(params, obs_full [O]) -> action [A]`` is a deterministic downstream policy. ``f`` is
    not jitted: wrap it as ``jax.jit(jax.vmap(f))(keys, params)`` to evaluate a leading seed
    axis of parameters in one program. Key use per episode ``e`` (for reference loops):
    ``k_reset, k_steps = split(split(key, n_episodes)[e])``, step keys
    ``split(k_steps, n_steps)``. For ``real:<task>`` (the real simulators) ``f`` runs on the
    host (`bridge.rollout.downstream_returns_fn`): call it directly, loop over seeds.

    ``interval`` k > 1 (a skill's control interval): ``act`` is a pair ``(choose(params,
    obs) -> u, execute(params, obs, u) -> action)``; u is chosen at episode steps 0, k, 2k, ...
    and held in between, while the skill acts on every step's observation.
    """
    if not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval={interval!r} must be an integer >= 1")
    if "/" in task_name:
        raise ValueError(f"task_name={task_name!r} must be a task name without a form")
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes} must be >= 1")
    if is_host(task_name):  # real simulators: a host-side f (neither jit nor vmap)
        if interval != 1:
            raise ValueError(f"interval={interval} > 1 is not supported on {task_name!r} yet")
        # the bridge (host simulators, an optional dependency) loads only for a real: task
        from scpr_jax.bridge.rollout import downstream_returns_fn as host_fn

        return host_fn(task_name, n_episodes, act, max_steps, **task_kwargs)
    env = make(f"{task_name}/downstream", **task_kwargs)
    env_params = env.default_params(max_steps=max_steps)
    n_steps = int(env_params.max_steps)

    def episode(key: jax.Array, params: Any) -> tuple[jax.Array, jax.Array]:
        if interval == 1:
            return rollout(env, env_params, lambda obs, t, u: (act(params, obs), u), key, n_steps)
        choose, execute = act

        def policy(obs, t, u):
            u = jnp.where(t % interval == 0, choose(params, obs), u)
            return execute(params, obs, u), u

        init = lambda obs0: jnp.zeros_like(choose(params, obs0))  # noqa: E731
        return rollout(env, env_params, policy, key, n_steps, init)

    def f(key: jax.Array, params: Any) -> tuple[jax.Array, jax.Array]:
        keys = jax.random.split(key, n_episodes)
        return jax.vmap(episode, in_axes=(0, None))(keys, params)

    return f


def downstream_returns(
    key: jax.Array,
    task_name: str,
    act: Callable[[jax.Array], jax.Array],
    n_episodes: int,
    max_steps: int | None = None,
    **task_kwargs,
) -> tuple[jax.Array, jax.Array]:
    """Episode returns (r_new) and costs [n_episodes] of ``act(obs_full [O]) -> action [A]``."""
    f = downstream_returns_fn(
        task_name, n_episodes, lambda _, obs: act(obs), max_steps, **task_kwargs
    )
    return (f if is_host(task_name) else jax.jit(f))(key, None)


def _mean_se(x: np.ndarray) -> dict[str, float]:
    """Mean and standard error (std with ddof=1 over sqrt(n); 0 for n == 1) of x [n]."""
    se = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    return {"mean": float(np.mean(x)), "se": se}


def _per_seed(raw: Mapping[str, Mapping[str, Any]], name: str, field: str) -> np.ndarray:
    if field not in raw[name]:
        raise ValueError(f"raw[{name!r}] has no {field!r}; expected keys 'return' and 'cost'")
    x = np.asarray(raw[name][field], np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(
            f"raw[{name!r}][{field!r}] has shape {x.shape}; expected [n_seeds] with n_seeds >= 1"
        )
    return x


def _reference(
    raw: Mapping, ref: str, field: str, label: str, atol: float, notes: list[str]
) -> float | None:
    """Mean over seeds of ``raw[ref][field]``, or None (with a note) if unusable."""
    if ref not in raw:
        notes.append(f"{label}: reference method {ref!r} is missing, so it is not normalised.")
        return None
    mean = float(np.mean(_per_seed(raw, ref, field)))
    if abs(mean) <= atol:
        notes.append(
            f"{label}: the mean {field} of reference {ref!r} is {mean:.3g} (~0), so it is "
            "not normalised (the ratio would divide by zero)."
        )
        return None
    return mean


def normalised_table(
    raw: Mapping[str, Mapping[str, Any]],
    reward_ref: str = "oracle",
    cost_ref: str = "task-only",
    atol: float = 1e-8,
) -> dict:
    """Table 1 from per-seed means: raw[method] = {"return": [n_seeds], "cost": [n_seeds]}.

    Per seed: rew_norm = return / mean_seeds(raw[reward_ref]["return"]) and cost_norm =
    cost / mean_seeds(raw[cost_ref]["cost"]); each row keeps mean and SE over seeds of
    return, cost, rew_norm and cost_norm (SE ignores the reference's own uncertainty). A
    missing reference or one whose mean is within ``atol`` of 0 gives None entries and a
    note. A negative reward reference keeps the ratio defined but inverts its order (a
    higher return gives a lower rew_norm); a note says so. Returns a JSON-ready dict:
    methods (given order), rows, references, notes.
    """
    if not raw:
        raise ValueError("raw is empty; expected at least one method")
    notes: list[str] = []
    r_ref = _reference(raw, reward_ref, "return", "Rew (norm)", atol, notes)
    c_ref = _reference(raw, cost_ref, "cost", "Cost (norm)", atol, notes)
    if r_ref is not None and r_ref < 0:
        notes.append(
            f"Rew (norm): the mean return of {reward_ref!r} is negative ({r_ref:.3g}); the "
            "ratio is still return / reference, so larger values mean LOWER returns."
        )
    rows = {}
    for name in raw:
        ret, cost = _per_seed(raw, name, "return"), _per_seed(raw, name, "cost")
        if ret.size != cost.size:
            raise ValueError(
                f"raw[{name!r}] has {ret.size} returns but {cost.size} costs; expected one "
                "of each per seed"
            )
        rows[name] = {
            "n_seeds": int(ret.size),
            "return": {**_mean_se(ret), "per_seed": ret.tolist()},
            "cost": {**_mean_se(cost), "per_seed": cost.tolist()},
            "rew_norm": None if r_ref is None else _mean_se(ret / r_ref),
            "cost_norm": None if c_ref is None else _mean_se(cost / c_ref),
        }
    return {
        "methods": list(raw),
        "rows": rows,
        "reward_ref": reward_ref,
        "cost_ref": cost_ref,
        "reward_ref_mean": r_ref,
        "cost_ref_mean": c_ref,
        "notes": notes,
    }


def _fmt(entry: Mapping[str, float] | None) -> str:
    return "n/a" if entry is None else f"{entry['mean']:.3f} ± {entry['se']:.3f}"


def table_markdown(table: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """Markdown of a `normalised_table`: one row per method, "mean ± SE" cells, notes below."""
    methods = list(table["methods"] if methods is None else methods)
    unknown = [m for m in methods if m not in table["rows"]]
    if unknown:
        raise ValueError(f"methods {unknown} not in the table; it has {list(table['rows'])}")
    lines = [
        "| Method | Rew (norm) | Cost (norm) | Return (raw) | Cost (raw) |",
        "|---|---|---|---|---|",
    ]
    for name in methods:
        row = table["rows"][name]
        cells = [row["rew_norm"], row["cost_norm"], row["return"], row["cost"]]
        lines.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
    seeds = {table["rows"][m]["n_seeds"] for m in methods}
    if len(seeds) == 1:
        seed_line = f"Seeds per method: {seeds.pop()}."
    else:
        seed_line = "Seeds: " + ", ".join(f"{m} {table['rows'][m]['n_seeds']}" for m in methods)
    lines += [
        "",
        f"Rew (norm) = return / mean {table['reward_ref']} return; Cost (norm) = cost / mean "
        f"{table['cost_ref']} cost (per seed). ± is the standard error over seeds.",
        seed_line,
    ]
    if table["notes"]:
        lines += ["", "Notes:", *[f"- {note}" for note in table["notes"]]]
    return "\n".join(lines) + "\n"
