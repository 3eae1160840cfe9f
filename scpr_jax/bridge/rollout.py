"""Evaluation rollouts on the real simulators: host-side twins of the jitted rollouts.

`evaluation.downstream_returns_fn` and `skills.evaluate.latent_returns` dispatch here for
``real:<task>`` names, with the same semantics as their JAX versions: every episode starts
from a reset (the downstream form draws a random downstream goal), its return is the sum of
the step rewards and its cost the number of unsafe steps until the episode ends (its first
termination or truncation). Episodes run in waves on a pool of at most `MAX_COPIES` simulator
copies, with one jitted policy call per step for the whole pool. Everything here steps host
simulators, so nothing is jittable or vmappable: `host_map` loops over a seed axis instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.acting import EpisodeSums, accumulate
from scpr_jax.bridge.registry import make
from scpr_jax.bridge.vec import BridgedEnv
from scpr_jax.envs.core import EnvParams
from scpr_jax.skill import skill_obs

MAX_COPIES = 16  # copies stepped together: Bullet costs ~0.5-1 ms per copy step on the host
# policy(episode index [N] int, obs [N, O]) -> action [N, A]
HostPolicy = Callable[[np.ndarray, jax.Array], jax.Array]


def pool_size(n_episodes: int, max_copies: int = MAX_COPIES) -> int:
    """Copies per wave: at most ``max_copies``, the waves as even as possible."""
    if n_episodes < 1 or max_copies < 1:
        raise ValueError(f"n_episodes={n_episodes} and max_copies={max_copies} must be >= 1")
    waves = -(-n_episodes // max_copies)
    return -(-n_episodes // waves)


def episode_returns(
    env: BridgedEnv, key: jax.Array, params: EnvParams, policy: HostPolicy, n_episodes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return and cost [n_episodes] of ``policy`` from fresh resets of ``env``'s copies.

    Episode e runs on copy e % N in wave e // N (N = env.n_envs); wave w resets every copy with
    ``k_reset, k_steps = split(fold_in(key, w))`` and steps with ``fold_in(k_steps, t)``. The
    policy sees each copy's episode index (copies past the last episode repeat it and are
    dropped). A wave stops once every copy has ended its first episode.
    """
    n = env.n_envs
    n_waves = -(-n_episodes // n)
    ret = np.zeros((n_waves, n), np.float64)
    cost = np.zeros((n_waves, n), np.float64)
    for w in range(n_waves):
        k_reset, k_steps = jax.random.split(jax.random.fold_in(key, w))
        episode = np.minimum(w * n + np.arange(n), n_episodes - 1)
        obs = env.reset(k_reset, params)
        sums = EpisodeSums.start((n,), np.float64, xp=np)  # summed in float64 on the host
        for t in range(int(params.max_steps)):
            ts = env.step(jax.random.fold_in(k_steps, t), policy(episode, obs), params)
            reward, c, done = jax.device_get((ts.reward, ts.cost, ts.terminated | ts.truncated))
            sums = accumulate(sums, reward, c, done)  # the rollouts' alive-masked sums
            if not sums.alive.any():
                break
            obs = ts.obs
        ret[w], cost[w] = sums.ret, sums.cost
    return ret.reshape(-1)[:n_episodes], cost.reshape(-1)[:n_episodes]


def downstream_returns_fn(
    task_name: str,
    n_episodes: int,
    act: Callable[[Any, jax.Array], jax.Array],
    max_steps: int | None = None,
    **task_kwargs,
) -> Callable[[jax.Array, Any], tuple[jax.Array, jax.Array]]:
    """Host ``f(key, params) -> (returns [n_episodes], costs [n_episodes])`` on ``real:<task>``.

    ``act(params, obs_full [O]) -> action [A]`` as in `evaluation.downstream_returns_fn`. The
    simulator pool is built once here and reused by every call of ``f``.
    """
    env = make(f"{task_name}/downstream", n_envs=pool_size(n_episodes), **task_kwargs)
    env_params = env.default_params(max_steps=max_steps)
    act_batch = jax.jit(jax.vmap(act, in_axes=(None, 0)))

    def f(key: jax.Array, params: Any) -> tuple[jax.Array, jax.Array]:
        policy = lambda _, obs: act_batch(params, obs)  # noqa: E731
        ret, cost = episode_returns(env, key, env_params, policy, n_episodes)
        return jnp.asarray(ret, jnp.float32), jnp.asarray(cost, jnp.float32)

    return f


def latent_returns(
    key: jax.Array,
    task_name: str,
    act: Callable[[jax.Array], jax.Array],
    latents: jax.Array,
    n_episodes: int,
    max_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`skills.evaluate.latent_returns` on ``real:<task>``: (return, cost) [n_latents, n_users].

    Entry (i, u) is the mean over ``n_episodes`` of the skill with latent i in user u's crowd
    environment; user u's episodes use ``fold_in(key, u)``.
    """
    latents = jnp.asarray(latents)
    n_latents = latents.shape[0]
    total = n_latents * n_episodes
    env = make(f"{task_name}/crowd", n_envs=pool_size(total))
    n_users = len(env.task.user_goals)

    @jax.jit
    def act_batch(episode, obs):
        return jax.vmap(lambda z, o: act(skill_obs(o, z)))(latents[episode // n_episodes], obs)

    ret = np.zeros((n_latents, n_users))
    cost = np.zeros((n_latents, n_users))
    try:
        for u in range(n_users):
            params = env.default_params(user=u, max_steps=max_steps)
            r, c = episode_returns(env, jax.random.fold_in(key, u), params, act_batch, total)
            ret[:, u] = r.reshape(n_latents, n_episodes).mean(-1)
            cost[:, u] = c.reshape(n_latents, n_episodes).mean(-1)
    finally:
        env.close()
    return ret, cost


def host_map(fn: Callable) -> Callable:
    """``jax.vmap(fn)`` for a host-side ``fn``: a loop over the leading axis of every
    argument leaf, outputs stacked on a new leading axis."""

    def mapped(*args):
        n = jax.tree.leaves(args)[0].shape[0]
        outs = [fn(*jax.tree.map(lambda x, i=i: x[i], args)) for i in range(n)]
        return jax.tree.map(lambda *x: jnp.stack(x), *outs)

    return mapped
