"""Simulated crowd labels (PAPER.md 3.2): crowd goals, per-user scores, noise, annotation.

User z's full per-step reward is r_z(s, a) = r_user(s, a; g_z) - K * cost(s, a) (PAPER.md 2).
A segment's score is either its partial return R_z(sigma) = sum_t r_z,t, or (regret labels)
the advantage A_z(sigma) = V_z(s_L) - V_z(s_0) + sum_t r_z,t with gamma = 1. The label is
y = 1[score(sigma1) > score(sigma2)] (ties give 0). Functions here label one user; the crowd
is a `vmap` over users in `crowd_labels`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.data.segments import gather_segments
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task, strip_goal

ValueFn = Callable[[jax.Array, jax.Array], jax.Array]  # (user [], obs [obs_size]) -> V []


def crowd_goals(task: Task, n_users: int) -> np.ndarray:
    """Goals of a crowd of ``n_users`` users [n_users, goal_size].

    With the paper's number of users these are the paper's users. Otherwise (our rule, the
    paper gives none): speed goals (goal_size 1) are evenly spaced between the paper's two
    extreme speeds (one user: the lowest); direction goals are n unit vectors at angles
    2 pi k / n; Ball-Reach takes the first n of its 4 corners (n <= 4); HalfCheetah can only
    run forward or backward (n <= 2; one user: forward).
    """
    paper = np.asarray(task.user_goals, np.float32)
    if n_users < 1:
        raise ValueError(f"n_users={n_users} must be >= 1")
    if n_users == len(paper):
        return paper
    settings = getattr(task, "paper", None)  # a task's PaperSettings (duck-typed: none)
    if settings is not None and settings.distinct_users:  # Reach corners, Cheetah directions
        if n_users > len(paper):
            raise ValueError(
                f"n_users={n_users}: {task.name} has only {len(paper)} distinct user goals"
            )
        return paper[:n_users]
    if task.goal_size == 1:
        lo, hi = paper[:, 0].min(), paper[:, 0].max()
        return np.linspace(lo, hi, n_users, dtype=np.float32)[:, None]
    angles = 2 * np.pi * np.arange(n_users) / n_users
    return np.stack([np.cos(angles), np.sin(angles)], -1).astype(np.float32)


def user_rewards(trajs: Trajectories, task: Task, goal: jax.Array, K: jax.Array) -> jax.Array:
    """Per-row reward of one user, r_user(info; goal) - K * cost [N]."""
    r_user = jax.vmap(task.user_reward, in_axes=(0, None))(trajs.info, goal)
    return r_user - K * trajs.cost


def segment_scores(
    trajs: Trajectories,
    task: Task,
    r: jax.Array,
    starts: jax.Array,
    segment_len: int,
    value_fn: ValueFn | None = None,
    user: jax.Array | int = 0,
) -> jax.Array:
    """Partial return (or advantage, with ``value_fn``) of segments of one user [...].

    r: [N] the user's per-row reward; starts: [...] segment starts. The advantage bootstraps
    V_z(s_L) from ``next_obs`` of the last step, with V = 0 after a terminal step.
    """
    score = gather_segments(r, starts, segment_len).sum(-1)
    if value_fn is None:
        return score
    last = starts + segment_len - 1
    s_0 = strip_goal(trajs.obs[starts], task)
    s_L = strip_goal(trajs.next_obs[last], task)
    v = jax.vmap(value_fn, in_axes=(None, 0))
    v_0 = v(user, s_0.reshape(-1, s_0.shape[-1])).reshape(starts.shape)
    v_L = v(user, s_L.reshape(-1, s_L.shape[-1])).reshape(starts.shape)
    return score + jnp.where(trajs.terminated[last], 0.0, v_L) - v_0


def user_labels(
    trajs: Trajectories,
    task: Task,
    goal: jax.Array,
    K: jax.Array,
    starts1: jax.Array,
    starts2: jax.Array,
    segment_len: int,
    value_fn: ValueFn | None = None,
    user: jax.Array | int = 0,
) -> jax.Array:
    """Labels y = 1[score(sigma1) > score(sigma2)] of one user, float32 [...] (starts' shape)."""
    r = user_rewards(trajs, task, goal, K)
    score1 = segment_scores(trajs, task, r, starts1, segment_len, value_fn, user)
    score2 = segment_scores(trajs, task, r, starts2, segment_len, value_fn, user)
    return (score1 > score2).astype(jnp.float32)


@partial(jax.jit, static_argnames=("task", "segment_len", "value_fn"))
def crowd_labels(
    trajs: Trajectories,
    task: Task,
    user_goals: jax.Array,
    K: jax.Array,
    starts1: jax.Array,
    starts2: jax.Array,
    segment_len: int,
    value_fn: ValueFn | None = None,
) -> jax.Array:
    """Dense labels of every user on every pair: `user_labels` vmapped over users.

    user_goals: [n_users, goal_size]; starts: [n_sets, n_pairs]. Returns
    [n_users, n_sets, n_pairs] float32.
    """

    def label(user, goal):
        return user_labels(trajs, task, goal, K, starts1, starts2, segment_len, value_fn, user)

    return jax.vmap(label)(jnp.arange(user_goals.shape[0]), user_goals)


@jax.jit
def flip_labels(key: jax.Array, y: jax.Array, flip_ratio: jax.Array) -> jax.Array:
    """Flips every label independently with probability ``flip_ratio`` [...]."""
    flip = jax.random.uniform(key, y.shape) < flip_ratio
    return jnp.where(flip, 1.0 - y, y)


@partial(jax.jit, static_argnames=("n_users", "n_sets", "minority_ratio"))
def annotation_mask(key: jax.Array, n_users: int, n_sets: int, minority_ratio: float) -> jax.Array:
    """Which user annotates which set [n_users, n_sets] bool.

    User 0 (the majority) annotates every set; every other user annotates exactly
    round(minority_ratio * n_sets) sets drawn without replacement.
    """
    if not 0.0 < minority_ratio <= 1.0:
        raise ValueError(f"minority_ratio={minority_ratio} must be in (0, 1]")
    n_minority = round(minority_ratio * n_sets)

    def user_mask(k):
        chosen = jax.lax.top_k(jax.random.uniform(k, (n_sets,)), n_minority)[1]
        return jnp.zeros(n_sets, bool).at[chosen].set(True)

    mask = jax.vmap(user_mask)(jax.random.split(key, n_users))
    return mask.at[0].set(True)
