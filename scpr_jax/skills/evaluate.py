"""Rolling out a latent-conditioned skill pi_l(a | s, z') in the crowd environment."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.acting import is_host, rollout
from scpr_jax.envs import make
from scpr_jax.skill import skill_obs


def latent_returns(
    key: jax.Array,
    task_name: str,
    act: Callable[[jax.Array], jax.Array],
    latents: jax.Array,
    n_episodes: int,
    max_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean episode return and cost of the skill at each latent for each crowd user.

    act: maps a skill observation [s, z'] [O + Z] to an action [A]; latents: [n_latents, Z].
    Returns (return, cost), each [n_latents, n_users]: entry (i, u) rolls the skill with
    latent i in user u's crowd environment (reward r_user, cost counted separately).
    """
    if is_host(task_name):  # real simulators: rolled out on the host
        # the bridge (host simulators, an optional dependency) loads only for a real: task
        from scpr_jax.bridge.rollout import latent_returns as host_latent_returns

        return host_latent_returns(key, task_name, act, latents, n_episodes, max_steps)
    env = make(f"{task_name}/crowd")
    n_users = len(env.task.user_goals)
    params = [env.default_params(user=u, max_steps=max_steps) for u in range(n_users)]
    params = jax.tree.map(lambda *x: jnp.stack(x), *params)
    n_steps = int(params.max_steps[0])

    def one(key, z, p):
        policy = lambda obs, t, c: (act(skill_obs(obs, z)), c)  # noqa: E731
        return rollout(env, p, policy, key, n_steps)

    def grid(key):
        keys = jax.random.split(key, (latents.shape[0], n_users, n_episodes))
        per_user = jax.vmap(one, in_axes=(0, None, None))  # episodes
        per_user = jax.vmap(per_user, in_axes=(0, None, 0))  # users
        return jax.vmap(per_user, in_axes=(0, 0, None))(keys, latents, params)  # latents

    ret, cost = jax.jit(grid)(key)
    return np.asarray(ret.mean(-1)), np.asarray(cost.mean(-1))
