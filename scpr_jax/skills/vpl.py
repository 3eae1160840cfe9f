"""Safe-VPL skills: IQL on D_tau relabelled by the frozen Bradley-Terry decoder (PAPER.md 3.4).

Every sampled transition gets a fresh latent z' ~ p(z') = N(prior_mean, exp(prior_logvar))
from the VAE's learned prior; the skill sees [s, z'] and [s', z'] (goal stripped from s) and
is trained with reward (r_phi([s, z'], a) - mu_r) / sigma_r, where r_phi is the frozen
reward decoder and mu_r, sigma_r are computed once from `NORM_SAMPLES` draws before training.
The relabelling happens inside the sampler, i.e. inside the jitted scan of the shared loop,
on transitions that stay on device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from scpr_jax.agents.iql import IQLState, PolicyParams, iql_init, iql_update, validate_iql_config
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task, strip_goal
from scpr_jax.skill import Skill, latent_skill, skill_obs
from scpr_jax.skills.vae import RewardDecoder, VAEConfig, VAEParams
from scpr_jax.train import init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.loop import Seeds

NORM_SAMPLES = 10_000  # transitions used once for the reward mean and std


@struct.dataclass
class SkillData:
    """Goal-free D_tau plus the frozen decoder and prior, all on device."""

    obs: jax.Array  # [N, obs] goal-stripped s
    action: jax.Array  # [N, A]
    next_obs: jax.Array  # [N, obs] goal-stripped s'
    terminated: jax.Array  # [N] float32
    decoder: dict  # frozen r_phi variables
    prior_mean: jax.Array  # [Z]
    prior_logvar: jax.Array  # [Z]
    r_mean: jax.Array  # [] reward normaliser mu_r
    r_std: jax.Array  # [] reward normaliser sigma_r


def prior_sample(key: jax.Array, data: SkillData, n: int) -> jax.Array:
    """n independent draws z' ~ N(prior_mean, exp(prior_logvar)).  -> [n, Z]."""
    eps = jax.random.normal(key, (n, data.prior_mean.shape[-1]))
    return data.prior_mean + jnp.exp(0.5 * data.prior_logvar) * eps


def _raw_sample(key: jax.Array, data: SkillData, n: int, decoder: RewardDecoder):
    """n random rows with fresh prior latents and their unnormalised r_phi([s, z'], a)."""
    k_rows, k_z = jax.random.split(key)
    i = jax.random.randint(k_rows, (n,), 0, data.obs.shape[0])
    z = prior_sample(k_z, data, n)
    r = decoder.apply(data.decoder, data.obs[i], z, data.action[i])
    return i, z, r


def skill_sampler(batch_size: int, vae_config: VAEConfig) -> Callable[[jax.Array, SkillData], dict]:
    """``sample(key, data) -> batch`` of IQL transitions for `make_chunk` (pure, jit-safe)."""
    decoder = RewardDecoder(tuple(vae_config.decoder_hidden))

    def sample(key: jax.Array, data: SkillData) -> dict:
        i, z, r = _raw_sample(key, data, batch_size, decoder)
        return {
            "obs": skill_obs(data.obs[i], z),
            "action": data.action[i],
            "reward": (r - data.r_mean) / data.r_std,
            "next_obs": skill_obs(data.next_obs[i], z),
            "terminated": data.terminated[i],
        }

    return sample


def reward_stats(key: jax.Array, data: SkillData, vae_config: VAEConfig, n: int = NORM_SAMPLES):
    """Mean and std of r_phi([s, z'], a) over n random rows with prior latents.  -> ([], [])."""
    _, _, r = _raw_sample(key, data, n, RewardDecoder(tuple(vae_config.decoder_hidden)))
    return jnp.mean(r), jnp.maximum(jnp.std(r), 1e-6)


def skill_data(
    key: jax.Array,
    trajs: Trajectories,
    task: Task,
    vae_params: VAEParams,
    vae_config: VAEConfig,
    n_norm: int = NORM_SAMPLES,
) -> SkillData:
    """Goal-stripped D_tau with the frozen decoder and prior; ``key`` draws the normaliser's rows
    and latents (n_norm of each)."""
    full = task.obs_size + task.goal_obs_size
    if trajs.obs.shape[-1] != full:
        raise ValueError(
            f"trajectory observations have {trajs.obs.shape[-1]} features; task {task.name!r} "
            f"needs {full} (obs_size {task.obs_size} + goal features {task.goal_obs_size})"
        )
    if vae_params.prior_mean.shape != (vae_config.latent_dim,):
        raise ValueError(
            f"VAE prior has shape {vae_params.prior_mean.shape}; "
            f"vae_config.latent_dim={vae_config.latent_dim} (a single, unbatched VAE is needed)"
        )
    data = SkillData(
        obs=strip_goal(trajs.obs, task),
        action=trajs.action,
        next_obs=strip_goal(trajs.next_obs, task),
        terminated=trajs.terminated.astype(jnp.float32),
        decoder=vae_params.decoder,
        prior_mean=vae_params.prior_mean,
        prior_logvar=vae_params.prior_logvar,
        r_mean=jnp.zeros(()),
        r_std=jnp.ones(()),
    )
    r_mean, r_std = jax.jit(lambda k, d: reward_stats(k, d, vae_config, n_norm))(key, data)
    return data.replace(r_mean=r_mean, r_std=r_std)


def train_skills(
    key: jax.Array,
    trajs: Trajectories,
    task: Task,
    vae_params: VAEParams,
    vae_config: VAEConfig,
    iql_cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    progress: Callable[[int, int, dict], None] | None = None,
    seeds: Seeds = 0,
) -> IQLState:
    """Trains the latent-conditioned skills pi_l(a | s, z') by IQL; resumes from ``workdir``.

    ``seeds``: one seed (an int; unbatched state) or a list of seeds trained vmapped, every
    state leaf then carrying a leading seed axis (see `init_loop`). All seeds share the
    relabelled data and its reward normaliser.
    """
    validate_iql_config(iql_cfg)
    k_data, k_seeds = jax.random.split(key)
    data = skill_data(k_data, trajs, task, vae_params, vae_config)
    obs_size = task.obs_size + vae_config.latent_dim
    loop = init_loop(k_seeds, lambda k: iql_init(k, obs_size, task.action_size, iql_cfg), seeds)
    sample = skill_sampler(int(iql_cfg.batch_size), vae_config)
    chunk = make_chunk(iql_update, sample, int(iql_cfg.chunk))
    final = train_loop(
        "skills",
        loop,
        chunk,
        data,
        int(iql_cfg.steps),
        int(iql_cfg.chunk),
        workdir,
        n_seeds=seed_axis(seeds),
        progress=progress,
    )
    return final.algo


def vpl_skill(policy: PolicyParams, vae_params: VAEParams, obs_size: int) -> Skill:
    """Safe-VPL skill: the IQL policy's mean action tanh(MLP([s, z'])) with the VAE's prior."""
    prior = (vae_params.prior_mean, vae_params.prior_logvar)
    n_actions = int(policy.log_std.shape[-1])
    return latent_skill("iql", policy.mean, policy.hidden, n_actions, "relu", prior, obs_size)
