"""Theorem 4.2 (consistency of safety preferences) checked on a dataset.

Thm 4.2: with r_z = r_user(g_z) - K * cost and |r_user| <= m, a safe segment (no unsafe
step) scores >= -L m and an unsafe one <= L m - K, so for K > 2 L m every user prefers the
safe segment of every (safe, unsafe) pair. `consistency_check` measures m on the data, and
the fraction of (safe, unsafe) pairs on which all users prefer the safe one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from scpr_jax.data.labels import crowd_labels
from scpr_jax.data.segments import gather_segments
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task


class Consistency(NamedTuple):
    bound: float  # 2 * L * max |r_user| over data rows and users
    K: float
    k_exceeds_bound: bool
    n_safe_unsafe: int  # pairs where exactly one segment has an unsafe step
    consistent_fraction: float  # of those, share where every user prefers the safe segment


def consistency_check(
    trajs: Trajectories,
    pairs,
    task: Task,
    user_goals: jax.Array,
    K: float,
    segment_len: int,
) -> Consistency:
    """Thm 4.2 on data: the bound, whether K exceeds it, and the consistent fraction.

    pairs: a `PreferenceSets` or a tuple (starts1, starts2) of equal-shape start arrays.
    Labels are recomputed noise-free from the user goals (any noise in ``pairs`` is ignored).
    """
    starts1, starts2 = pairs if isinstance(pairs, tuple) else (pairs.starts1, pairs.starts2)
    user_goals = jnp.asarray(user_goals, jnp.float32)
    r_user = jax.vmap(jax.vmap(task.user_reward, in_axes=(0, None)), in_axes=(None, 0))(
        trajs.info, user_goals
    )
    bound = float(2 * segment_len * jnp.abs(r_user).max())
    unsafe1 = gather_segments(trajs.cost, starts1, segment_len).sum(-1) > 0
    unsafe2 = gather_segments(trajs.cost, starts2, segment_len).sum(-1) > 0
    mixed = unsafe1 != unsafe2
    y = crowd_labels(trajs, task, user_goals, jnp.float32(K), starts1, starts2, segment_len)
    safe_preferred = jnp.all(y == unsafe2.astype(jnp.float32), axis=0)  # y = 1 iff sigma1 safe
    n_mixed = int(mixed.sum())
    fraction = float((safe_preferred & mixed).sum() / n_mixed) if n_mixed else float("nan")
    return Consistency(bound, float(K), K > bound, n_mixed, fraction)
