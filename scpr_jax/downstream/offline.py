"""Offline training of the high-level policy pi_h by TD3+BC on D_tau (PAPER.md 3.6, 5).

The downstream dataset keeps the goal in the observation. Its training reward is
r' = reward + omega * reward_term (`training_reward`): the data holds the two per-row terms
(computed by the caller) and omega is a leaf of the learner's state, so a sweep over omega is
a vmapped axis over one shared dataset. Task-Only and the skill methods: r_new, no term;
Oracle: r_new - w * cost (term -cost, omega = w = 10); RC(omega): r_new + omega (r_hat -
r_new); SOPL: r_new + w (r_psi - mean). The frozen skill travels with the data, so it is an
argument of the jitted chunk (shared by vmapped seeds), never a compile-time constant and
never part of the optimised state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from scpr_jax.agents.td3 import (
    TD3State,
    high_level_action,
    td3_init,
    td3_update,
    validate_td3_config,
)
from scpr_jax.data.types import Trajectories
from scpr_jax.skill import Skill, action_size, execute, latent_size, u_bound
from scpr_jax.train import LoopState, init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.loop import Seeds


@struct.dataclass
class OfflineData:
    """Downstream transitions (goal kept) and the frozen skill, on device."""

    obs: jax.Array  # [N, O_full]
    action: jax.Array  # [N, A]
    reward: jax.Array  # [N] base reward (r_new)
    reward_term: jax.Array  # [N] the term weighted by the state's omega (zeros: none)
    next_obs: jax.Array  # [N, O_full]
    terminated: jax.Array  # [N] float32
    skill: Skill


def offline_data(
    trajs: Trajectories, reward: jax.Array, skill: Skill, reward_term: jax.Array | None = None
) -> OfflineData:
    """D_tau with reward [N], reward_term [N] (default zeros) and the skill pi_h acts through."""
    n, obs_full = trajs.obs.shape
    reward = jnp.asarray(reward, jnp.float32)
    term = jnp.zeros_like(reward) if reward_term is None else jnp.asarray(reward_term, jnp.float32)
    for name, r in (("reward", reward), ("reward_term", term)):
        if r.shape != (n,):
            raise ValueError(f"{name} has shape {r.shape}; the trajectories need ({n},)")
    if trajs.action.shape[-1] != action_size(skill):
        raise ValueError(
            f"trajectory actions have {trajs.action.shape[-1]} features; the {skill.kind!r} "
            f"skill executes {action_size(skill)}"
        )
    if skill.obs_size > obs_full:
        raise ValueError(
            f"skill.obs_size={skill.obs_size} exceeds the {obs_full} observation features"
        )
    return OfflineData(
        obs=jnp.asarray(trajs.obs, jnp.float32),
        action=jnp.asarray(trajs.action, jnp.float32),
        reward=reward,
        reward_term=term,
        next_obs=jnp.asarray(trajs.next_obs, jnp.float32),
        terminated=jnp.asarray(trajs.terminated, jnp.float32),
        skill=skill,
    )


def offline_sampler(batch_size: int) -> Callable[[jax.Array, OfflineData], tuple[dict, Skill]]:
    """``sample(key, data) -> (batch, skill)`` with [batch_size] uniform rows (jit-safe)."""

    def sample(key: jax.Array, data: OfflineData) -> tuple[dict, Skill]:
        i = jax.random.randint(key, (batch_size,), 0, data.reward.shape[0])
        batch = {
            "obs": data.obs[i],
            "action": data.action[i],
            "reward": data.reward[i],
            "reward_term": data.reward_term[i],
            "next_obs": data.next_obs[i],
            "terminated": data.terminated[i],
        }
        return batch, data.skill

    return sample


def training_reward(omega: jax.Array, reward: jax.Array, reward_term: jax.Array) -> jax.Array:
    """r' = reward + omega * reward_term.  [], [B], [B] -> [B]."""
    return reward + omega * reward_term


def _update(state: TD3State, batch_skill: tuple[dict, Skill], key: jax.Array):
    batch, skill = batch_skill
    batch = {**batch, "reward": training_reward(state.omega, batch["reward"], batch["reward_term"])}
    return td3_update(state, batch, key, skill)


def offline_chunk(cfg: ml_collections.ConfigDict):
    """The pure ``chunk(loop, data)`` of `cfg.chunk` TD3+BC updates for `train_loop`."""
    return make_chunk(_update, offline_sampler(int(cfg.batch_size)), int(cfg.chunk))


def initial_loop(
    key: jax.Array, data: OfflineData, cfg, seeds: Seeds = 0, omega: float = 0.0
) -> LoopState:
    """Fresh `LoopState` of pi_h for ``seeds`` (see `train.init_loop`); reads data's shapes.

    ``omega`` weights the data's reward term; a `train.Members` sweep may override it per member.
    """
    skill, obs_size = data.skill, data.obs.shape[-1]

    def init(k):
        sizes = (obs_size, latent_size(skill), action_size(skill))
        return td3_init(k, *sizes, cfg, u_bound(skill)).replace(omega=jnp.float32(omega))

    return init_loop(key, init, seeds)


def train_offline(
    key: jax.Array,
    data: OfflineData,
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    seeds: Seeds = 0,
    evaluate: Callable[[LoopState], dict] | None = None,
    eval_every: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    omega: float = 0.0,
) -> TD3State:
    """Trains pi_h by TD3+BC (`td3bc_config`) on r' = reward + omega * reward_term of ``data``;
    resumes from ``workdir``.

    ``seeds``: one seed (an int; unbatched state) or a list of seeds trained vmapped on the
    shared data, every leaf then carrying a leading seed axis (see `train.init_loop`).
    ``evaluate(loop)`` is called by `train_loop` every ``eval_every`` updates and at the end.
    """
    validate_td3_config(cfg)
    expected = cfg.get("skill_kind", "identity")
    if data.skill.kind != expected:
        raise ValueError(
            f"method {cfg.method!r} acts through a {expected!r} skill; got {data.skill.kind!r}"
        )
    final = train_loop(
        "downstream", initial_loop(key, data, cfg, seeds, omega), offline_chunk(cfg), data,
        int(cfg.steps), int(cfg.chunk), workdir, n_seeds=seed_axis(seeds), evaluate=evaluate,
        eval_every=eval_every, progress=progress,
    )  # fmt: skip
    return final.algo


def act(state: TD3State, skill: Skill, obs_full: jax.Array) -> jax.Array:
    """Deterministic a = pi_l(s, z'(pi_h(s))) of one seed's state.  [..., O_full] -> [..., A]."""
    return execute(skill, obs_full, high_level_action(state, state.actor, obs_full))


def policy_fn(state: TD3State, skill: Skill) -> Callable[[jax.Array], jax.Array]:
    """``obs_full -> a_env`` for rollouts (one seed; vmap `act` over a seed axis instead)."""
    return functools.partial(act, state, skill)
