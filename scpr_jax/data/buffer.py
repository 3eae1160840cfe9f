"""D_tau's replay buffer and its SAC learner: pieces of both collectors (PAPER.md 3.1).

The JAX collector (`data.collect`) and the host collector of the real simulators
(`data.host_collect`) share everything but where the environment steps: the schedule in
vectorised steps, the [T, n_envs] buffer rows, the SAC act / store / learn of the acting core
(`scpr_jax.acting`), the stream-major dataset and its summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.acting import scan_updates
from scpr_jax.agents.sac import SACState, Transition, sac_update, sample_action
from scpr_jax.data.types import Trajectories


def schedule(config) -> tuple[int, int, int]:
    """(T, warmup_t, switch_t) in vectorised steps."""
    n_steps = int(config.total_steps) // int(config.n_envs)
    warmup_t = -(-int(config.warmup_steps) // int(config.n_envs))
    return n_steps, warmup_t, int(round(float(config.penalty_switch) * n_steps))


def _relabel_info(info: dict) -> dict:
    """Drops the episode statistics and final_obs: the rest recomputes any user's reward."""
    return {k: v for k, v in info.items() if not k.startswith("episode_") and k != "final_obs"}


def row(obs, action, ts, n_streams: int) -> Trajectories:
    """One stored transition: next_obs is the episode's final obs when the step ends it."""
    return Trajectories(
        obs=obs,
        action=action,
        reward=ts.reward,
        cost=ts.cost,
        next_obs=ts.info["final_obs"],
        terminated=ts.terminated,
        truncated=ts.truncated,
        info=_relabel_info(ts.info),
        n_streams=n_streams,
    )


def empty_buffer(obs, action, ts, n_steps: int) -> Trajectories:
    """Zeros [n_steps, n_envs, ...] shaped like the transitions of one vectorised step
    (arrays or ``jax.ShapeDtypeStruct``s)."""
    rows = jax.eval_shape(lambda o, a, s: row(o, a, s, obs.shape[0]), obs, action, ts)
    return jax.tree.map(lambda s: jnp.zeros((n_steps, *s.shape), s.dtype), rows)


def sample_batch(
    buffer: Trajectories, filled: jax.Array, penalty: jax.Array, key: jax.Array, size: int
) -> Transition:
    """Uniform minibatch from the first ``filled`` rows, reward r_new - penalty * cost; [size]."""
    k_t, k_env = jax.random.split(key)
    i = jax.random.randint(k_t, (size,), 0, filled)
    j = jax.random.randint(k_env, (size,), 0, buffer.reward.shape[1])
    return Transition(
        obs=buffer.obs[i, j],
        action=buffer.action[i, j],
        reward=buffer.reward[i, j] - penalty * buffer.cost[i, j],
        next_obs=buffer.next_obs[i, j],
        terminated=buffer.terminated[i, j].astype(jnp.float32),
    )


def sac_act(sac: SACState, obs: jax.Array, key: jax.Array, warm: jax.Array) -> jax.Array:
    """Behaviour action [N, A] at obs [N, O]: uniform in [-1, 1] if ``warm``, else SAC's sample."""
    k_pi, k_rand = jax.random.split(key)
    a_pi, _ = sample_action(sac.actor_params, sac, obs, k_pi)
    a_rand = jax.random.uniform(k_rand, a_pi.shape, minval=-1.0, maxval=1.0)
    return jnp.where(warm, a_rand, a_pi)


class SACLearner(NamedTuple):
    """SAC's store and learn for the acting core (`acting.store_and_learn`), and its schedule."""

    store: Callable  # store(buffer, t, obs, action, ts) -> (buffer, filled = t + 1): row t
    learn: Callable  # learn(sac, buffer, filled, penalty, key) -> (sac, mean metrics)
    warmup_t: int  # steps t < warmup_t act uniformly at random
    learn_from: int  # warmup_t - 1: the step completing the warm-up already learns
    switch_t: int  # the cost penalty applies from this step on

    def penalty(self, t: jax.Array, cost_penalty: jax.Array) -> jax.Array:
        """The penalty K in force at step t (0 before ``switch_t``).  [] -> []."""
        return jnp.where(t >= self.switch_t, cost_penalty, 0.0)


def sac_learner(config) -> SACLearner:
    """`SACLearner` of a collector config: row t of the [T, n_envs] buffer, then
    ``updates_per_step`` SAC updates on rows < filled, rewards relabelled by the penalty."""
    n_envs, updates = int(config.n_envs), int(config.updates_per_step)
    batch_size = int(config.batch_size)
    _, warmup_t, switch_t = schedule(config)

    def store(buffer, t, obs, action, ts):
        buffer = jax.tree.map(lambda b, x: b.at[t].set(x), buffer, row(obs, action, ts, n_envs))
        return buffer, t + 1

    def learn(sac, buffer, filled, penalty, key):
        def one(sac, key):
            k_batch, k_update = jax.random.split(key)
            batch = sample_batch(buffer, filled, penalty, k_batch, batch_size)
            return sac_update(sac, batch, k_update)

        return scan_updates(one, sac, key, updates)

    return SACLearner(store, learn, warmup_t, warmup_t - 1, switch_t)


def stream_major(buffer: Trajectories) -> Trajectories:
    """[T, n_envs, ...] -> [n_envs * T, ...]: rows s*T .. (s+1)*T - 1 are stream s."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), buffer)


def distinct_buffers(tree):
    """``tree`` with every leaf in its own buffer: donation rejects a buffer passed twice, and
    an eager reset may return one array in two places (Brax Swimmer's obs and state)."""
    return jax.tree.map(jnp.copy, tree)


def _goal_index(goal: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Index of each row's goal in the goal set; goal [N, goal_size] -> [N] int."""
    unique, inverse = np.unique(goal, axis=0, return_inverse=True)
    nearest = np.argmin(((unique[:, None, :] - goals[None]) ** 2).sum(-1), axis=1)
    return nearest[inverse.reshape(-1)]


def summarize(traj: Trajectories, goals: np.ndarray, switch_t: int) -> dict:
    """Dataset statistics: sizes, unsafe (cost) fractions overall / per half / per goal index,
    and mean return (of r_new) and cost of the episodes ending in each half."""
    n_streams = traj.n_streams
    cost = np.asarray(traj.cost, np.float64).reshape(n_streams, -1)  # [S, T]
    reward = np.asarray(traj.reward, np.float64).reshape(n_streams, -1)
    done = np.asarray(traj.terminated | traj.truncated).reshape(n_streams, -1)
    second = np.broadcast_to(np.arange(cost.shape[1]) >= switch_t, cost.shape)
    goal = _goal_index(np.asarray(traj.info["goal"]), np.asarray(goals)).reshape(cost.shape)

    # episode k of stream s is the rows after its (k-1)-th end up to and including its k-th end
    episode = np.cumsum(done, axis=1) - done
    complete = episode < done.sum(axis=1, keepdims=True)
    offset = np.concatenate([[0], np.cumsum(done.sum(axis=1))[:-1]])[:, None]
    gid = (episode + offset)[complete]
    n_episodes = int(done.sum())
    ep_return = np.bincount(gid, weights=reward[complete], minlength=n_episodes)
    ep_cost = np.bincount(gid, weights=cost[complete], minlength=n_episodes)
    ep_second = second[done]  # done rows in (stream, t) order = episode order

    def by_goal(mask):
        count = np.bincount(goal[mask], minlength=len(goals))
        unsafe = np.bincount(goal[mask], weights=cost[mask], minlength=len(goals))
        return [float(u / c) if c else float("nan") for u, c in zip(unsafe, count, strict=True)]

    def mean(x):
        return float(np.mean(x)) if x.size else float("nan")

    summary = {
        "transitions": int(cost.size),
        "episodes": n_episodes,
        "unsafe_fraction": mean(cost),
        "unsafe_fraction_by_goal": by_goal(np.ones_like(second)),
        "goals": np.asarray(goals).tolist(),
    }
    for half, mask, ep_mask in (("first", ~second, ~ep_second), ("second", second, ep_second)):
        summary[f"unsafe_fraction_{half}_half"] = mean(cost[mask])
        summary[f"unsafe_fraction_by_goal_{half}_half"] = by_goal(mask)
        summary[f"episode_return_{half}_half"] = mean(ep_return[ep_mask])
        summary[f"episode_cost_{half}_half"] = mean(ep_cost[ep_mask])
        summary[f"unsafe_episode_fraction_{half}_half"] = mean(ep_cost[ep_mask] > 0)
    return summary
