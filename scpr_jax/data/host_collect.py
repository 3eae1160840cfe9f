"""D_tau on the real simulators: `data.collect`'s collector with the environments on the host.

Same config (`collect_config`), SAC, buffer layout, `Trajectories` and summary as
`collect.collect` (PAPER.md 3.1), so every later stage is unchanged. Only the environment
step leaves the device: each vectorised step is a jitted `act` (uniform random actions
before warm-up, else the SAC policy), the host `BridgedEnv.step` of all copies, and a jitted
`learn` that writes the transitions at row t of the on-device buffer (donated, so it is
updated in place) and runs ``updates_per_step`` SAC updates on it: the two halves of the acting
core's step (`acting.act_store_learn`) around the host step. Key use per step is that of
`collect.make_chunk` (and `BridgedEnv` splits keys over copies as ``vmap(env.step)`` does), so
a Ball task's copies start where the JAX-native collector's would under the same key. `act`
and `learn` are pure (vmappable); the Python loop around them and the simulators are not.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from scpr_jax.acting import chunk_means, store_and_learn
from scpr_jax.agents.sac import SACState, sac_init
from scpr_jax.bridge import BridgedEnv, make
from scpr_jax.data.buffer import (
    distinct_buffers,
    empty_buffer,
    sac_act,
    sac_learner,
    schedule,
    stream_major,
    summarize,
)
from scpr_jax.data.types import Trajectories


@struct.dataclass
class HostCollectorState:
    """The on-device part of the collector: learner, last observations, buffer, counter, key."""

    sac: SACState
    obs: jax.Array  # [n_envs, obs_size] current observations
    buffer: Trajectories | None  # [T, n_envs, ...]; None until the first step gives its shapes
    t: jax.Array  # [] int32 vectorised steps done (= filled rows of the buffer)
    key: jax.Array
    cost_penalty: jax.Array  # [] K after the switch


def _keys(key: jax.Array) -> tuple[jax.Array, ...]:
    """(next key, k_act, k_env, k_update): the per-step split of `collect.make_chunk`."""
    return tuple(jax.random.split(key, 4))


def make_act(config) -> Callable:
    """Pure ``act(sac, obs [N, O], t, key) -> (action [N, A], k_env)``: the step's first half."""
    warmup_t = sac_learner(config).warmup_t

    def act(sac: SACState, obs: jax.Array, t: jax.Array, key: jax.Array):
        _, k_act, k_env, _ = _keys(key)
        return sac_act(sac, obs, k_act, t < warmup_t), k_env

    return act


def make_learn(config) -> Callable:
    """Pure ``learn(state, action [N, A], ts) -> (state, metrics)``: the step's second half
    (`acting.store_and_learn` with SAC's store and learn, as the JAX collector)."""
    sac = sac_learner(config)

    def learn(state: HostCollectorState, action: jax.Array, ts):
        key, _, _, k_update = _keys(state.key)
        store = lambda a, s: sac.store(state.buffer, state.t, state.obs, a, s)  # noqa: E731
        penalty = sac.penalty(state.t, state.cost_penalty)
        learner, buffer, metrics = store_and_learn(
            store, sac.learn, sac.learn_from, state.t, state.sac, action, ts, k_update, penalty
        )
        state = state.replace(sac=learner, obs=ts.obs, buffer=buffer, t=state.t + 1, key=key)
        return state, metrics

    return learn


def chunk_metrics(steps: list[dict], penalty: float, updates_per_step: int) -> dict:
    """Per-step metrics of a chunk -> the chunk metrics of `collect.make_chunk` (in float64)."""
    stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *steps))
    m = {k: np.asarray(v, np.float64) for k, v in stacked.items()}
    out = chunk_means(m, updates_per_step, xp=np, penalty=penalty)
    return {k: float(v) for k, v in out.items()}


def collect(
    key: jax.Array,
    env_name_or_env: str | BridgedEnv,
    config: ml_collections.ConfigDict,
    progress: Callable[[int, dict], None] | None = None,
) -> tuple[Trajectories, dict]:
    """`collect.collect` on a real simulator -> (D_tau stream-major [n_envs * T rows], summary).

    ``env_name_or_env``: ``"real:<task>"``, ``"real:<task>/downstream"`` or a downstream
    `BridgedEnv` with ``config.n_envs`` copies. ``progress(transitions_done, chunk_metrics)``
    is called every ``config.chunk_steps`` vectorised steps.
    """
    env = env_name_or_env
    if isinstance(env, str):
        name = env if "/" in env else f"{env}/downstream"
        env = make(name, n_envs=int(config.n_envs))
    if env.form != "downstream":
        raise ValueError(f"collect needs the downstream form (goal observed), got {env.name!r}")
    if env.n_envs != int(config.n_envs):
        raise ValueError(f"{env.name} has n_envs={env.n_envs}, config.n_envs={config.n_envs}")
    n_steps, _, switch_t = schedule(config)
    params = env.default_params(max_steps=int(config.max_steps) or None)
    params = params.replace(resample_prob=jnp.asarray(config.resample_prob, jnp.float32))
    k_reset, k_sac, k_run = jax.random.split(key, 3)
    state = HostCollectorState(  # distinct buffers: `learn` donates the state
        sac=sac_init(k_sac, env.obs_size, env.action_size, config),
        obs=env.reset(k_reset, params),
        buffer=None,
        t=jnp.asarray(0, jnp.int32),
        key=k_run,
        cost_penalty=jnp.asarray(config.cost_penalty, jnp.float32),
    )
    state = distinct_buffers(state)
    act = jax.jit(make_act(config))
    learn = jax.jit(make_learn(config), donate_argnums=0)
    steps = []
    for t in range(n_steps):
        action, k_env = act(state.sac, state.obs, state.t, state.key)
        ts = env.step(k_env, action, params)
        if state.buffer is None:
            state = state.replace(buffer=empty_buffer(state.obs, action, ts, n_steps))
        state, metrics = learn(state, action, ts)
        steps.append(metrics)
        if progress is not None and (len(steps) == int(config.chunk_steps) or t + 1 == n_steps):
            penalty = float(config.cost_penalty) if t >= switch_t else 0.0
            progress((t + 1) * env.n_envs, chunk_metrics(steps, penalty, config.updates_per_step))
        if len(steps) == int(config.chunk_steps):
            steps = []
    if isinstance(env_name_or_env, str):
        env.close()
    traj = stream_major(state.buffer)
    return traj, summarize(traj, np.asarray(params.goals), switch_t)
