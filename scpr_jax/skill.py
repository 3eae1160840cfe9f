"""Frozen low-level skills pi_l(a | s, z') as executors of a high-level action u (PAPER.md 3.6).

The high-level policy outputs a standardised latent u with |u| <= 3, mapped to the skill's
latent by the learned prior, z' = mu_prior + sigma_prior * u, and the environment action is
the skill's deterministic action a = tanh(MLP([s_without_goal, z'])). A `Skill` carries the
network's weights plus the static description needed to apply them (kind, widths,
activation, goal-free observation size), so applying a skill needs no learner code: the IQL
policy mean (Safe-VPL) and the CPL policy decoder (Safe-CPL) are both such networks. A
`Skill` is an *input* of every update (never optimised state), so gradients reach pi_h
through pi_l but never pi_l. Baselines use the "identity" skill: u in [-1, 1] is the action.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from scpr_jax.nets import ACTIVATIONS, MLP

KINDS = ("identity", "iql", "cpl")  # identity; IQL policy mean (Safe-VPL); CPL decoder
LATENT_BOUND = 3.0  # |u| <= 3 prior standard deviations


@struct.dataclass
class Skill:
    """A frozen skill with its latent prior; the static fields say how to apply ``params``."""

    params: Any  # flax variables of the MLP on [s, z'] (None for "identity")
    prior_mean: jax.Array  # [Z] (identity: zeros(action_size))
    prior_std: jax.Array  # [Z] exp(0.5 * prior_logvar) (identity: ones)
    kind: str = struct.field(pytree_node=False, default="identity")
    obs_size: int = struct.field(pytree_node=False, default=0)  # goal-free observation size
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=())  # MLP widths
    n_actions: int = struct.field(pytree_node=False, default=0)  # environment action size
    activation: str = struct.field(pytree_node=False, default="relu")  # of the hidden layers


def skill_obs(obs: jax.Array, z: jax.Array) -> jax.Array:
    """Skill observation [s_without_goal, z'].  [..., obs], [..., Z] -> [..., obs + Z]."""
    return jnp.concatenate([obs, jnp.broadcast_to(z, obs.shape[:-1] + z.shape[-1:])], axis=-1)


def u_bound(skill: Skill) -> float:
    """Bound of the high-level action: 3.0 for latent skills, 1.0 for the identity skill."""
    return 1.0 if skill.kind == "identity" else LATENT_BOUND


def latent_size(skill: Skill) -> int:
    """Z, the size of the high-level action u."""
    return int(skill.prior_mean.shape[-1])


def action_size(skill: Skill) -> int:
    """Size of the environment action the skill executes."""
    return latent_size(skill) if skill.kind == "identity" else int(skill.n_actions)


def latent(skill: Skill, u: jax.Array) -> jax.Array:
    """z' = prior_mean + prior_std * u.  [..., Z] -> [..., Z]."""
    return skill.prior_mean + skill.prior_std * u


def policy_mean(params: Any, hidden, n_actions: int, activation: str, x: jax.Array):
    """tanh(MLP(x)) with the given widths and activation.  x [..., I] -> [..., n_actions]."""
    net = MLP(tuple(hidden), n_actions, activation=ACTIVATIONS[activation])
    return jnp.tanh(net.apply(params, x))


def execute(skill: Skill, obs_full: jax.Array, u: jax.Array) -> jax.Array:
    """Environment action of the frozen skill.  obs_full [..., O_full], u [..., Z] -> [..., A].

    The skill's weights are held constant (stop_gradient): derivatives flow to u only.
    """
    if skill.kind not in KINDS:
        raise ValueError(f"unknown skill kind {skill.kind!r}; valid kinds: {', '.join(KINDS)}")
    if skill.kind == "identity":
        return u
    params = jax.lax.stop_gradient(skill.params)
    obs = obs_full[..., : skill.obs_size]  # the goal is the tail of the downstream observation
    x = skill_obs(obs, latent(skill, u))
    return policy_mean(params, skill.hidden, skill.n_actions, skill.activation, x)


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


def latent_skill(
    kind: str, params: Any, hidden, n_actions: int, activation: str, prior, obs_size: int
) -> Skill:
    """A checked latent skill; ``prior`` = (mean [Z], logvar [Z]) of the VAE's learned prior."""
    mean, logvar = (jnp.asarray(x) for x in prior)
    if mean.ndim != 1 or logvar.shape != mean.shape:
        raise ValueError(
            f"VAE prior must be unbatched [Z] vectors; got mean {mean.shape}, logvar "
            f"{logvar.shape} (select one seed first)"
        )
    width = _input_width(params, kind)
    if width != obs_size + mean.shape[0]:
        raise ValueError(
            f"{kind} skill takes {width} input features; obs_size={obs_size} plus latent "
            f"size {mean.shape[0]} gives {obs_size + mean.shape[0]}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    std = jnp.exp(0.5 * logvar)
    statics = dict(kind=kind, obs_size=int(obs_size), hidden=tuple(int(w) for w in hidden))
    return Skill(params, mean, std, n_actions=int(n_actions), activation=activation, **statics)


def identity_skill(obs_size: int, action_size: int) -> Skill:
    """The baselines' executor: a = u with u in [-1, 1]^action_size."""
    if obs_size < 1 or action_size < 1:
        raise ValueError(f"obs_size={obs_size} and action_size={action_size} must be >= 1")
    zeros, ones = jnp.zeros(action_size), jnp.ones(action_size)
    return Skill(None, zeros, ones, kind="identity", obs_size=obs_size, n_actions=action_size)
