"""Ball-Reach: reach the user's corner of a small room while keeping away from 8 puddles.

Bullet-Safety-Gym SafetyBallReach (Ball, SmallRoom) with 8 static puddles, no moving box and
80-step episodes (PAPER.md section 4).

- Dynamics: `ball.ball_step`, dt = 4 / 60 s (Bullet's ReachGoalTask: 1/60 s x 4 frames),
  square walls at |x|, |y| = 10 (SmallRoom, env_dim = 10).
- Start: agent uniform in [-7, 7]^2 at rest. Then 8 puddles (radius 1), uniform in [-7, 7]^2
  by rejection (32 candidates, kept greedily in order) so that a puddle is > 2 from the
  agent, > 2 from every goal corner (Bullet re-draws a goal closer than 2 to an obstacle)
  and > 2.5 from the other puddles. Puddles do not move within an episode.
- Episode: 80 steps; terminates when ||p - goal|| < `goal_radius` (Bullet's goal zone, 1.3).
- Observation [31]: Ball observation (7) + 24-bin pseudo-lidar. Lidar (Bullet's
  PseudoLIDARSensor, range 5 = env_dim / 2): for each puddle at distance d <= 5 its bin
  floor((atan2(dx, dy) + pi) / (2 pi / 24)), with (dx, dy) = agent - puddle, reads 1 - d / 5;
  a bin keeps its largest reading. Downstream form appends (goal - p) / 20 (2 values).
- Goal: a corner (+-8, +-8); users and downstream goals are the same 4 corners.
- Reward: 3 (d_prev - d) + 0.01 * agent_specific with d = ||p - goal||; crowd users get an
  extra -0.5 per step (the crowd offset).
- Cost: any lidar reading > 0.7, i.e. a puddle centre closer than 1.5. (The authors' wrapper
  reads the lidar of the state before the step; we use the state after it, like the other
  tasks, so the cost of a transition is the safety of where it lands.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from scpr_jax.envs.ball import BallState, agent_obs, ball_info, ball_step
from scpr_jax.envs.core import PaperSettings, RealSim, Task

WALL = 10.0
SPAWN = 7.0
N_PUDDLES = 8
N_RAYS = 24
LIDAR_RANGE = 5.0
LIDAR_COST = 0.7
CORNERS = np.array([[-8.0, -8.0], [-8.0, 8.0], [8.0, -8.0], [8.0, 8.0]], np.float32)


@struct.dataclass
class ReachState:
    ball: BallState
    puddles: jax.Array  # [8, 2] puddle centres


def lidar(pos: jax.Array, puddles: jax.Array) -> jax.Array:
    """24-bin pseudo-lidar readings in [0, 1] (1 = touching) [24]."""
    delta = pos[None, :] - puddles  # [n, 2]
    dist = jnp.linalg.norm(delta, axis=-1)
    angle = jnp.arctan2(delta[:, 0], delta[:, 1]) + jnp.pi  # [0, 2 pi], clockwise from 6 o'clock
    bins = jnp.clip(jnp.floor(angle / (2 * jnp.pi / N_RAYS)).astype(jnp.int32), 0, N_RAYS - 1)
    reading = jnp.where(dist <= LIDAR_RANGE, 1.0 - dist / LIDAR_RANGE, 0.0)
    return jnp.max(jax.nn.one_hot(bins, N_RAYS) * reading[:, None], axis=0)


def place_puddles(key: jax.Array, agent_pos: jax.Array, n_candidates: int = 32) -> jax.Array:
    """Rejection-samples 8 puddle centres (see module docstring) [8, 2].

    Draws all candidates at once and keeps, 8 times, the first candidate that satisfies every
    constraint given the ones already kept (masks only: measured ~10x faster under vmap than
    drawing fresh candidates for each puddle; it runs inside every auto-reset).
    """
    cand = jax.random.uniform(key, (n_candidates, 2), minval=-SPAWN, maxval=SPAWN)
    d_agent = jnp.linalg.norm(cand - agent_pos, axis=-1)
    d_goal = jnp.linalg.norm(cand[:, None] - CORNERS[None], axis=-1).min(-1)
    free = (d_agent > 2.0) & (d_goal > 2.0)  # [C]

    def keep_next(_, carry):
        chosen, blocked = carry
        valid = free & ~blocked
        # if nothing is valid, fall back to the first not-yet-chosen candidate
        pick = jnp.where(valid.any(), jnp.argmax(valid), jnp.argmax(~chosen))
        picked = jnp.arange(n_candidates) == pick
        close = jnp.sum(jnp.square(cand - cand[pick]), axis=-1) <= 2.5**2
        return chosen | picked, blocked | picked | close

    no = jnp.zeros(n_candidates, bool)
    chosen, _ = jax.lax.fori_loop(0, N_PUDDLES, keep_next, (no, no))
    order = jnp.argsort(~chosen, stable=True)[:N_PUDDLES]  # indices of the kept candidates
    return cand[order]


class BallReach(Task):
    name = "ball-reach"
    obs_size = 7 + N_RAYS
    action_size = 2
    goal_size = 2
    goal_obs_size = 2
    max_steps = 80
    dt = 4.0 / 60.0
    crowd_offset = -0.5
    user_goals = CORNERS
    downstream_goals = CORNERS
    paper = PaperSettings(bc_alpha=(100.0, 200.0), iql_expectile=0.9, cpl_lambda=1.0, n_users=4,
                          n_pairs=32, segment_len=16, distinct_users=True)  # fmt: skip
    # the real Bullet task with its 8 static puddles (the JAX twin draws them per episode)
    real = RealSim("ball", "SafetyBallReach-v0", {"keep": (0, 31), "sim_kwargs": {"obstacles": {
        "Puddle": {"number": 8, "fixed_base": True, "movement": "static"}}}})  # fmt: skip

    def __init__(self, goal_radius: float = 1.3):
        self.goal_radius = goal_radius

    def init(self, key):
        k_agent, k_puddles = jax.random.split(key)
        pos = jax.random.uniform(k_agent, (2,), minval=-SPAWN, maxval=SPAWN)
        ball = BallState(pos=pos, vel=jnp.zeros(2))
        return ReachState(ball=ball, puddles=place_puddles(k_puddles, pos))

    def transition(self, key, phys, action):
        del key
        ball = ball_step(phys.ball, action, self.dt, wall=WALL)
        info = ball_info(phys.ball, ball, action)
        return phys.replace(ball=ball), info

    def observe(self, phys):
        return jnp.concatenate([agent_obs(phys.ball), lidar(phys.ball.pos, phys.puddles)])

    def goal_features(self, goal, phys):
        return (goal - phys.ball.pos) / (2 * WALL)

    def reward(self, info, goal):
        progress = jnp.linalg.norm(info["prev_pos"] - goal) - jnp.linalg.norm(info["pos"] - goal)
        return 3.0 * progress + 0.01 * info["agent_specific"]

    def cost(self, phys):
        return (jnp.max(lidar(phys.ball.pos, phys.puddles)) > LIDAR_COST).astype(jnp.float32)

    def terminated(self, phys, goal):
        return jnp.linalg.norm(phys.ball.pos - goal) < self.goal_radius
