"""Functional safe-environment API: `TimeStep`, `EnvParams`, `Task` and `SafeEnv`.

A `Task` holds the physics and the paper's reward/cost rules of one environment. `SafeEnv`
turns a task into a functional environment in one of two *forms*:

- ``crowd``: the goal is the crowd user's goal ``params.goals[params.user]``; the goal is not
  observed; the reward is that user's r_user (cost is NOT subtracted: the user's full reward
  is ``reward - K * cost``, with K applied at labelling time).
- ``downstream``: every reset draws a goal uniformly from ``params.goals`` (the downstream goal
  set); the reward is r_new (never includes cost). The goal enters the observation through
  the `AddGoal` wrapper (see `registry.make`).

Contract (gymnax-style, every function pure and jittable/vmappable)::

    obs, state = env.reset(key, params)
    timestep, state = env.step(key, state, action, params)

`timestep.info` carries what is needed to recompute any user's reward for a stored
transition (`Task.reward(info, goal)`), so labelling never re-simulates.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

FORMS = ("crowd", "downstream")


@struct.dataclass
class TimeStep:
    """What the agent sees after one step; ``cost`` is a first-class 0/1 field."""

    obs: jax.Array  # [obs_size]
    reward: jax.Array  # []
    cost: jax.Array  # [] 1.0 on an unsafe step, else 0.0
    terminated: jax.Array  # [] bool: true terminal state (bootstrap with 0)
    truncated: jax.Array  # [] bool: time limit reached (bootstrap from final_obs)
    info: dict[str, jax.Array]


@struct.dataclass
class EnvParams:
    """Dynamic environment settings (pytree leaves, so a sweep can vmap over them)."""

    goals: jax.Array  # [n_goals, goal_size] user goals (crowd) or downstream goal set
    user: jax.Array  # [] int32 crowd user index (ignored by the downstream form)
    max_steps: jax.Array  # [] int32 episode length (truncation)
    resample_prob: jax.Array  # [] prob. of redrawing the goal at max_steps // 2 (downstream)


@struct.dataclass
class EnvState:
    """State of a `SafeEnv`: task physics, active goal, and time step."""

    phys: Any  # task-specific physics state pytree
    goal: jax.Array  # [goal_size]
    t: jax.Array  # [] int32 steps taken in this episode


@dataclass(frozen=True)
class PaperSettings:
    """The paper's per-task hyperparameters (PAPER.md 3-6), declared by each task.

    Stages read them through the config builders (`config.pipeline_config`), so a new task
    states its own values here instead of in tables of other packages.
    """

    bc_alpha: tuple[float, float]  # TD3+BC's bc_alpha: (skill methods, env-action baselines)
    td3bc_steps: int = 1_000_000  # offline high-level updates (paper preset)
    online_steps: int = 500_000  # online TD3 environment steps (paper preset)
    iql_steps: int = 1_000_000  # Safe-VPL skill updates (paper preset)
    iql_expectile: float = 0.75  # IQL's V expectile
    cpl_lambda: float = 0.5  # CPL's weight on the non-preferred segment
    n_users: int = 2  # the paper's crowd size
    n_pairs: int = 16  # segment pairs per preference set
    segment_len: int | None = None  # steps per segment; None: 64 (paper) / 32 (small preset)
    distinct_users: bool = False  # other crowd sizes keep the first n paper users (no spreading)


@dataclass(frozen=True)
class RealSim:
    """The task's real-simulator variant (`scpr_jax.bridge`): a Bullet-Safety-Gym ("ball") or
    Safety-Gymnasium ("velocity") environment id plus how it maps to the JAX task."""

    kind: str  # "ball" or "velocity" (`bridge.sims.SIM_KINDS`)
    sim_id: str  # gymnasium id
    options: dict = field(default_factory=dict)  # kind-specific (observation slice, module, ...)


class Task(abc.ABC):
    """Physics plus the paper's user reward and cost rule of one environment.

    Subclasses set the class attributes and implement the pure methods below. Methods take
    and return single (unbatched) examples.
    """

    name: str
    obs_size: int  # base observation size (no goal)
    action_size: int
    goal_size: int  # size of one goal vector
    goal_obs_size: int  # size of the goal features appended in the downstream form
    max_steps: int  # default episode length
    user_goals: np.ndarray  # [n_users, goal_size] the paper's crowd users
    downstream_goals: np.ndarray  # [n_goals, goal_size] the paper's downstream goal set
    crowd_offset: float = 0.0  # constant added to r_user in crowd environments only
    paper: PaperSettings  # the paper's hyperparameters for this task
    real: RealSim | None = None  # its real-simulator variant, if any

    @abc.abstractmethod
    def init(self, key: jax.Array) -> Any:
        """Draw an initial physics state."""

    @abc.abstractmethod
    def transition(self, key: jax.Array, phys: Any, action: jax.Array) -> tuple[Any, dict]:
        """Advance the physics one control step; returns (phys, info for relabelling)."""

    @abc.abstractmethod
    def observe(self, phys: Any) -> jax.Array:
        """Base observation [obs_size] (goal-free)."""

    @abc.abstractmethod
    def goal_features(self, goal: jax.Array, phys: Any) -> jax.Array:
        """Goal encoding appended to the observation in the downstream form [goal_obs_size]."""

    @abc.abstractmethod
    def reward(self, info: dict, goal: jax.Array) -> jax.Array:
        """Task reward r(s, a; goal) without cost, computed from a transition's info []."""

    @abc.abstractmethod
    def cost(self, phys: Any) -> jax.Array:
        """Per-step cost indicator of a physics state: 1.0 if unsafe else 0.0 []."""

    def terminated(self, phys: Any, goal: jax.Array) -> jax.Array:
        """Whether ``phys`` is terminal under ``goal`` (default: never) []."""
        del phys, goal
        return jnp.asarray(False)

    def user_reward(self, info: dict, goal: jax.Array) -> jax.Array:
        """Crowd user's r_user for a stored transition (reward plus the crowd offset) []."""
        return self.reward(info, goal) + self.crowd_offset


class SafeEnv:
    """A `Task` as a functional environment in the ``crowd`` or ``downstream`` form.

    No auto-reset here: wrap with `wrappers.AutoReset` (as `registry.make` does).
    """

    def __init__(self, task: Task, form: str):
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; valid forms: {', '.join(FORMS)}")
        self.task = task
        self.form = form

    @property
    def name(self) -> str:
        return f"{self.task.name}/{self.form}"

    @property
    def obs_size(self) -> int:
        return self.task.obs_size

    @property
    def action_size(self) -> int:
        return self.task.action_size

    def default_params(self, user: int = 0, max_steps: int | None = None) -> EnvParams:
        """The paper's goal set for this form; ``user`` selects the crowd user."""
        goals = self.task.user_goals if self.form == "crowd" else self.task.downstream_goals
        if not 0 <= user < len(self.task.user_goals):
            raise ValueError(
                f"user={user} out of range; {self.task.name} has "
                f"{len(self.task.user_goals)} crowd users (0..{len(self.task.user_goals) - 1})"
            )
        max_steps = self.task.max_steps if max_steps is None else max_steps
        if max_steps < 2:
            raise ValueError(f"max_steps={max_steps} must be >= 2")
        return EnvParams(
            goals=jnp.asarray(goals, jnp.float32),
            user=jnp.asarray(user, jnp.int32),
            max_steps=jnp.asarray(max_steps, jnp.int32),
            resample_prob=jnp.asarray(0.0, jnp.float32),
        )

    def _draw_goal(self, key: jax.Array, params: EnvParams) -> jax.Array:
        if self.form == "crowd":
            return params.goals[params.user]
        return params.goals[jax.random.randint(key, (), 0, params.goals.shape[0])]

    def reset(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        """Fresh episode; returns (obs [obs_size], state)."""
        k_phys, k_goal = jax.random.split(key)
        state = EnvState(
            phys=self.task.init(k_phys),
            goal=self._draw_goal(k_goal, params),
            t=jnp.asarray(0, jnp.int32),
        )
        return self.task.observe(state.phys), state

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ) -> tuple[TimeStep, EnvState]:
        """One control step; actions are clipped to [-1, 1]."""
        k_phys, k_goal, k_coin = jax.random.split(key, 3)
        action = jnp.clip(action, -1.0, 1.0)
        phys, info = self.task.transition(k_phys, state.phys, action)
        reward = self.task.reward(info, state.goal)
        if self.form == "crowd":
            reward = reward + self.task.crowd_offset
        t = state.t + 1
        terminated = self.task.terminated(phys, state.goal)
        truncated = jnp.logical_and(t >= params.max_steps, jnp.logical_not(terminated))
        goal = state.goal
        if self.form == "downstream":
            # mid-episode goal switch: more overlap between the tasks in the offline data
            switch = (t == params.max_steps // 2) & (
                jax.random.uniform(k_coin) < params.resample_prob
            )
            goal = jnp.where(switch, self._draw_goal(k_goal, params), goal)
        info = {**info, "goal": state.goal}
        new_state = EnvState(phys=phys, goal=goal, t=t)
        timestep = TimeStep(
            obs=self.task.observe(phys),
            reward=reward.astype(jnp.float32),
            cost=self.task.cost(phys).astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
            info=info,
        )
        return timestep, new_state
