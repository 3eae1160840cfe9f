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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from scpr_jax.agents.sac import SACState, Transition, sac_init, sac_update, sample_action
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make
from scpr_jax.envs.registry import REAL
from scpr_jax.runs import is_writer

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


def _relabel_info(info: dict) -> dict:
    """Drops the episode statistics and final_obs: the rest recomputes any user's reward."""
    return {k: v for k, v in info.items() if not k.startswith("episode_") and k != "final_obs"}


def _row(obs, action, ts, n_streams: int) -> Trajectories:
    """One stored transition: next_obs is the episode's final obs when the step ends it."""
    return Trajectories(
        obs=obs,
        action=action,
        reward=ts.reward,
        cost=ts.cost,
        next_obs=ts.info["final_obs"],
        terminated=ts.terminated,
        truncated=ts.truncated,
        info=_relabel_info(ts.info),
        n_streams=n_streams,
    )


def _steps(config) -> tuple[int, int, int]:
    """(T, warmup_t, switch_t) in vectorised steps."""
    n_steps = int(config.total_steps) // int(config.n_envs)
    warmup_t = -(-int(config.warmup_steps) // int(config.n_envs))
    return n_steps, warmup_t, int(round(float(config.penalty_switch) * n_steps))


def collector_init(key: jax.Array, env, config) -> CollectorState:
    """Resets ``n_envs`` copies, builds the SAC learner and an empty [T, n_envs] buffer."""
    n_envs, (n_steps, _, _) = int(config.n_envs), _steps(config)
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
    row = _row(ts_shape.obs, action, ts_shape, n_envs)
    buffer = jax.tree.map(lambda s: jnp.zeros((n_steps, n_envs, *s.shape), s.dtype), row)
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


def sample_batch(
    buffer: Trajectories, filled: jax.Array, penalty: jax.Array, key: jax.Array, size: int
) -> Transition:
    """Uniform minibatch from the first ``filled`` rows, reward r_new - penalty * cost; [size]."""
    k_t, k_env = jax.random.split(key)
    i = jax.random.randint(k_t, (size,), 0, filled)
    j = jax.random.randint(k_env, (size,), 0, buffer.reward.shape[1])
    return Transition(
        obs=buffer.obs[i, j],
        action=buffer.action[i, j],
        reward=buffer.reward[i, j] - penalty * buffer.cost[i, j],
        next_obs=buffer.next_obs[i, j],
        terminated=buffer.terminated[i, j].astype(jnp.float32),
    )


def make_store_and_learn(config) -> Callable:
    """Pure ``f(sac, buffer, t, obs, cost_penalty, action, ts, key) -> (sac, buffer, metrics)``:
    writes row ``t`` of the [T, n_envs] buffer, then (after warm-up) ``updates_per_step`` SAC
    updates on rows < t + 1; the metrics of that vectorised step. Shared by the JAX collector
    and the host collector of the real simulators (`data.host_collect`)."""
    n_envs, updates = int(config.n_envs), int(config.updates_per_step)
    batch_size = int(config.batch_size)
    _, warmup_t, switch_t = _steps(config)

    def update(sac, buffer, filled, penalty, key):
        def one(sac, key):
            k_batch, k_update = jax.random.split(key)
            batch = sample_batch(buffer, filled, penalty, k_batch, batch_size)
            return sac_update(sac, batch, k_update)

        sac, metrics = jax.lax.scan(one, sac, jax.random.split(key, updates))
        return sac, jax.tree.map(jnp.mean, metrics)

    def skip(sac, buffer, filled, penalty, key):
        shapes = jax.eval_shape(update, sac, buffer, filled, penalty, key)[1]
        return sac, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def learn(sac, buffer, t, obs, cost_penalty, action, ts, key):
        row = _row(obs, action, ts, n_envs)
        buffer = jax.tree.map(lambda b, x: b.at[t].set(x), buffer, row)
        penalty = jnp.where(t >= switch_t, cost_penalty, 0.0)
        updated = t + 1 >= warmup_t
        sac, sac_metrics = jax.lax.cond(updated, update, skip, sac, buffer, t + 1, penalty, key)
        done = ts.info["episode_done"].astype(jnp.float32)
        metrics = {
            "reward": jnp.mean(ts.reward),
            "cost": jnp.mean(ts.cost),
            "episodes": jnp.sum(done),
            "episode_return_sum": jnp.sum(done * ts.info["episode_return"]),
            "episode_cost_sum": jnp.sum(done * ts.info["episode_cost"]),
            "updated": updated.astype(jnp.float32),
            **sac_metrics,
        }
        return sac, buffer, metrics

    return learn


def make_chunk(env, config, n_steps: int) -> Callable[[CollectorState], tuple]:
    """Pure ``chunk(state) -> (state, metrics)`` running ``n_steps`` vectorised steps.

    Each step acts (uniform random before warm-up, else the SAC policy) in all copies,
    writes the transitions at row ``t`` and, once warm-up is done, runs
    ``updates_per_step`` SAC updates. Metrics are chunk means (SAC ones over updated steps).
    """
    n_envs, updates = int(config.n_envs), int(config.updates_per_step)
    _, warmup_t, switch_t = _steps(config)
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    learn = make_store_and_learn(config)

    def env_step(state: CollectorState, _):
        key, k_act, k_env, k_update = jax.random.split(state.key, 4)
        k_pi, k_rand = jax.random.split(k_act)
        a_pi, _ = sample_action(state.sac.actor_params, state.sac, state.obs, k_pi)
        a_rand = jax.random.uniform(k_rand, a_pi.shape, minval=-1.0, maxval=1.0)
        action = jnp.where(state.t < warmup_t, a_rand, a_pi)
        ts, env_state = step_envs(
            jax.random.split(k_env, n_envs), state.env_state, action, state.params
        )
        sac, buffer, metrics = learn(
            state.sac, state.buffer, state.t, state.obs, state.cost_penalty, action, ts, k_update
        )
        state = state.replace(
            sac=sac, env_state=env_state, obs=ts.obs, buffer=buffer, t=state.t + 1, key=key
        )
        return state, metrics

    def chunk(state: CollectorState) -> tuple[CollectorState, dict]:
        state, m = jax.lax.scan(env_step, state, None, length=n_steps)
        updated = m.pop("updated")
        n_done, n_updated = jnp.sum(m.pop("episodes")), jnp.sum(updated)
        out = {
            "reward": jnp.mean(m.pop("reward")),
            "cost": jnp.mean(m.pop("cost")),
            "episodes": n_done,
            "episode_return": jnp.sum(m.pop("episode_return_sum")) / jnp.maximum(n_done, 1),
            "episode_cost": jnp.sum(m.pop("episode_cost_sum")) / jnp.maximum(n_done, 1),
            "penalty": jnp.where(state.t - 1 >= switch_t, state.cost_penalty, 0.0),
            "updates": n_updated * updates,
        }
        sac_means = {k: jnp.sum(v * updated) / jnp.maximum(n_updated, 1) for k, v in m.items()}
        return state, {**out, **sac_means}

    return chunk


def stream_major(buffer: Trajectories) -> Trajectories:
    """[T, n_envs, ...] -> [n_envs * T, ...]: rows s*T .. (s+1)*T - 1 are stream s."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:]), buffer)


def _goal_index(goal: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """Index of each row's goal in the goal set; goal [N, goal_size] -> [N] int."""
    unique, inverse = np.unique(goal, axis=0, return_inverse=True)
    nearest = np.argmin(((unique[:, None, :] - goals[None]) ** 2).sum(-1), axis=1)
    return nearest[inverse.reshape(-1)]


def summarize(traj: Trajectories, goals: np.ndarray, switch_t: int) -> dict:
    """Dataset statistics: sizes, unsafe (cost) fractions overall / per half / per goal index,
    and mean return (of r_new) and cost of the episodes ending in each half."""
    n_streams = traj.n_streams
    cost = np.asarray(traj.cost, np.float64).reshape(n_streams, -1)  # [S, T]
    reward = np.asarray(traj.reward, np.float64).reshape(n_streams, -1)
    done = np.asarray(traj.terminated | traj.truncated).reshape(n_streams, -1)
    second = np.broadcast_to(np.arange(cost.shape[1]) >= switch_t, cost.shape)
    goal = _goal_index(np.asarray(traj.info["goal"]), np.asarray(goals)).reshape(cost.shape)

    # episode k of stream s is the rows after its (k-1)-th end up to and including its k-th end
    episode = np.cumsum(done, axis=1) - done
    complete = episode < done.sum(axis=1, keepdims=True)
    offset = np.concatenate([[0], np.cumsum(done.sum(axis=1))[:-1]])[:, None]
    gid = (episode + offset)[complete]
    n_episodes = int(done.sum())
    ep_return = np.bincount(gid, weights=reward[complete], minlength=n_episodes)
    ep_cost = np.bincount(gid, weights=cost[complete], minlength=n_episodes)
    ep_second = second[done]  # done rows in (stream, t) order = episode order

    def by_goal(mask):
        count = np.bincount(goal[mask], minlength=len(goals))
        unsafe = np.bincount(goal[mask], weights=cost[mask], minlength=len(goals))
        return [float(u / c) if c else float("nan") for u, c in zip(unsafe, count, strict=True)]

    def mean(x):
        return float(np.mean(x)) if x.size else float("nan")

    summary = {
        "transitions": int(cost.size),
        "episodes": n_episodes,
        "unsafe_fraction": mean(cost),
        "unsafe_fraction_by_goal": by_goal(np.ones_like(second)),
        "goals": np.asarray(goals).tolist(),
    }
    for half, mask, ep_mask in (("first", ~second, ~ep_second), ("second", second, ep_second)):
        summary[f"unsafe_fraction_{half}_half"] = mean(cost[mask])
        summary[f"unsafe_fraction_by_goal_{half}_half"] = by_goal(mask)
        summary[f"episode_return_{half}_half"] = mean(ep_return[ep_mask])
        summary[f"episode_cost_{half}_half"] = mean(ep_cost[ep_mask])
        summary[f"unsafe_episode_fraction_{half}_half"] = mean(ep_cost[ep_mask] > 0)
    return summary


def distinct_buffers(tree):
    """``tree`` with every leaf in its own buffer: donation rejects a buffer passed twice, and
    an eager reset may return one array in two places (Brax Swimmer's obs and state)."""
    return jax.tree.map(jnp.copy, tree)


def _init_members(key: jax.Array, env, config, seeds) -> CollectorState:
    """States of the `train.Members` ``seeds``, every leaf [M, ...] (member j from
    ``fold_in(key, seeds[j])``), on the devices; ValueError first if they would not fit."""
    from scpr_jax.train.sweep import check_memory, place, set_leaves, tree_bytes

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
):
    """Runs the collector; returns (D_tau stream-major [n_envs * T rows], summary metrics).

    ``env_name_or_env`` is a downstream environment or its name (e.g. ``"ball-run"`` or
    ``"ball-run/downstream"``; ``"real:<task>"`` runs `host_collect.collect` on the real
    simulator, without ``seeds``). ``progress(transitions_done, chunk_metrics)`` is called
    between jitted chunks. ``seeds`` (a list, or a `train.Members` sweep of the collector's
    state leaves such as ``cost_penalty``): one vmapped program whose member j equals
    ``collect(fold_in(key, seeds[j]))``; returns D_tau with a leading seed axis and a list
    of summaries.
    """
    from scpr_jax.train.distributed import fetch, host_local
    from scpr_jax.train.sweep import Members

    validate_config(config)
    env = env_name_or_env
    if (env if isinstance(env, str) else env.name).startswith(REAL):  # host simulators
        from scpr_jax.data.host_collect import collect as host_collect

        if seeds is not None:
            raise ValueError("seeds (vmapped collectors) need a JAX environment, not a real: one")
        return host_collect(key, env, config, progress)
    if isinstance(env, str):
        env = make(env if "/" in env else f"{env}/downstream")
    if env.form != "downstream":
        raise ValueError(f"collect needs the downstream form (goal observed), got {env.name!r}")
    n_steps, _, switch_t = _steps(config)
    if seeds is None:
        state = distinct_buffers(collector_init(key, env, config))
    else:
        seeds = seeds if isinstance(seeds, Members) else Members(tuple(seeds))
        state = _init_members(key, env, config, seeds)
    chunks = {}  # chunk length -> jitted chunk (a shorter last chunk compiles once more)
    t = 0
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
