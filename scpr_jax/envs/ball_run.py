"""Ball-Run: run along a narrow corridor at the user's target speed.

Bullet-Safety-Gym SafetyBallRun (Ball on Plane200) with the corridor narrowed to |y| <= 0.5
and the x position dropped from the observation (PAPER.md section 4).

- Dynamics: `ball.ball_step`, dt = 4 / 120 s (Bullet's RunTask: 1/120 s x 4 frames), no walls.
- Start: (x, y) ~ U(-0.01, 0.01)^2 at rest. Episode: 250 steps, never terminates early.
- Observation [6]: the Ball observation without x:
  [0.1 y, 0.2 vx, 0.2 vy, 0.1 wx, 0.1 wy, 0.1 wz]. Downstream form appends [g] (1 value).
- Goal g: a target forward speed. Users: 0.1 and 5.0. Downstream: 0.0, 0.1, ..., 4.9.
- Reward: exp(-0.5 |vx - g|) + 0.1 * agent_specific, agent_specific = -0.5 ||a||.
- Cost: |y| > 0.5 (only the corridor bound; Bullet's speed limit is not used).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.envs.ball import BallState, agent_obs, ball_info, ball_step
from scpr_jax.envs.core import PaperSettings, RealSim, Task

Y_LIMIT = 0.5


class BallRun(Task):
    name = "ball-run"
    obs_size = 6
    action_size = 2
    goal_size = 1
    goal_obs_size = 1
    max_steps = 250
    dt = 4.0 / 120.0
    user_goals = np.array([[0.1], [5.0]], np.float32)
    downstream_goals = np.round(np.arange(50) * 0.1, 1).astype(np.float32)[:, None]
    paper = PaperSettings(bc_alpha=(100.0, 20.0), td3bc_steps=100_000, iql_steps=200_000,
                          cpl_lambda=1.0)  # fmt: skip
    real = RealSim("ball", "SafetyBallRun-v0", {"keep": (1, 7)})

    def init(self, key):
        pos = jax.random.uniform(key, (2,), minval=-0.01, maxval=0.01)
        return BallState(pos=pos, vel=jnp.zeros(2))

    def transition(self, key, phys, action):
        del key
        after = ball_step(phys, action, self.dt)
        return after, ball_info(phys, after, action)

    def observe(self, phys):
        return agent_obs(phys)[1:]

    def goal_features(self, goal, phys):
        del phys
        return goal

    def reward(self, info, goal):
        return jnp.exp(-0.5 * jnp.abs(info["vel"][0] - goal[0])) + 0.1 * info["agent_specific"]

    def cost(self, phys):
        return (jnp.abs(phys.pos[1]) > Y_LIMIT).astype(jnp.float32)
