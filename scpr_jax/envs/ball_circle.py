"""Ball-Circle: circle the origin clockwise at the user's tangential speed, |x| <= 6.

Bullet-Safety-Gym SafetyBallCircle (Ball, Octagon world), PAPER.md section 4.

- Dynamics: `ball.ball_step`, dt = 6 / 60 s (Bullet's CircleTask: 1/60 s x 6 frames); the
  Octagon's walls are approximated by square walls at |x|, |y| = 10.
- Start: uniform in the annulus 2 <= ||p|| <= 4 (Bullet rejection-samples the same set), at rest.
- Episode: 250 steps, never terminates early.
- Observation [8]: Ball observation (7) + [(||p|| - R) / 10] with circle radius R = 7.
  Downstream form appends [g] (1 value).
- Goal g: target clockwise tangential speed. Users: 0.1 and 6.0. Downstream: 0.0, ..., 5.9.
- Reward: exp(-0.5 |v_tan - g|) / (1 + | ||p|| - R |) + 0.01 * agent_specific, with
  v_tan = v . (y, -x) / ||(y, -x)|| (clockwise) and agent_specific = -0.5 ||a||.
- Cost: |x| > 6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.envs.ball import BallState, agent_obs, ball_info, ball_step
from scpr_jax.envs.core import PaperSettings, RealSim, Task

CIRCLE_RADIUS = 7.0
X_LIMIT = 6.0
WALL = 10.0


def tangential_speed(pos: jax.Array, vel: jax.Array) -> jax.Array:
    """Clockwise tangential speed v . (y, -x) / ||(y, -x)|| []."""
    tangent = jnp.stack([pos[1], -pos[0]])
    return jnp.dot(vel, tangent) / (jnp.linalg.norm(tangent) + 1e-8)


class BallCircle(Task):
    name = "ball-circle"
    obs_size = 8
    action_size = 2
    goal_size = 1
    goal_obs_size = 1
    max_steps = 250
    dt = 6.0 / 60.0
    user_goals = np.array([[0.1], [6.0]], np.float32)
    downstream_goals = np.round(np.arange(60) * 0.1, 1).astype(np.float32)[:, None]
    paper = PaperSettings(bc_alpha=(2000.0, 200.0), td3bc_steps=2_000_000)
    real = RealSim("ball", "SafetyBallCircle-v0", {"keep": (0, 8)})

    def init(self, key):
        k_r, k_a = jax.random.split(key)
        radius = jnp.sqrt(jax.random.uniform(k_r, minval=2.0**2, maxval=4.0**2))
        angle = jax.random.uniform(k_a, minval=-jnp.pi, maxval=jnp.pi)
        pos = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        return BallState(pos=pos, vel=jnp.zeros(2))

    def transition(self, key, phys, action):
        del key
        after = ball_step(phys, action, self.dt, wall=WALL)
        return after, ball_info(phys, after, action)

    def observe(self, phys):
        ring = (jnp.linalg.norm(phys.pos) - CIRCLE_RADIUS) / WALL
        return jnp.concatenate([agent_obs(phys), ring[None]])

    def goal_features(self, goal, phys):
        del phys
        return goal

    def reward(self, info, goal):
        pos, vel = info["pos"], info["vel"]
        off_ring = jnp.abs(jnp.linalg.norm(pos) - CIRCLE_RADIUS)
        speed_term = jnp.exp(-0.5 * jnp.abs(tangential_speed(pos, vel) - goal[0]))
        return speed_term / (1.0 + off_ring) + 0.01 * info["agent_specific"]

    def cost(self, phys):
        return (jnp.abs(phys.pos[0]) > X_LIMIT).astype(jnp.float32)
