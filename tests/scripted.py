"""Cheap scripted rollouts into a `Trajectories` (for tests and quick experiments).

The default D_tau comes from the goal-conditioned SAC collector (`scpr_jax.data.collect`);
this module only rolls out a fixed random policy, so it needs no training and compiles in
seconds. The whole rollout is one jitted `lax.scan` over `vmap`-ed environments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make

POLICIES = ("random", "sticky", "zero")
STICKY_KEEP = 0.95  # "sticky": probability of repeating the previous action (diverse speeds)
DROPPED_INFO = ("final_obs", "episode_return", "episode_cost", "episode_length", "episode_done")


def relabel_info(info: dict) -> dict:
    """The relabelling fields of a `TimeStep.info`: drops episode statistics and final_obs."""
    return {k: v for k, v in info.items() if k not in DROPPED_INFO}


def _act(policy: str, key: jax.Array, prev_action: jax.Array) -> jax.Array:
    k_coin, k_new = jax.random.split(key)
    fresh = jax.random.uniform(k_new, prev_action.shape, minval=-1.0, maxval=1.0)
    if policy == "random":
        return fresh
    if policy == "zero":
        return jnp.zeros_like(prev_action)
    keep = jax.random.uniform(k_coin) < STICKY_KEEP
    return jnp.where(keep, prev_action, fresh)


@functools.lru_cache(maxsize=16)
def _rollout_fn(env_name: str, n_envs: int, n_steps: int, policy: str):
    """Jitted rollout for one static setting (cached so repeated calls do not recompile)."""
    env = make(env_name)

    def one_env_step(carry, key, params):
        state, obs, prev_action = carry
        k_act, k_env = jax.random.split(key)
        action = _act(policy, k_act, prev_action)
        ts, state = env.step(k_env, state, action, params)
        row = (
            obs,
            action,
            ts.reward,
            ts.cost,
            ts.info["final_obs"],
            ts.terminated,
            ts.truncated,
            relabel_info(ts.info),
        )
        return (state, ts.obs, action), row

    def rollout(key, params):
        k_reset, k_first, k_steps = jax.random.split(key, 3)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(
            jax.random.split(k_reset, n_envs), params
        )
        first = jax.random.uniform(k_first, (n_envs, env.action_size), minval=-1.0, maxval=1.0)
        step = jax.vmap(one_env_step, in_axes=(0, 0, None))

        def scan_step(carry, key):
            return step(carry, jax.random.split(key, n_envs), params)

        _, rows = jax.lax.scan(scan_step, (state, obs, first), jax.random.split(k_steps, n_steps))
        # [T, E, ...] -> stream-major [E * T, ...]
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), rows)

    return env, jax.jit(rollout)


def scripted_trajectories(
    key: jax.Array,
    env_name: str,
    n_envs: int,
    n_steps: int,
    policy: str = "random",
    resample_prob: float = 0.5,
) -> Trajectories:
    """Rolls out a scripted policy in ``n_envs`` parallel streams for ``n_steps`` steps each.

    Policies: ``random`` (uniform in [-1, 1] every step), ``sticky`` (repeats the previous
    action with probability 0.95, else draws a fresh uniform one), ``zero``.
    ``resample_prob`` is the mid-episode goal switch of the downstream form (paper: 0.5).
    Returns ``n_envs * n_steps`` stream-major rows.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    if n_envs < 1 or n_steps < 1:
        raise ValueError(f"n_envs={n_envs} and n_steps={n_steps} must both be >= 1")
    env, rollout = _rollout_fn(env_name, n_envs, n_steps, policy)
    params = env.default_params().replace(resample_prob=jnp.asarray(resample_prob, jnp.float32))
    obs, action, reward, cost, next_obs, terminated, truncated, info = rollout(key, params)
    return Trajectories(
        obs=obs,
        action=action,
        reward=reward,
        cost=cost,
        next_obs=next_obs,
        terminated=terminated,
        truncated=truncated,
        info=info,
        n_streams=n_envs,
    )
