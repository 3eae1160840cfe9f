"""Containers for offline trajectories D_tau."""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Trajectories:
    """Time-ordered transitions of D_tau, stream-major: rows [s * T, (s + 1) * T) are the
    T consecutive steps of parallel environment stream s (`n_streams` streams).

    Observations keep the downstream goal (last ``task.goal_obs_size`` values); strip it with
    `scpr_jax.envs.strip_goal` for skill training. An episode ends at a row where
    ``terminated | truncated``; the next row of the same stream starts a new episode.
    """

    obs: jax.Array  # [N, obs_size] observation (with goal) before the step
    action: jax.Array  # [N, action_size]
    reward: jax.Array  # [N] r_new of the downstream goal active at that step (no cost)
    cost: jax.Array  # [N] 0/1 cost indicator
    next_obs: jax.Array  # [N, obs_size] observation after the step (final obs at episode end)
    terminated: jax.Array  # [N] bool
    truncated: jax.Array  # [N] bool
    info: dict[str, jax.Array]  # relabelling quantities, each [N, ...]; includes "goal"
    n_streams: int = struct.field(pytree_node=False, default=1)

    @property
    def size(self) -> int:
        return self.reward.shape[0]
