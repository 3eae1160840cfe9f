"""Offline trajectories D_tau: a goal-conditioned SAC whose whole replay buffer is the dataset.

PAPER.md 3.1. ``n_envs`` copies of the downstream form (goal in the observation, goal redrawn
at half episode with probability ``resample_prob``) run vmapped; SAC trains on
r_new before ``penalty_switch * T`` vectorised steps and on r_new - cost_penalty * cost after
it (sampled transitions are relabelled with the penalty in force at update time), so the
buffer holds unsafe behaviour first and safe behaviour later. The stored ``reward`` is r_new.

Environment steps and SAC updates run inside jitted chunks (`lax.scan` over steps); Python
only loops over chunks. `make_chunk` returns a pure function, so ``jax.vmap`` over a batch
of `CollectorState` collects several seeds at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from scpr_jax.acting import act_store_learn, chunk_means, is_host
from scpr_jax.agents.sac import SACState, sac_init
from scpr_jax.data.buffer import (
    distinct_buffers,
    row,
    sac_act,
    sac_learner,
    sample_batch,
    schedule,
    stream_major,
    summarize,
)
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make
from scpr_jax.runs import is_writer
from scpr_jax.train.distributed import fetch, host_local
from scpr_jax.train.loop import Checkpoints
from scpr_jax.train.sweep import Members, check_memory, place, set_leaves, tree_bytes

# the collector's API; the buffer pieces live in `data.buffer` (shared with `data.host_collect`)
__all__ = [
    "CollectorState",
    "collect",
    "collect_config",
    "collector_init",
    "distinct_buffers",
    "make_chunk",
    "sample_batch",
    "stream_major",
    "summarize",
    "validate_config",
]

PRESETS = ("paper", "small")


def collect_config(preset: str = "small") -> ml_collections.ConfigDict:
    """Collector settings: ``"paper"`` (PAPER.md 3.1) or ``"small"`` (minutes on a 2-core CPU)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    c = ml_collections.ConfigDict()
    c.total_steps = 2_000_000  # transitions to collect = replay capacity = dataset size
    c.n_envs = 16  # parallel environment copies (= dataset streams)
    c.warmup_steps = 100_000  # transitions with uniform random actions before updates start
    c.updates_per_step = 16  # SAC updates per vectorised step (16 = 1 per transition)
    c.batch_size = 256  # SAC minibatch size
    c.hidden = (256, 256)  # hidden widths of the actor and both critics
    c.lr = 3e-4  # Adam learning rate (actor, critics, temperature)
    c.gamma = 0.99  # discount
    c.tau = 0.005  # Polyak rate of the target critics
    c.init_alpha = 1.0  # initial SAC temperature
    c.cost_penalty = 10.0  # K in the training reward r_new - K * cost after the switch
    c.penalty_switch = 0.5  # fraction of the env steps after which the cost penalty applies
    c.resample_prob = 0.5  # probability of redrawing the goal at half episode
    c.max_steps = 0  # episode length; 0 keeps the task's default
    c.chunk_steps = 1000  # vectorised env steps per jitted chunk (progress between chunks)
    if preset == "small":  # Ball-Run in ~2 min on 2 CPU cores: smaller nets, fewer updates
        c.total_steps = 160_000
        c.n_envs = 32
        c.warmup_steps = 10_000
        c.updates_per_step = 4
        c.batch_size = 128
        c.hidden = (64, 64)
        c.init_alpha = 0.1
        c.chunk_steps = 250
    c.lock()
    return c


_RULES = (  # (fields, predicate, what is allowed)
    (
        ("total_steps", "n_envs", "updates_per_step", "batch_size", "chunk_steps"),
        lambda v: v >= 1 and v == int(v),
        "a positive integer",
    ),
    (("warmup_steps", "max_steps", "cost_penalty"), lambda v: v >= 0, ">= 0"),
    (("lr", "init_alpha"), lambda v: v > 0, "> 0"),
    (("gamma", "tau", "penalty_switch", "resample_prob"), lambda v: 0 <= v <= 1, "in [0, 1]"),
)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first field outside its allowed range."""
    for names, ok, allowed in _RULES:
        for name in names:
            if not ok(float(config[name])):
                raise ValueError(f"config.{name}={config[name]} must be {allowed}")
    if len(config.hidden) == 0 or min(config.hidden) < 1:
        raise ValueError(f"config.hidden={config.hidden} must be non-empty positive widths")
    if config.total_steps < config.n_envs:
        raise ValueError(f"config.total_steps={config.total_steps} must be >= n_envs")
    if config.max_steps == 1:
        raise ValueError("config.max_steps=1 must be 0 (task default) or >= 2")


@struct.dataclass
class CollectorState:
    """Everything a chunk carries: learner, environments, replay buffer, counter, key."""

    sac: SACState
    env_state: Any  # batched [n_envs] environment state
    obs: jax.Array  # [n_envs, obs_size] current observations
    buffer: Trajectories  # time-major during collection: every field [T, n_envs, ...]
    t: jax.Array  # [] int32 vectorised steps done (= filled rows of the buffer)
    key: jax.Array
    params: Any  # EnvParams shared by the copies
    cost_penalty: jax.Array  # [] K after the switch


def collector_init(key: jax.Array, env, config) -> CollectorState:
    """Resets ``n_envs`` copies, builds the SAC learner and an empty [T, n_envs] buffer."""
    n_envs, (n_steps, _, _) = int(config.n_envs), schedule(config)
    params = env.default_params(max_steps=int(config.max_steps) or None)
    params = params.replace(resample_prob=jnp.asarray(config.resample_prob, jnp.float32))
    k_reset, k_sac, k_run = jax.random.split(key, 3)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(k_reset, n_envs), params
    )
    ts_shape = jax.eval_shape(
        lambda s: env.step(k_run, s, jnp.zeros(env.action_size), params)[0],
        jax.tree.map(lambda x: x[0], env_state),
    )
    if "final_obs" not in ts_shape.info:
        raise ValueError(f"{env.name}: wrap the env in AutoReset (as envs.make does)")
    action = jax.ShapeDtypeStruct((env.action_size,), jnp.float32)
    rows = row(ts_shape.obs, action, ts_shape, n_envs)
    buffer = jax.tree.map(lambda s: jnp.zeros((n_steps, n_envs, *s.shape), s.dtype), rows)
    return CollectorState(
        sac=sac_init(k_sac, env.obs_size, env.action_size, config),
        env_state=env_state,
        obs=obs,
        buffer=buffer,
        t=jnp.asarray(0, jnp.int32),
        key=k_run,
        params=params,
        cost_penalty=jnp.asarray(config.cost_penalty, jnp.float32),
    )


def make_chunk(env, config, n_steps: int) -> Callable[[CollectorState], tuple]:
    """Pure ``chunk(state) -> (state, metrics)`` running ``n_steps`` vectorised steps.

    Each step (`acting.act_store_learn`) acts (uniform random before warm-up, else the SAC
    policy) in all copies, writes the transitions at row ``t`` and, once warm-up is done, runs
    ``updates_per_step`` SAC updates. Metrics are chunk means (SAC ones over updated steps).
    """
    n_envs, sac = int(config.n_envs), sac_learner(config)
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def env_step(state: CollectorState, _):
        key, k_act, k_env, k_update = jax.random.split(state.key, 4)
        learner, buffer, env_state, ts, metrics = act_store_learn(
            functools.partial(sac_act, state.sac, state.obs),
            lambda k, a: step_envs(jax.random.split(k, n_envs), state.env_state, a, state.params),
            lambda a, ts: sac.store(state.buffer, state.t, state.obs, a, ts),
            sac.learn, sac.warmup_t, sac.learn_from, state.t, (k_act, k_env, k_update),
            state.sac, sac.penalty(state.t, state.cost_penalty),
        )  # fmt: skip
        state = state.replace(
            sac=learner, env_state=env_state, obs=ts.obs, buffer=buffer, t=state.t + 1, key=key
        )
        return state, metrics

    def chunk(state: CollectorState) -> tuple[CollectorState, dict]:
        state, m = jax.lax.scan(env_step, state, None, length=n_steps)
        penalty = sac.penalty(state.t - 1, state.cost_penalty)
        return state, chunk_means(m, int(config.updates_per_step), penalty=penalty)

    return chunk


def _init_members(key: jax.Array, env, config, seeds) -> CollectorState:
    """States of the `train.Members` ``seeds``, every leaf [M, ...] (member j from
    ``fold_in(key, seeds[j])``), on the devices; ValueError first if they would not fit."""

    def init(k):
        return collector_init(k, env, config)

    check_memory(tree_bytes(jax.eval_shape(init, key)), len(seeds))  # before allocating
    state = jax.jit(jax.vmap(init))(jnp.stack([jax.random.fold_in(key, s) for s in seeds]))
    return place(set_leaves(state, seeds.hparams), len(seeds))[0]


def collect(
    key: jax.Array,
    env_name_or_env,
    config: ml_collections.ConfigDict,
    progress: Callable[[int, dict], None] | None = None,
    seeds=None,
    workdir=None,
    checkpoint_every: int = 20,
):
    """Runs the collector; returns (D_tau stream-major [n_envs * T rows], summary metrics).

    ``env_name_or_env`` is a downstream environment or its name (e.g. ``"ball-run"`` or
    ``"ball-run/downstream"``; ``"real:<task>"`` runs `host_collect.collect` on the real
    simulator, without ``seeds``). ``progress(transitions_done, chunk_metrics)`` is called
    between jitted chunks. ``seeds`` (a list, or a `train.Members` sweep of the collector's
    state leaves such as ``cost_penalty``): one vmapped program whose member j equals
    ``collect(fold_in(key, seeds[j]))``; returns D_tau with a leading seed axis and a list
    of summaries. ``workdir`` (one JAX collector): the whole collector state is checkpointed
    there every ``checkpoint_every`` chunks (the same steps in every process) and a stopped
    collection resumes from it, bit-identical.
    """
    validate_config(config)
    env = env_name_or_env
    if is_host(env):  # a real simulator: the host collector, whose bridge loads only here
        from scpr_jax.data.host_collect import collect as host_collect

        if seeds is not None:
            raise ValueError("seeds (vmapped collectors) need a JAX environment, not a real: one")
        return host_collect(key, env, config, progress)
    if isinstance(env, str):
        env = make(env if "/" in env else f"{env}/downstream")
    if env.form != "downstream":
        raise ValueError(f"collect needs the downstream form (goal observed), got {env.name!r}")
    n_steps, _, switch_t = schedule(config)
    if seeds is None:
        state = distinct_buffers(collector_init(key, env, config))
    else:
        seeds = seeds if isinstance(seeds, Members) else Members(tuple(seeds))
        state = _init_members(key, env, config, seeds)
    checkpoints = None if workdir is None or seeds is not None else Checkpoints(workdir, "collect")
    if checkpoints is not None and (restored := checkpoints.restore(state)) is not None:
        state = restored  # chunks are cut at the same steps as before: the same D_tau
    chunks = {}  # chunk length -> jitted chunk (a shorter last chunk compiles once more)
    t = int(np.max(fetch(state.t)))
    while t < n_steps:
        length = min(int(config.chunk_steps), n_steps - t)
        if length not in chunks:
            chunk = make_chunk(env, config, length)
            chunks[length] = jax.jit(chunk if seeds is None else jax.vmap(chunk), donate_argnums=0)
        state, metrics = chunks[length](state)
        t += length
        if progress is not None and is_writer():
            metrics = fetch(metrics)  # global arrays on several hosts
            progress(t * int(config.n_envs), {k: float(np.mean(v)) for k, v in metrics.items()})
        chunk_index = t // int(config.chunk_steps)  # full chunks so far (a short one ends)
        if checkpoints is not None and t < n_steps and chunk_index % checkpoint_every == 0:
            checkpoints.save(t, state)
            checkpoints.close()  # written before the next chunk reuses (donates) the buffers
    if seeds is None:
        return stream_major(state.buffer), summarize(
            stream_major(state.buffer), np.asarray(state.params.goals), switch_t
        )
    state = host_local(state)  # one full copy per process on several hosts
    traj = jax.vmap(stream_major)(state.buffer)
    goals = np.asarray(state.params.goals)
    summaries = [
        summarize(jax.tree.map(lambda x, j=j: x[j], traj), goals[j], switch_t)
        for j in range(len(seeds))
    ]
    return traj, summaries
