"""Functional wrappers: goal in/out of the observation, episode statistics, auto-reset.

Every wrapper keeps the `SafeEnv` contract (``reset(key, params)``, ``step(key, state,
action, params)``) and exposes the same attributes. The usual stack, built by
`registry.make`, is ``AutoReset(EpisodeStats(AddGoal(SafeEnv)))`` (AddGoal only for the
downstream form); AutoReset must be outermost so ``info["final_obs"]`` is the true last
observation of the episode.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from scpr_jax.envs.core import EnvParams, EnvState, SafeEnv, TimeStep


class Wrapper:
    """Base class: forwards the environment's attributes (explicitly, no proxies)."""

    def __init__(self, env: Any):
        self.env = env

    @property
    def task(self):
        return self.env.task

    @property
    def form(self) -> str:
        return self.env.form

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def obs_size(self) -> int:
        return self.env.obs_size

    @property
    def action_size(self) -> int:
        return self.env.action_size

    def default_params(self, user: int = 0, max_steps: int | None = None) -> EnvParams:
        return self.env.default_params(user=user, max_steps=max_steps)

    def reset(self, key, params):
        return self.env.reset(key, params)

    def step(self, key, state, action, params):
        return self.env.step(key, state, action, params)


class AddGoal(Wrapper):
    """Appends the task's goal features to the observation: obs -> [obs, g(goal, s)]."""

    def __init__(self, env: SafeEnv):
        if not isinstance(env, SafeEnv):
            raise TypeError("AddGoal must wrap a SafeEnv directly (it reads its goal)")
        super().__init__(env)

    @property
    def obs_size(self) -> int:
        return self.env.obs_size + self.task.goal_obs_size

    def _with_goal(self, obs: jax.Array, state: EnvState) -> jax.Array:
        return jnp.concatenate([obs, self.task.goal_features(state.goal, state.phys)])

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        return self._with_goal(obs, state), state

    def step(self, key, state, action, params):
        ts, state = self.env.step(key, state, action, params)
        return ts.replace(obs=self._with_goal(ts.obs, state)), state


def strip_goal(obs: jax.Array, task) -> jax.Array:
    """Removes the goal features from downstream observations [..., obs_size]."""
    return obs[..., : task.obs_size]


class DropGoal(Wrapper):
    """Removes the goal features from a downstream environment's observations.

    Lets a goal-free policy (a low-level skill) act in the downstream form. Also strips
    ``info["final_obs"]`` when present, so it may wrap an `AutoReset` stack.
    """

    @property
    def obs_size(self) -> int:
        return self.task.obs_size

    def reset(self, key, params):
        obs, state = self.env.reset(key, params)
        return strip_goal(obs, self.task), state

    def step(self, key, state, action, params):
        ts, state = self.env.step(key, state, action, params)
        info = dict(ts.info)
        if "final_obs" in info:
            info["final_obs"] = strip_goal(info["final_obs"], self.task)
        return ts.replace(obs=strip_goal(ts.obs, self.task), info=info), state


@struct.dataclass
class StatsState:
    """Inner state plus running sums of the current episode."""

    inner: Any
    episode_return: jax.Array  # [] sum of rewards so far
    episode_cost: jax.Array  # [] sum of cost indicators so far
    episode_length: jax.Array  # [] int32 steps so far


class EpisodeStats(Wrapper):
    """Tracks return, cost and length; reports them in ``info`` on every step.

    ``info["episode_return"]`` etc. hold the running totals including this step; when
    ``info["episode_done"]`` is true they are the finished episode's statistics.
    """

    def reset(self, key, params):
        obs, inner = self.env.reset(key, params)
        zero = jnp.asarray(0.0, jnp.float32)
        return obs, StatsState(inner, zero, zero, jnp.asarray(0, jnp.int32))

    def step(self, key, state, action, params):
        ts, inner = self.env.step(key, state.inner, action, params)
        new = StatsState(
            inner=inner,
            episode_return=state.episode_return + ts.reward,
            episode_cost=state.episode_cost + ts.cost,
            episode_length=state.episode_length + 1,
        )
        info = {
            **ts.info,
            "episode_return": new.episode_return,
            "episode_cost": new.episode_cost,
            "episode_length": new.episode_length,
            "episode_done": jnp.logical_or(ts.terminated, ts.truncated),
        }
        return ts.replace(info=info), new


class AutoReset(Wrapper):
    """Resets to a fresh random state when an episode ends.

    On the last step of an episode ``timestep.obs`` is the first observation of the next
    episode and ``info["final_obs"]`` the last observation of the finished one (on other
    steps ``final_obs`` equals ``obs``). ``terminated``/``truncated`` describe the finished
    step, so bootstrapping uses ``final_obs``.
    """

    def step(self, key, state, action, params) -> tuple[TimeStep, Any]:
        k_step, k_reset = jax.random.split(key)
        ts, state = self.env.step(k_step, state, action, params)
        done = jnp.logical_or(ts.terminated, ts.truncated)
        obs_reset, state_reset = self.env.reset(k_reset, params)
        state = jax.tree.map(lambda r, s: jnp.where(done, r, s), state_reset, state)
        obs = jnp.where(done, obs_reset, ts.obs)
        return ts.replace(obs=obs, info={**ts.info, "final_obs": ts.obs}), state
