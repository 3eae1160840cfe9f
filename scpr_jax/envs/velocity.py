"""Safe velocity tasks on Brax: Ant-vel, HalfCheetah-vel and Swimmer-vel.

Safety-Gymnasium's velocity tasks are Gymnasium's MuJoCo locomotion environments plus a
speed cost; here the same robots run on Brax (`brax.envs`, backend ``generalized`` by
default: it reads the same MJCF models and is the closest to MuJoCo of Brax's pure-JAX
backends; ``spring`` is ~2-7x faster on a CPU for Ant and HalfCheetah and can be chosen).

- Dynamics, start distribution, termination and observation: Brax's ``ant`` (27 values,
  terminates when the torso height leaves [0.2, 1.0]) and ``halfcheetah`` (17), root
  positions excluded as in Gymnasium. Swimmer (8 values: q[2:], qd) is our own Brax
  ``PipelineEnv`` on the ``mjx`` backend (MuJoCo's JAX port) with Brax's swimmer model,
  4 frames of 0.01 s and Gymnasium's U(-0.1, 0.1) reset noise: Brax's own swimmer supports
  only ``generalized``, whose fluid model calls ``jnp.clip(a_min=...)``, removed in
  JAX 0.10. Episode: 1000 steps.
- Planar velocity v = (root position after - before) / dt (root x, y; HalfCheetah has no
  y, so v = (vx, 0)). Stored in ``info["velocity"]`` with the healthy and control terms.
- Goal: a unit direction g (2 values, also the downstream goal features).
  Ant, Swimmer users: (1,0), (0,1), (-1,0), (0,-1); downstream: 40 directions at angles
  2 pi k / 40. HalfCheetah users and downstream goals: (1,0) and (-1,0).
- Reward: g . v + healthy_reward - ctrl_cost, with healthy_reward 1 (Ant) or 0, and
  ctrl_cost = c * ||a||^2, c = 0.5 (Ant), 0.1 (HalfCheetah), 1e-4 (Swimmer).
- Cost: speed > threshold, speed = ||v|| (Ant 2.6222, Swimmer 1.5) or |vx| (HalfCheetah
  3.2096), the thresholds of Safety-Gymnasium (Swimmer: the paper's custom 1.5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from brax import envs as brax_envs
from brax.envs.base import PipelineEnv
from brax.io import mjcf
from etils import epath
from flax import struct

from scpr_jax.envs.core import PaperSettings, RealSim, Task

FOUR_DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], np.float32)
_ANGLES = 2 * np.pi * np.arange(40) / 40
FORTY_DIRECTIONS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], -1).astype(np.float32)
TWO_DIRECTIONS = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)

_SG = "safety_gymnasium.tasks.safe_velocity"  # module prefix of the real simulators


@struct.dataclass
class VelocityState:
    brax: brax_envs.State  # Brax environment state
    velocity: jax.Array  # [2] planar root velocity over the last step


class VelocityTask(Task):
    """A Brax locomotion robot with the paper's direction goals and speed cost."""

    action_size: int
    goal_size = 2
    goal_obs_size = 2
    max_steps = 1000
    brax_name: str
    xy_index: tuple[int, ...]  # indices of the root's planar coordinates in q
    healthy_reward: float
    ctrl_coef: float
    speed_limit: float
    backends: tuple[str, ...] = ("generalized", "spring", "positional")

    def __init__(self, backend: str | None = None):
        backend = self.backends[0] if backend is None else backend
        if backend not in self.backends:
            raise ValueError(
                f"backend={backend!r} not supported for {self.name}; "
                f"valid: {', '.join(self.backends)}"
            )
        self.backend = backend
        self.brax_env = self._brax_env(backend)
        self.dt = float(self.brax_env.dt)
        # eval_shape: Brax's observation_size runs an eager reset (~600 tiny compiles, ~30 s)
        self.obs_size = int(
            jax.eval_shape(self.brax_env.reset, jax.random.PRNGKey(0)).obs.shape[-1]
        )
        self.action_size = int(self.brax_env.action_size)

    def _brax_env(self, backend: str) -> PipelineEnv:
        return brax_envs.get_environment(self.brax_name, backend=backend)

    def init(self, key):
        return VelocityState(brax=self.brax_env.reset(key), velocity=jnp.zeros(2))

    def _xy(self, brax_state) -> jax.Array:
        q = brax_state.pipeline_state.q
        xy = q[jnp.array(self.xy_index)]
        return jnp.pad(xy, (0, 2 - len(self.xy_index)))

    def transition(self, key, phys, action):
        del key
        nxt = self.brax_env.step(phys.brax, action)
        velocity = (self._xy(nxt) - self._xy(phys.brax)) / self.dt
        alive = 1.0 - nxt.done
        info = {
            "velocity": velocity,  # [2]
            "healthy_reward": self.healthy_reward * alive,  # []
            "ctrl_cost": self.ctrl_coef * jnp.sum(jnp.square(action)),  # []
        }
        return VelocityState(brax=nxt, velocity=velocity), info

    def observe(self, phys):
        return phys.brax.obs

    def goal_features(self, goal, phys):
        del phys
        return goal

    def speed(self, velocity: jax.Array) -> jax.Array:
        """The speed the cost rule thresholds []."""
        return jnp.linalg.norm(velocity)

    def reward(self, info, goal):
        return jnp.dot(goal, info["velocity"]) + info["healthy_reward"] - info["ctrl_cost"]

    def cost(self, phys):
        return (self.speed(phys.velocity) > self.speed_limit).astype(jnp.float32)

    def terminated(self, phys, goal):
        del goal
        return phys.brax.done > 0.5


class AntVel(VelocityTask):
    name = "ant-vel"
    brax_name = "ant"
    xy_index = (0, 1)
    healthy_reward = 1.0
    ctrl_coef = 0.5
    speed_limit = 2.6222
    user_goals = FOUR_DIRECTIONS
    downstream_goals = FORTY_DIRECTIONS
    paper = PaperSettings(bc_alpha=(2000.0, 1.0), online_steps=2_000_000, n_users=4)
    real = RealSim("velocity", "SafetyAntVelocity-v1", {
        "module": f"{_SG}.safety_ant_velocity_v1", "cls": "SafetyAntVelocityEnv"})  # fmt: skip


class HalfCheetahVel(VelocityTask):
    name = "halfcheetah-vel"
    brax_name = "halfcheetah"
    xy_index = (0,)
    healthy_reward = 0.0
    ctrl_coef = 0.1
    speed_limit = 3.2096
    user_goals = TWO_DIRECTIONS
    downstream_goals = TWO_DIRECTIONS
    paper = PaperSettings(bc_alpha=(200.0, 200.0), distinct_users=True)  # forward / backward
    real = RealSim("velocity", "SafetyHalfCheetahVelocity-v1", {
        "module": f"{_SG}.safety_half_cheetah_velocity_v1",
        "cls": "SafetyHalfCheetahVelocityEnv"})  # fmt: skip

    def speed(self, velocity):
        return jnp.abs(velocity[0])


class MJXSwimmer(PipelineEnv):
    """Brax's swimmer model on the ``mjx`` backend, observation [q[2:], qd] (8 values)."""

    def __init__(self, backend: str = "mjx"):
        path = epath.resource_path("brax") / "envs/assets/swimmer.xml"
        super().__init__(sys=mjcf.load(path), backend=backend, n_frames=4)

    def reset(self, rng: jax.Array) -> brax_envs.State:
        k_q, k_qd = jax.random.split(rng)
        q = self.sys.init_q + jax.random.uniform(k_q, (self.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(k_qd, (self.sys.qd_size(),), minval=-0.1, maxval=0.1)
        pipeline_state = self.pipeline_init(q, qd)
        zero = jnp.zeros(())
        return brax_envs.State(pipeline_state, self._obs(pipeline_state), zero, zero)

    def step(self, state: brax_envs.State, action: jax.Array) -> brax_envs.State:
        pipeline_state = self.pipeline_step(state.pipeline_state, action)
        return state.replace(pipeline_state=pipeline_state, obs=self._obs(pipeline_state))

    def _obs(self, pipeline_state) -> jax.Array:
        return jnp.concatenate([pipeline_state.q[2:], pipeline_state.qd])


class SwimmerVel(VelocityTask):
    name = "swimmer-vel"
    brax_name = "swimmer"
    xy_index = (0, 1)
    healthy_reward = 0.0
    ctrl_coef = 1e-4
    speed_limit = 1.5
    user_goals = FOUR_DIRECTIONS
    downstream_goals = FORTY_DIRECTIONS
    paper = PaperSettings(bc_alpha=(200.0, 200.0), n_users=4)
    real = RealSim("velocity", "SafetySwimmerVelocity-v1", {
        "module": f"{_SG}.safety_swimmer_velocity_v1",
        "cls": "SafetySwimmerVelocityEnv"})  # fmt: skip
    backends = ("mjx",)

    def _brax_env(self, backend: str) -> PipelineEnv:
        return MJXSwimmer(backend=backend)
