"""One real simulator per task: build it, reset it from our keys, read what our rules need.

A `Sim` adapts one Gymnasium simulator to one of our `Task`s (PAPER.md 4); `BridgedEnv`
runs N copies of it and applies the task's own reward / cost / goal rules. Host-side code:
NumPy in, NumPy out, one simulator copy per call.

- Ball tasks (Bullet-Safety-Gym, ``gymnasium.make(<id>, ...).unwrapped``, no time limit:
  the bridge counts steps). A reset runs the simulator's reset, then places the ball (and
  Reach's 8 puddles) at the initial state our `Task.init` drew from a JAX key, at rest with
  identity orientation, so starts follow the same distribution as the JAX-native task and
  are reproducible from our keys (the simulator's own global-RNG draws are overwritten).
  Run: the simulator's Plane200 world; the |y| <= 0.5 corridor is our cost rule (the drawn
  boundary lines stay at |y| = 2) and x is dropped from the observation. Circle: Octagon
  world. Reach: SmallRoom with 8 static puddles and no moving box; the simulator's own goal
  zone and its 2 goal features are ignored (our goal corners replace them).
- Velocity tasks (Safety-Gymnasium ``Safety*Velocity-v1``, Gymnasium MuJoCo v4 robots). A
  reset passes an integer seed drawn from the key to ``env.reset(seed=...)``. Planar
  velocity, healthy reward and control cost come from the simulator's ``info``.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.bridge import compat
from scpr_jax.envs.ball import BallState
from scpr_jax.envs.ball_reach import ReachState
from scpr_jax.envs.core import Task

BALL_Z = 0.5  # the ball's resting height (radius) in Bullet-Safety-Gym


@dataclass
class Step:
    """What one simulator step gives the bridge (unbatched NumPy values)."""

    base_obs: np.ndarray  # [obs_size] goal-free observation of our task
    phys: dict  # arrays from which `Sim.to_phys` builds the task's physics pytree
    info: dict  # relabelling fields of the task (`Task.reward` reads them)
    terminated: bool  # the simulator's own termination
    sim_reward: float  # the simulator's native reward (for reference, never used)
    sim_cost: float  # the simulator's native cost (for reference, never used)


class Sim(abc.ABC):
    """Adapter interface; subclasses implement one family of simulators."""

    sim_id: str  # the simulator's registered environment id
    task_terminates: bool  # whether `Task.terminated` applies (else only the simulator's)

    def __init__(self, task: Task):
        self.task = task

    @abc.abstractmethod
    def build(self) -> Any:
        """A new simulator instance (one copy)."""

    @abc.abstractmethod
    def draw(self, key: jax.Array) -> Any:
        """Jittable: the reset draw of one copy from a key (pytree of arrays)."""

    @abc.abstractmethod
    def reset(self, env: Any, draw: Any) -> Step:
        """Resets ``env`` to the drawn start; returns the first observation (no step info)."""

    @abc.abstractmethod
    def step(self, env: Any, action: np.ndarray, before: dict) -> Step:
        """One control step of ``env``; ``before`` is the phys dict of the previous step."""

    @abc.abstractmethod
    def to_phys(self, phys: dict) -> Any:
        """Jittable: the task's physics pytree from (batched) ``phys`` arrays."""


class BallSim(Sim):
    """Bullet-Safety-Gym Ball tasks; ``keep`` slices the simulator's observation."""

    task_terminates = True

    def __init__(self, task: Task, sim_id: str, keep: tuple, sim_kwargs: dict | None = None):
        super().__init__(task)
        self.sim_id, self.keep, self.sim_kwargs = sim_id, slice(*keep), sim_kwargs or {}

    def build(self):
        # the simulators are optional at run time and slow to import: loaded only when built
        import bullet_safety_gym  # noqa: F401  (registers the Safety* ids with gymnasium)
        import gymnasium

        with compat.process_std_streams():
            return gymnasium.make(self.sim_id, **self.sim_kwargs).unwrapped

    def draw(self, key):
        return self.task.init(key)

    def _read(self, env) -> dict:
        phys = {
            "pos": np.asarray(env.agent.get_position()[:2], np.float32),
            "vel": np.asarray(env.agent.get_linear_velocity()[:2], np.float32),
        }
        if env.obstacles:
            phys["puddles"] = np.array([ob.get_position()[:2] for ob in env.obstacles], np.float32)
        return phys

    def reset(self, env, draw):
        env.reset()
        ball = draw.ball if isinstance(draw, ReachState) else draw
        x, y = np.asarray(ball.pos, np.float64)
        env.bc.resetBasePositionAndOrientation(env.agent.body_id, [x, y, BALL_Z], [0, 0, 0, 1])
        env.bc.resetBaseVelocity(env.agent.body_id, [0, 0, 0], [0, 0, 0])
        if isinstance(draw, ReachState):
            for ob, (px, py) in zip(env.obstacles, np.asarray(draw.puddles), strict=True):
                ob.set_position([float(px), float(py), 0.0])
        obs = env.get_observation()
        return Step(obs[self.keep], self._read(env), {}, False, 0.0, 0.0)

    def step(self, env, action, before):
        obs, reward, terminated, _, info = env.step(action)
        phys = self._read(env)
        relabel = {
            "prev_pos": before["pos"],
            "pos": phys["pos"],
            "vel": phys["vel"],
            "agent_specific": np.float32(env.agent.specific_reward()),
        }
        cost = float(info.get("cost", 0.0))
        return Step(obs[self.keep], phys, relabel, bool(terminated), float(reward), cost)

    def to_phys(self, phys):
        ball = BallState(pos=phys["pos"], vel=phys["vel"])
        return ReachState(ball=ball, puddles=phys["puddles"]) if "puddles" in phys else ball


class VelocitySim(Sim):
    """Safety-Gymnasium velocity tasks (``Safety<Robot>Velocity-v1``)."""

    task_terminates = False  # Task.terminated reads Brax state; the simulator decides

    def __init__(self, task: Task, sim_id: str, module: str, cls: str):
        super().__init__(task)
        self.sim_id, self.module, self.cls = sim_id, module, cls

    def build(self):
        if self.sim_id.startswith("SafetySwimmer"):
            return compat.swimmer_velocity_env_class()()
        compat.import_safety_gymnasium()
        return getattr(importlib.import_module(self.module), self.cls)()

    def draw(self, key):
        return jax.random.bits(key, dtype=jnp.uint32)

    def reset(self, env, draw):
        obs, _ = env.reset(seed=int(draw))
        return Step(np.asarray(obs), {"velocity": np.zeros(2, np.float32)}, {}, False, 0.0, 0.0)

    def step(self, env, action, before):
        del before
        obs, reward, cost, terminated, _, info = env.step(action)
        velocity = np.array([info["x_velocity"], info.get("y_velocity", 0.0)], np.float32)
        relabel = {
            "velocity": velocity,
            "healthy_reward": np.float32(info.get("reward_survive", 0.0)),
            "ctrl_cost": np.float32(-info["reward_ctrl"]),
        }
        return Step(
            np.asarray(obs),
            {"velocity": velocity},
            relabel,
            bool(terminated),
            float(reward),
            float(cost),
        )

    def to_phys(self, phys):
        # Brax (and MuJoCo's import-time prints) load only when a velocity task is used
        from scpr_jax.envs.velocity import VelocityState

        return VelocityState(brax=None, velocity=phys["velocity"])


SIM_KINDS = {"ball": BallSim, "velocity": VelocitySim}  # `envs.RealSim.kind` -> simulator


def sim_for(task: Task) -> Sim:
    """The real simulator of ``task`` as its class declares it (`Task.real`)."""
    if task.real is None:
        raise ValueError(f"task {task.name!r} declares no real-simulator variant (Task.real)")
    return SIM_KINDS[task.real.kind](task, task.real.sim_id, **task.real.options)
