"""Frozen low-level skills pi_l(a | s, z') as executors of a high-level action u (PAPER.md 3.6).

The high-level policy outputs a standardised latent u with |u| <= 3, mapped to the skill's
latent by the learned prior, z' = mu_prior + sigma_prior * u, and the environment action is
the skill's deterministic action a = pi_l(s_without_goal, z'). A `Skill` is an *input* of
every update (never optimised state), so gradients reach pi_h through pi_l but never pi_l.
Baselines without skills use the "identity" skill: u in [-1, 1] is the environment action.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from scpr_jax.agents import iql
from scpr_jax.skills import cpl
from scpr_jax.skills.vae import VAEParams
from scpr_jax.skills.vpl import skill_obs

KINDS = ("identity", "iql", "cpl")
LATENT_BOUND = 3.0  # |u| <= 3 prior standard deviations


@struct.dataclass
class Skill:
    """A frozen skill with its latent prior; static ``kind`` selects the executor."""

    params: Any  # iql.PolicyParams, cpl.PolicyParams, or None for "identity"
    prior_mean: jax.Array  # [Z] (identity: zeros(action_size))
    prior_std: jax.Array  # [Z] exp(0.5 * prior_logvar) (identity: ones)
    kind: str = struct.field(pytree_node=False, default="identity")
    obs_size: int = struct.field(pytree_node=False, default=0)  # goal-free observation size


def u_bound(skill: Skill) -> float:
    """Bound of the high-level action: 3.0 for latent skills, 1.0 for the identity skill."""
    return 1.0 if skill.kind == "identity" else LATENT_BOUND


def latent_size(skill: Skill) -> int:
    """Z, the size of the high-level action u."""
    return int(skill.prior_mean.shape[-1])


def action_size(skill: Skill) -> int:
    """Size of the environment action the skill executes."""
    if skill.kind == "iql":
        return int(skill.params.log_std.shape[-1])
    if skill.kind == "cpl":
        return int(skill.params.action_size)
    return latent_size(skill)


def latent(skill: Skill, u: jax.Array) -> jax.Array:
    """z' = prior_mean + prior_std * u.  [..., Z] -> [..., Z]."""
    return skill.prior_mean + skill.prior_std * u


def execute(skill: Skill, obs_full: jax.Array, u: jax.Array) -> jax.Array:
    """Environment action of the frozen skill.  obs_full [..., O_full], u [..., Z] -> [..., A].

    The skill's weights are held constant (stop_gradient): derivatives flow to u only.
    """
    if skill.kind == "identity":
        return u
    params = jax.lax.stop_gradient(skill.params)
    obs = obs_full[..., : skill.obs_size]  # the goal is the tail of the downstream observation
    z = latent(skill, u)
    if skill.kind == "iql":
        return iql.policy_action(params, skill_obs(obs, z))
    if skill.kind == "cpl":
        return cpl.cpl_action(params, obs, z)
    raise ValueError(f"unknown skill kind {skill.kind!r}; valid kinds: {', '.join(KINDS)}")


def _input_width(params: Any, kind: str) -> int:
    """Input features of the first dense layer (the first kernel in flattening order)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kernels = [x for path, x in leaves if "kernel" in jax.tree_util.keystr(path)]
    if not kernels or jnp.ndim(kernels[0]) != 2:
        raise ValueError(
            f"{kind} skill parameters must be one unbatched network (first kernel of shape "
            f"[in, out]); got {[jnp.shape(k) for k in kernels[:1]]} (select one seed first)"
        )
    return int(kernels[0].shape[0])


def _prior(vae_params: VAEParams) -> tuple[jax.Array, jax.Array]:
    mean, logvar = jnp.asarray(vae_params.prior_mean), jnp.asarray(vae_params.prior_logvar)
    if mean.ndim != 1 or logvar.shape != mean.shape:
        raise ValueError(
            f"VAE prior must be unbatched [Z] vectors; got mean {mean.shape}, logvar "
            f"{logvar.shape} (select one seed first)"
        )
    return mean, jnp.exp(0.5 * logvar)


def _latent_skill(kind: str, params: Any, vae_params: VAEParams, obs_size: int) -> Skill:
    mean, std = _prior(vae_params)
    width = _input_width(params, kind)
    if width != obs_size + mean.shape[0]:
        raise ValueError(
            f"{kind} skill takes {width} input features; obs_size={obs_size} plus latent "
            f"size {mean.shape[0]} gives {obs_size + mean.shape[0]}"
        )
    return Skill(params=params, prior_mean=mean, prior_std=std, kind=kind, obs_size=obs_size)


def identity_skill(obs_size: int, action_size: int) -> Skill:
    """The baselines' executor: a = u with u in [-1, 1]^action_size."""
    if obs_size < 1 or action_size < 1:
        raise ValueError(f"obs_size={obs_size} and action_size={action_size} must be >= 1")
    zeros, ones = jnp.zeros(action_size), jnp.ones(action_size)
    return Skill(params=None, prior_mean=zeros, prior_std=ones, kind="identity", obs_size=obs_size)


def vpl_skill(iql_policy: iql.PolicyParams, vae_params: VAEParams, obs_size: int) -> Skill:
    """Safe-VPL skill: the IQL policy's mean action on [s, z'] with the VAE's learned prior."""
    return _latent_skill("iql", iql_policy, vae_params, obs_size)


def cpl_skill(cpl_params: cpl.PolicyParams, vae_params: VAEParams, obs_size: int) -> Skill:
    """Safe-CPL skill: the policy decoder mu_theta([s, z']) with the VAE's learned prior."""
    return _latent_skill("cpl", cpl_params, vae_params, obs_size)
