"""Random-policy rollouts in every environment: the smoke test of the environment suite."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.envs import make
from scpr_jax.envs.registry import REAL


def random_rollout(env, params, key: jax.Array, n_envs: int, n_steps: int) -> dict:
    """Rolls a uniform random policy in ``n_envs`` copies for ``n_steps``; episode stats."""

    def run(key):
        k_reset, k_scan = jax.random.split(key)
        _, state = jax.vmap(env.reset, (0, None))(jax.random.split(k_reset, n_envs), params)

        def body(state, key):
            k_act, k_step = jax.random.split(key)
            action = jax.random.uniform(k_act, (n_envs, env.action_size), minval=-1, maxval=1)
            keys = jax.random.split(k_step, n_envs)
            ts, state = jax.vmap(env.step, (0, 0, 0, None))(keys, state, action, params)
            info = ts.info
            return state, (info["episode_done"], info["episode_return"], info["episode_cost"])

        _, out = jax.lax.scan(body, state, jax.random.split(k_scan, n_steps))
        return out

    done, ret, cost = jax.device_get(jax.jit(run)(key))
    done = np.asarray(done, bool)
    return {
        "episodes": int(done.sum()),
        "return": np.asarray(ret)[done],
        "cost": np.asarray(cost)[done],
    }


def host_random_rollout(name: str, key: jax.Array, n_envs: int, episodes: int) -> dict:
    """`random_rollout` on a ``real:`` simulator: ``n_envs * episodes`` episodes on the host."""
    from scpr_jax.bridge import make as make_bridged  # the simulators load only when asked
    from scpr_jax.bridge.rollout import episode_returns

    env = make_bridged(name, n_envs=n_envs)
    try:
        k_policy, k_env = jax.random.split(key)
        size = env.action_size

        calls = [0]  # one fresh key per policy call: deterministic given the seed

        def policy(episode, obs):
            calls[0] += 1
            k = jax.random.fold_in(k_policy, calls[0])
            return jax.random.uniform(k, (len(episode), size), minval=-1, maxval=1)

        ret, cost = episode_returns(env, k_env, env.default_params(), policy, n_envs * episodes)
    finally:
        env.close()
    return {"episodes": len(ret), "return": ret, "cost": cost}


def run_demo(env_names: list[str], seed: int = 0, n_envs: int = 8, episodes: int = 1) -> dict:
    """Rolls out each environment's downstream form (``real:`` names on the host simulators);
    prints return and cost per episode."""
    results = {}
    for name in env_names:
        t0 = time.perf_counter()
        if name.startswith(REAL):
            out = host_random_rollout(name, jax.random.PRNGKey(seed), n_envs, episodes)
        else:
            env = make(name)
            params = env.default_params()
            n_steps = int(params.max_steps) * episodes
            out = random_rollout(env, params, jax.random.PRNGKey(seed), n_envs, n_steps)
        rets = ", ".join(
            f"{r:.1f}/{c:.0f}" for r, c in zip(out["return"], out["cost"], strict=True)
        )
        print(
            f"{name:24s} {out['episodes']:3d} episodes  return/cost per episode: {rets}  "
            f"mean return {np.mean(out['return']):.2f}  mean cost {np.mean(out['cost']):.1f}  "
            f"({time.perf_counter() - t0:.1f}s incl. compile)",
            flush=True,
        )
        results[name] = {k: jnp.asarray(v).tolist() for k, v in out.items()}
    return results
