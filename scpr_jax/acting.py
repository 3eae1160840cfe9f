"""The acting core: one vectorised step -> store -> maybe-learn, and one episode statistic.

Step -> store -> learn (PAPER.md 3.1, 3.6). A learner that collects its own data (the SAC
collector of D_tau, in `data.collect` and on the host in `data.host_collect`; online TD3 in
`downstream.online`) runs, per vectorised step t of N environment copies: ``act`` (random
while ``t < warmup_t``), the environment step, ``store`` of the N transitions, then, from
step ``learn_from`` on, ``learn`` on the buffer; before that a ``lax.cond`` skips it and
reports zero metrics of the learner's shapes. `act_store_learn` is that step for jitted
environments; a host environment steps between its two halves (``act``, `store_and_learn`).
`chunk_means` turns the per-step metrics of a chunk into its means (learner metrics over the
steps that learned), with ``xp=jnp`` inside jit or ``xp=np`` on host-side lists.

Episodes. Every evaluation rollout (`evaluation`, `skills.evaluate`, `bridge.rollout`) sums an
episode's reward and cost with `accumulate` until its first end: `AutoReset` starts a new
episode after ``done``, and the ``alive`` mask drops its steps. `rollout` is the jitted episode.

`is_host` says whether an environment (or its name) steps on the host (a bridged real
simulator): its rollouts and collectors are Python loops around jitted pieces, not jitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from scpr_jax.envs.registry import REAL


def is_host(env: Any) -> bool:
    """Whether ``env`` (an environment or its name) steps on the host rather than in jit.

    Names ``real:<task>[/<form>]`` and environments with a true ``host`` attribute (the
    bridge's `BridgedEnv`) are host-side; the functional JAX environments are not.
    """
    if isinstance(env, str):
        return env.startswith(REAL)
    return bool(getattr(env, "host", False))


# --- step -> store -> maybe-learn --------------------------------------------------------------


def scan_updates(update: Callable, learner: Any, key: jax.Array, n_updates: int):
    """``n_updates`` keyed ``update(learner, key) -> (learner, metrics)`` in a ``lax.scan``.

    Returns (learner, metrics averaged over the updates); keys ``split(key, n_updates)``.
    """
    learner, metrics = jax.lax.scan(update, learner, jax.random.split(key, n_updates))
    return learner, jax.tree.map(jnp.mean, metrics)


def maybe_learn(updated: jax.Array, learn: Callable, learner: Any, *operands):
    """``learn(learner, *operands) -> (learner, metrics)`` if ``updated`` ([] bool), else the
    learner unchanged and metrics of zeros with learn's shapes and dtypes (one ``lax.cond``)."""

    def skip(learner, *operands):
        shapes = jax.eval_shape(learn, learner, *operands)[1]
        return learner, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(updated, learn, skip, learner, *operands)


def transition_sums(ts) -> dict:
    """Environment metrics of one vectorised step of N copies (a batched `TimeStep`).

    reward / cost: means over copies; episodes: episodes ended; episode_return /
    episode_cost: sums of the ended episodes' statistics (`EpisodeStats`). Each [].
    """
    done = ts.info["episode_done"].astype(jnp.float32)
    return {
        "reward": jnp.mean(ts.reward),
        "cost": jnp.mean(ts.cost),
        "episodes": jnp.sum(done),
        "episode_return": jnp.sum(done * ts.info["episode_return"]),
        "episode_cost": jnp.sum(done * ts.info["episode_cost"]),
    }


def store_and_learn(store, learn, learn_from: int, t, learner, action, ts, key, *operands):
    """The step's second half: store, then (from step ``learn_from`` on) learn.

    ``store(action [N, A], ts) -> (buffer, filled [] int32)``; ``learn(learner, buffer, filled,
    *operands, key) -> (learner, metrics {name: []})``; t [] int32 the vectorised step.
    Returns (learner, buffer, metrics): `transition_sums`, ``updated`` (0/1) and learn's.
    """
    buffer, filled = store(action, ts)
    updated = t >= learn_from
    learner, learned = maybe_learn(updated, learn, learner, buffer, filled, *operands, key)
    metrics = {**transition_sums(ts), "updated": updated.astype(jnp.float32), **learned}
    return learner, buffer, metrics


def act_store_learn(
    act, env_step, store, learn, warmup_t: int, learn_from: int, t, keys, learner, *operands
):
    """One pure vectorised step -> (learner, buffer, env_state, ts, metrics).

    ``act(key, warm [] bool) -> action [N, A]`` with ``warm = t < warmup_t``;
    ``env_step(key, action) -> (ts [N], env_state)``; ``store`` and ``learn`` as in
    `store_and_learn`. ``keys = (k_act, k_env, k_update)``.
    """
    k_act, k_env, k_update = keys
    action = act(k_act, t < warmup_t)
    ts, env_state = env_step(k_env, action)
    step = store_and_learn(store, learn, learn_from, t, learner, action, ts, k_update, *operands)
    learner, buffer, metrics = step
    return learner, buffer, env_state, ts, metrics


def chunk_means(steps: dict, updates_per_step, xp=jnp, **extra) -> dict:
    """Chunk metrics from per-step ones stacked over the chunk's S steps (each [S]).

    reward / cost: means; episodes: total; episode_return / episode_cost: means over ended
    episodes (0 if none); ``extra`` as given; updates: steps that learned x
    ``updates_per_step``; learner metrics: means over the steps that learned (0 if none).
    ``xp``: ``jnp`` inside jit, ``np`` for host-side arrays.
    """
    m = dict(steps)
    updated = m.pop("updated")
    n_done, n_updated = xp.sum(m.pop("episodes")), xp.sum(updated)
    out = {
        "reward": xp.mean(m.pop("reward")),
        "cost": xp.mean(m.pop("cost")),
        "episodes": n_done,  # 0: the episode means below are 0 placeholders
        "episode_return": xp.sum(m.pop("episode_return")) / xp.maximum(n_done, 1),
        "episode_cost": xp.sum(m.pop("episode_cost")) / xp.maximum(n_done, 1),
        **extra,
        "updates": n_updated * updates_per_step,
    }
    learned = {k: xp.sum(v * updated) / xp.maximum(n_updated, 1) for k, v in m.items()}
    return {**out, **learned}


# --- episodes ----------------------------------------------------------------------------------


class EpisodeSums(NamedTuple):
    """Running return and cost of an episode, and whether it is still running (1.0 / 0.0)."""

    ret: Any  # [...] sum of rewards so far
    cost: Any  # [...] sum of costs so far
    alive: Any  # [...] 1.0 until the episode's first end, then 0.0

    @classmethod
    def start(cls, shape=(), dtype=jnp.float32, xp=jnp) -> EpisodeSums:
        """Zero sums, alive: float32 scalars by default; ``xp=np`` for host-side arrays."""
        return cls(xp.zeros(shape, dtype), xp.zeros(shape, dtype), xp.ones(shape, dtype))


def accumulate(sums: EpisodeSums, reward, cost, done) -> EpisodeSums:
    """Adds one step's reward and cost to the episodes still alive; ``done`` (bool) ends them.

    Elementwise on any shape, with JAX or NumPy arrays.
    """
    ret, total, alive = sums
    # AutoReset starts a new episode after done; alive masks its steps out
    return EpisodeSums(ret + alive * reward, total + alive * cost, alive * (1.0 - done))


def rollout(env, env_params, policy: Callable, key: jax.Array, n_steps: int, init=None):
    """Return and cost ([], []) of one episode of a jitted ``env`` from a fresh reset.

    ``policy(obs [O], t [] int32, carry) -> (action [A], carry)``; the carry starts at
    ``init(obs0)`` (None without ``init``). Keys: ``k_reset, k_steps = split(key)``, step
    keys ``split(k_steps, n_steps)``. Pure: vmap it over keys, parameters or users.
    """
    k_reset, k_steps = jax.random.split(key)
    obs0, state = env.reset(k_reset, env_params)

    def body(carry, xs):
        state, obs, sums, c = carry
        key, t = xs
        action, c = policy(obs, t, c)
        ts, state = env.step(key, state, action, env_params)
        sums = accumulate(sums, ts.reward, ts.cost, ts.terminated | ts.truncated)
        return (state, ts.obs, sums, c), None

    carry = (state, obs0, EpisodeSums.start(), None if init is None else init(obs0))
    xs = (jax.random.split(k_steps, n_steps), jnp.arange(n_steps))
    (_, _, sums, _), _ = jax.lax.scan(body, carry, xs)
    return sums.ret, sums.cost
