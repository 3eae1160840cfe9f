"""Ball agent physics in pure JAX, shared by Ball-Run, Ball-Circle and Ball-Reach.

Why pure JAX and not MJX: Bullet-Safety-Gym's Ball is a 0.3 kg sphere (radius 0.5) pushed by
an external planar force ``3.5 * a`` (a in [-1, 1]^2). Rolling without slipping, its planar
motion is that of a point mass with effective mass m_eff = 7/5 m. We model

    dv/dt = F / m_eff - c * v,   dx/dt = v

with a linear drag c = 0.5 1/s standing in for rolling resistance, and integrate it
*exactly* over a control step of length dt (the force is constant within a step), so no
sub-stepping is needed. This costs a handful of flops per step and vmaps to millions of
steps/s, where MJX would run a full contact solver (~1.5k steps/s on our CPU) for the same
planar motion. Square walls (when given) stop the ball's centre at ``wall - radius``.

Observation of the agent (Bullet-Safety-Gym's layout, 7 values):
    [0.1 * x, 0.1 * y, 0.2 * vx, 0.2 * vy, 0.1 * wx, 0.1 * wy, 0.1 * wz]
with the rolling angular velocity w = (-vy / r, vx / r, 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

MASS = 0.3  # kg
RADIUS = 0.5  # m
MAX_FORCE = 3.5  # N, applied as MAX_FORCE * a
ACCEL = MAX_FORCE / (1.4 * MASS)  # m/s^2 at |a_i| = 1 (solid sphere rolling: m_eff = 7/5 m)
DRAG = 0.5  # 1/s


@struct.dataclass
class BallState:
    """Planar ball state."""

    pos: jax.Array  # [2] centre position (x, y)
    vel: jax.Array  # [2] linear velocity (vx, vy)


def ball_step(
    ball: BallState, action: jax.Array, dt: float, wall: float | None = None
) -> BallState:
    """Exact integration of dv/dt = ACCEL * a - DRAG * v over dt; a in [-1, 1]^2."""
    v_inf = ACCEL * action / DRAG  # terminal velocity under this force
    decay = jnp.exp(-DRAG * dt)
    vel = v_inf + (ball.vel - v_inf) * decay
    pos = ball.pos + v_inf * dt + (ball.vel - v_inf) * (1.0 - decay) / DRAG
    if wall is not None:
        limit = wall - RADIUS
        hit = jnp.abs(pos) > limit
        pos = jnp.clip(pos, -limit, limit)
        vel = jnp.where(hit, 0.0, vel)
    return BallState(pos=pos, vel=vel)


def agent_obs(ball: BallState) -> jax.Array:
    """Bullet-Safety-Gym's 7-value Ball observation [7]."""
    omega = jnp.array([-ball.vel[1], ball.vel[0], 0.0]) / RADIUS
    return jnp.concatenate([0.1 * ball.pos, 0.2 * ball.vel, 0.1 * omega])


def agent_specific_reward(action: jax.Array) -> jax.Array:
    """Bullet-Safety-Gym's Ball actuation penalty: -0.5 * ||a|| []."""
    return -0.5 * jnp.linalg.norm(action)


def ball_info(before: BallState, after: BallState, action: jax.Array) -> dict:
    """Per-step quantities from which every ball task's user reward is recomputed."""
    return {
        "prev_pos": before.pos,  # [2]
        "pos": after.pos,  # [2]
        "vel": after.vel,  # [2]
        "agent_specific": agent_specific_reward(action),  # []
    }
