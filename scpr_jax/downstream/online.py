"""Online TD3 of the high-level policy pi_h over a frozen skill (PAPER.md 3.6, 5).

``n_envs`` copies of the downstream form (goal observed, a random downstream goal per
episode, auto-reset) run vmapped. Behaviour: a = clip(execute(skill, s, pi_h(s)) + eps, -1, 1)
with eps ~ N(0, expl_noise^2); during the first ``warmup_steps`` transitions u is random
instead (u ~ warmup_u_std * N(0, I) clipped to +-u_bound for latent skills, a ~ U[-1, 1] for
the identity skill) and no noise is added, the analogue of TD3's random-action warm-up.
The replay buffer stores the executed ENV action (the critic is Q(s, a_env)) and the learning
reward r_new - cost_weight * cost (cost_weight 0: Task-Only and the skill methods; 10: Oracle).

Steps count transitions: a chunk of ``cfg.chunk`` transitions is chunk / n_envs vectorised
steps, each followed (after warm-up) by updates_per_step * n_envs `td3_update` calls, all in
one jitted ``lax.scan``. The buffer, the environments and the learner form the per-seed state
that `train_loop` vmaps and checkpoints; the frozen skill is the shared data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from scpr_jax.acting import act_store_learn, chunk_means, is_host, scan_updates
from scpr_jax.agents.td3 import (
    TD3State,
    high_level_action,
    td3_init,
    td3_update,
    validate_td3_config,
)
from scpr_jax.envs import make
from scpr_jax.envs.registry import REAL
from scpr_jax.skill import Skill, action_size, execute, latent_size, u_bound
from scpr_jax.train import LoopState, init_loop, seed_axis, train_loop
from scpr_jax.train.loop import Seeds

REWARDS = ("task", "oracle")


@struct.dataclass
class Replay:
    """Ring buffer of transitions (next_obs is the true final observation at episode ends)."""

    obs: jax.Array  # [C, O_full]
    action: jax.Array  # [C, A] executed environment action
    reward: jax.Array  # [C] learning reward r_new - cost_weight * cost
    cost: jax.Array  # [C] 0/1 cost indicator
    next_obs: jax.Array  # [C, O_full]
    terminated: jax.Array  # [C] float32, 1 only for true terminations (not truncations)


@struct.dataclass
class OnlineState:
    """One seed's learner, environments, replay buffer and counters."""

    td3: TD3State
    env_state: Any  # [n_envs] environment states
    obs: jax.Array  # [n_envs, O_full] current observations
    replay: Replay
    t: jax.Array  # [] int32 vectorised steps done
    expl_noise: jax.Array  # [] std of the exploration noise on env actions
    cost_weight: jax.Array  # [] weight of the cost in the learning reward


def _static(cfg) -> tuple:
    """(n_envs, vectorised steps per chunk, warm-up steps, updates per step, batch, C, u_std)."""
    n_envs = int(cfg.n_envs)
    if cfg.chunk % n_envs:
        raise ValueError(f"td3 config.chunk={cfg.chunk} must be a multiple of n_envs={n_envs}")
    if cfg.buffer_size < n_envs:
        raise ValueError(f"td3 config.buffer_size={cfg.buffer_size} must be >= n_envs={n_envs}")
    warmup_t = -(-int(cfg.warmup_steps) // n_envs)
    n_updates = int(cfg.updates_per_step) * n_envs  # updates per transition, as in the paper
    sizes = (int(cfg.chunk) // n_envs, warmup_t, n_updates, int(cfg.batch_size))
    return (n_envs, *sizes, int(cfg.buffer_size), float(cfg.warmup_u_std))


def online_init(key, env, skill: Skill, cfg, cost_weight: float = 0.0) -> OnlineState:
    """Fresh learner, ``cfg.n_envs`` reset environments and an empty buffer of one seed."""
    n_envs, capacity = int(cfg.n_envs), int(cfg.buffer_size)
    k_td3, k_env = jax.random.split(key)
    sizes = (env.obs_size, latent_size(skill), action_size(skill))
    td3 = td3_init(k_td3, *sizes, cfg, u_bound(skill))
    params = env.default_params()
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, n_envs), params)
    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
    replay = Replay(
        obs=zeros((capacity, env.obs_size)),
        action=zeros((capacity, env.action_size)),
        reward=zeros((capacity,)),
        cost=zeros((capacity,)),
        next_obs=zeros((capacity, env.obs_size)),
        terminated=zeros((capacity,)),
    )
    leaf = functools.partial(jnp.asarray, dtype=jnp.float32)
    return OnlineState(
        td3=td3, env_state=env_state, obs=obs, replay=replay, t=jnp.asarray(0, jnp.int32),
        expl_noise=leaf(cfg.expl_noise), cost_weight=leaf(cost_weight),
    )  # fmt: skip


def behaviour_action(state: OnlineState, skill: Skill, obs, key, warm, u_std) -> jax.Array:
    """Exploratory env action (module docstring); ``warm`` selects the random warm-up.

    obs [N, O_full], warm [] bool, u_std [] -> [N, A] in [-1, 1].
    """
    k_u, k_eps = jax.random.split(key)
    u_pi = high_level_action(state.td3, state.td3.actor, obs)
    if skill.kind == "identity":
        u_rand = jax.random.uniform(k_u, u_pi.shape, minval=-1.0, maxval=1.0)
    else:
        bound = u_bound(skill)
        u_rand = jnp.clip(u_std * jax.random.normal(k_u, u_pi.shape), -bound, bound)
    a = execute(skill, obs, jnp.where(warm, u_rand, u_pi))
    eps = state.expl_noise * jax.random.normal(k_eps, a.shape)
    return jnp.clip(a + jnp.where(warm, 0.0, eps), -1.0, 1.0)


def sample_replay(replay: Replay, filled, key, size: int) -> dict:
    """Uniform [size] minibatch of `td3_update` from the first ``filled`` rows."""
    i = jax.random.randint(key, (size,), 0, filled)
    fields = ("obs", "action", "reward", "next_obs", "terminated")
    return {name: getattr(replay, name)[i] for name in fields}


@functools.cache
def _chunk(env_name: str, n_envs, n_steps, warmup_t, n_updates, batch_size, capacity, u_std):
    """Cached so that runs with equal static settings share one compiled chunk."""
    env = make(env_name)
    params = env.default_params()
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def train(td3, replay, filled, skill, key):
        def one(td3, key):
            k_batch, k_update = jax.random.split(key)
            return td3_update(
                td3, sample_replay(replay, filled, k_batch, batch_size), k_update, skill
            )

        return scan_updates(one, td3, key, n_updates)

    def env_step(s: OnlineState, key, skill: Skill):
        def store(action, ts):
            row = Replay(
                obs=s.obs, action=action, reward=ts.reward - s.cost_weight * ts.cost,
                cost=ts.cost, next_obs=ts.info["final_obs"],
                terminated=ts.terminated.astype(jnp.float32),
            )  # fmt: skip
            i = (s.t * n_envs + jnp.arange(n_envs)) % capacity
            replay = jax.tree.map(lambda b, x: b.at[i].set(x), s.replay, row)
            return replay, jnp.minimum((s.t + 1) * n_envs, capacity)

        # the first policy step (t = warmup_t) already learns (TD3's schedule)
        td3, replay, env_state, ts, metrics = act_store_learn(
            lambda k, warm: behaviour_action(s, skill, s.obs, k, warm, u_std),
            lambda k, a: step_envs(jax.random.split(k, n_envs), s.env_state, a, params),
            store, train, warmup_t, warmup_t, s.t, jax.random.split(key, 3), s.td3, skill,
        )  # fmt: skip
        s = s.replace(td3=td3, env_state=env_state, obs=ts.obs, replay=replay, t=s.t + 1)
        return s, metrics

    def chunk(loop: LoopState, skill: Skill) -> tuple[LoopState, dict]:
        key, k_chunk = jax.random.split(loop.key)
        body = functools.partial(env_step, skill=skill)
        algo, m = jax.lax.scan(body, loop.algo, jax.random.split(k_chunk, n_steps))
        loop = LoopState(algo=algo, key=key, step=loop.step + n_steps * n_envs)
        return loop, chunk_means(m, n_updates)

    return chunk


def online_chunk(env_name: str, cfg) -> Callable[[LoopState, Skill], tuple[LoopState, dict]]:
    """The pure ``chunk(loop, skill)`` of `cfg.chunk` env steps (+ updates) for `train_loop`."""
    return _chunk(env_name, *_static(cfg))


def _check(env_name: str, env, skill: Skill, cfg, reward: str) -> None:
    if env.form != "downstream":
        raise ValueError(f"online training needs the downstream form, got {env_name!r}")
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; valid: {', '.join(REWARDS)}")
    if cfg.env != env_name.partition("/")[0]:
        raise ValueError(f"td3 config.env={cfg.env!r} does not match env_name={env_name!r}")
    if action_size(skill) != env.action_size or skill.obs_size > env.obs_size:
        raise ValueError(
            f"the {skill.kind!r} skill (obs_size {skill.obs_size}, {action_size(skill)} actions) "
            f"does not fit {env_name!r} ({env.obs_size} obs, {env.action_size} actions)"
        )
    expected = cfg.get("skill_kind", skill.kind)
    if skill.kind != expected:
        raise ValueError(
            f"method {cfg.get('method', '')!r} acts through a {expected!r} skill; got "
            f"{skill.kind!r}"
        )
    if reward != cfg.get("reward", reward):
        raise ValueError(f"method {cfg.get('method', '')!r} cannot train on the {reward!r} reward")


def check_jax_env(env_name: str) -> None:
    """ValueError for a ``real:`` (host-side) environment: online TD3 needs a JAX one."""
    if is_host(env_name):
        task = env_name.removeprefix(REAL).partition("/")[0]
        raise ValueError(
            f"online TD3 steps its environments inside jitted lax.scan chunks, so it cannot run "
            f"on the host-side real simulator {env_name!r}; run `scpr online` on the JAX-native "
            f"{task!r}, or the offline pipeline (`scpr run`) on {REAL}{task}"
        )


def initial_loop(key, env_name: str, skill: Skill, cfg, seeds: Seeds = 0, cost_weight=0.0):
    """Fresh `LoopState` of ``seeds`` (see `train.init_loop`) for `train_online`."""
    env = make(env_name)
    return init_loop(key, lambda k: online_init(k, env, skill, cfg, cost_weight), seeds)


def train_online(
    key: jax.Array,
    env_name: str,
    skill: Skill,
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    seeds: Seeds = 0,
    reward: str = "task",
    cost_weight: float = 10.0,
    evaluate: Callable[[LoopState], dict] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    checkpoint_every: int = 1,
) -> TD3State:
    """Trains pi_h by online TD3 (`td3_config` / `online_config`); resumes from ``workdir``.

    ``env_name``: a task (``"ball-run"``) or its downstream form. ``reward``: "task" learns
    from r_new, "oracle" from r_new - cost_weight * cost. ``seeds``: an int (unbatched state)
    or a list trained vmapped, each with its own environments and buffer. ``evaluate(loop)``
    runs every ``cfg.eval_every`` env steps and at the end; checkpoints every
    ``checkpoint_every`` chunks (they hold the whole buffer).
    """
    check_jax_env(env_name)
    validate_td3_config(cfg)
    env_name = env_name if "/" in env_name else f"{env_name}/downstream"
    _check(env_name, make(env_name), skill, cfg, reward)
    chunk = online_chunk(env_name, cfg)
    weight = float(cost_weight) if reward == "oracle" else 0.0
    loop = initial_loop(key, env_name, skill, cfg, seeds, weight)
    final = train_loop(
        "online", loop, chunk, skill, int(cfg.steps), int(cfg.chunk),
        workdir, n_seeds=seed_axis(seeds), evaluate=evaluate, eval_every=int(cfg.eval_every),
        checkpoint_every=checkpoint_every, progress=progress,
    )  # fmt: skip
    return final.algo.td3
