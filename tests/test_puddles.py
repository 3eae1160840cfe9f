"""Ball-Reach puddle placement keeps its documented constraints."""

import jax
import numpy as np

from scpr_jax.envs.ball_reach import CORNERS, N_PUDDLES, SPAWN, place_puddles


def test_puddles_respect_distances():
    n = 512
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    agent = jax.random.uniform(jax.random.PRNGKey(1), (n, 2), minval=-SPAWN, maxval=SPAWN)
    puddles = np.asarray(jax.jit(jax.vmap(place_puddles))(keys, agent))
    assert puddles.shape == (n, N_PUDDLES, 2)
    assert np.all(np.abs(puddles) <= SPAWN)
    pairwise = np.linalg.norm(puddles[:, :, None] - puddles[:, None], axis=-1)
    pairwise += np.eye(N_PUDDLES) * 1e9
    to_agent = np.linalg.norm(puddles - np.asarray(agent)[:, None], axis=-1)
    to_goal = np.linalg.norm(puddles[:, :, None] - CORNERS[None, None], axis=-1)
    ok = (pairwise.min((1, 2)) > 2.5) & (to_agent.min(1) > 2.0) & (to_goal.min((1, 2)) > 2.0)
    assert ok.mean() > 0.99  # rare fallbacks only when 32 candidates cannot fit 8 puddles
    assert len(np.unique(puddles.reshape(n, -1), axis=0)) == n  # fresh layout per reset
