"""TD3 (Fujimoto et al., 2018) and TD3+BC (Fujimoto and Gu, 2021) for a high-level policy that
acts through a frozen skill (PAPER.md 3.6).

The actor outputs u = u_bound * tanh(MLP(s)); the frozen skill turns it into the environment
action a = execute(skill, s, u) (`scpr_jax.skill`), and the twin critic scores
Q(s, a) on environment actions, so pi_h is trained through Q and through pi_l. Offline TD3+BC
and online TD3 share `td3_update`; they differ in the leaves q_scale, bc_weight and beta_reg:

    L_pi = -lambda * mean Q1(s, a_pi) + bc_weight * mean ||a_pi - a_D||^2 + beta_reg * mean ||u||^2,
    lambda = q_scale / sg(mean |Q1(s, a_pi)|).

Widths, sizes, u_bound and policy_freq are static; the learning rate, gamma, tau, the loss
weights and the target-policy noise are float32 leaves (a sweep over them can be a vmap).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from scpr_jax.agents.sac import TwinQ, soft_update
from scpr_jax.agents.td3_config import (  # noqa: F401  (re-exported)
    td3_config,
    td3bc_config,
    validate_td3_config,
)
from scpr_jax.nets import MLP
from scpr_jax.optim import ADAM, adam_step
from scpr_jax.skill import Skill, execute


class Actor(nn.Module):
    """pi_h: s [..., O] -> u = u_bound * tanh(MLP(s)) [..., Z]."""

    hidden: tuple[int, ...]
    latent_size: int
    u_bound: float

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return self.u_bound * jnp.tanh(MLP(self.hidden, self.latent_size)(obs))


@struct.dataclass
class TD3State:
    """Actor, twin critic, their Polyak targets, Adam states and dynamic hyperparameters."""

    actor: dict
    critic: dict
    target_actor: dict
    target_critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    step: jax.Array  # [] int32 updates done
    lr: jax.Array  # [] Adam step size
    gamma: jax.Array  # [] discount
    tau: jax.Array  # [] Polyak rate of both targets
    beta_reg: jax.Array  # [] weight of the prior penalty ||u||^2
    q_scale: jax.Array  # [] numerator of lambda (bc_alpha offline, 200 online)
    bc_weight: jax.Array  # [] 1 for TD3+BC, 0 for online TD3
    target_noise: jax.Array  # [] std of the target-policy smoothing noise on env actions
    noise_clip: jax.Array  # [] clip of that noise
    omega: jax.Array  # [] offline: weight of the data's reward term (`offline.training_reward`)
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    latent_size: int = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)
    u_bound: float = struct.field(pytree_node=False)
    policy_freq: int = struct.field(pytree_node=False)  # critic updates per actor update

    @property
    def actor_net(self) -> Actor:
        return Actor(self.hidden, self.latent_size, self.u_bound)

    @property
    def critic_net(self) -> TwinQ:
        return TwinQ(self.hidden)


def td3_init(key, obs_size: int, latent_size: int, action_size: int, config, u_bound: float):
    """Fresh learner for [obs_size] observations, [latent_size] u and [action_size] actions.

    ``config`` is `td3bc_config` (q_scale = bc_alpha) or `td3_config` (q_scale field).
    """
    validate_td3_config(config)
    k_actor, k_critic = jax.random.split(key)
    hidden = tuple(int(w) for w in config.hidden)
    actor_net = Actor(hidden, int(latent_size), float(u_bound))
    actor = actor_net.init(k_actor, jnp.zeros((1, obs_size)))
    critic = TwinQ(hidden).init(k_critic, jnp.zeros((1, obs_size)), jnp.zeros((1, action_size)))
    q_scale = config.bc_alpha if "bc_alpha" in config else config.q_scale
    leaf = functools.partial(jnp.asarray, dtype=jnp.float32)
    return TD3State(
        actor=actor,
        critic=critic,
        target_actor=jax.tree.map(jnp.copy, actor),  # own buffers: donatable
        target_critic=jax.tree.map(jnp.copy, critic),
        actor_opt=ADAM.init(actor),
        critic_opt=ADAM.init(critic),
        step=jnp.asarray(0, jnp.int32),
        lr=leaf(config.lr),
        gamma=leaf(config.gamma),
        tau=leaf(config.tau),
        beta_reg=leaf(config.beta_reg),
        q_scale=leaf(q_scale),
        bc_weight=leaf(config.bc_weight),
        target_noise=leaf(config.target_noise),
        noise_clip=leaf(config.noise_clip),
        omega=leaf(0.0),  # set by `downstream.offline.initial_loop`
        hidden=hidden,
        latent_size=int(latent_size),
        action_size=int(action_size),
        u_bound=float(u_bound),
        policy_freq=int(config.policy_freq),
    )


def high_level_action(state: TD3State, actor: dict, obs: jax.Array) -> jax.Array:
    """u = pi_h(s) with actor variables ``actor``.  [..., O] -> [..., Z]."""
    return state.actor_net.apply(actor, obs)


def td_target(reward, terminated, next_q, gamma) -> jax.Array:
    """y = r + gamma * (1 - terminated) * min_j Q'_j(s', a').  [B], [B], [2, B] -> [B]."""
    return reward + gamma * (1.0 - terminated) * jnp.min(next_q, axis=0)


def smoothed_next_action(state: TD3State, batch: dict, key, skill: Skill) -> jax.Array:
    """a' = clip(execute(s', pi_h'(s')) + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2).  [B, A]."""
    u = high_level_action(state, state.target_actor, batch["next_obs"])
    a = execute(skill, batch["next_obs"], u)
    eps = state.target_noise * jax.random.normal(key, a.shape)
    return jnp.clip(a + jnp.clip(eps, -state.noise_clip, state.noise_clip), -1.0, 1.0)


def critic_target(state: TD3State, batch: dict, key, skill: Skill) -> jax.Array:
    """Target y of the twin critic on a [B]-batch (target networks, smoothed a').  -> [B]."""
    next_action = smoothed_next_action(state, batch, key, skill)
    next_q = state.critic_net.apply(state.target_critic, batch["next_obs"], next_action)
    terminated = batch["terminated"].astype(next_q.dtype)
    return td_target(batch["reward"], terminated, next_q, state.gamma)


def critic_loss(critic: dict, state: TD3State, batch: dict, y: jax.Array):
    """L_Q = mean_B sum_j (Q_j(s, a_D) - y)^2 with y held fixed.  -> ([], metrics)."""
    q = state.critic_net.apply(critic, batch["obs"], batch["action"])  # [2, B]
    loss = jnp.mean(jnp.sum(jnp.square(q - jax.lax.stop_gradient(y)), axis=0))
    return loss, {"critic_loss": loss, "q_mean": jnp.mean(q), "target_q": jnp.mean(y)}


def first_q(state: TD3State, critic: dict, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Q1(s, a) alone (the actor never needs Q2).  [..., O], [..., A] -> [...]."""
    q1 = MLP(state.hidden, 1)  # TwinQ's first head, a submodule named MLP_0
    return q1.apply({"params": critic["params"]["MLP_0"]}, jnp.concatenate([obs, action], -1))[
        ..., 0
    ]


def actor_loss(actor: dict, state: TD3State, batch: dict, skill: Skill):
    """L_pi of the module docstring with a_pi = execute(skill, s, pi_h(s)).  -> ([], metrics)."""
    u = high_level_action(state, actor, batch["obs"])
    a_pi = execute(skill, batch["obs"], u)
    q1 = first_q(state, state.critic, batch["obs"], a_pi)
    lam = state.q_scale / jax.lax.stop_gradient(jnp.maximum(jnp.mean(jnp.abs(q1)), 1e-6))
    bc = jnp.mean(jnp.sum(jnp.square(a_pi - batch["action"]), axis=-1))
    u_sq = jnp.mean(jnp.sum(jnp.square(u), axis=-1))
    loss = -lam * jnp.mean(q1) + state.bc_weight * bc + state.beta_reg * u_sq
    metrics = {
        "actor_loss": loss,
        "bc_mse": bc,
        "u_norm": jnp.mean(jnp.linalg.norm(u, axis=-1)),
        "lambda": lam,
    }
    return loss, metrics


def td3_update(state: TD3State, batch: dict, key, skill: Skill) -> tuple[TD3State, dict]:
    """One TD3(+BC) step: critic, then (every policy_freq steps) actor and both targets.

    ``batch``: obs [B, O], action [B, A], reward [B], next_obs [B, O], terminated [B].
    ``skill`` is frozen: only the state's actor and critic parameters are differentiated.
    """
    y = critic_target(state, batch, key, skill)
    grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(state.critic, state, batch, y)
    critic, critic_opt = adam_step(state.critic, grads, state.critic_opt, state.lr)
    state = state.replace(critic=critic, critic_opt=critic_opt)

    grads, actor_metrics = jax.grad(actor_loss, has_aux=True)(state.actor, state, batch, skill)
    actor, actor_opt = adam_step(state.actor, grads, state.actor_opt, state.lr)
    delayed = (
        actor,
        actor_opt,
        soft_update(state.target_actor, actor, state.tau),
        soft_update(state.target_critic, critic, state.tau),
    )
    if state.policy_freq > 1:  # a mask, not lax.cond: under a seed vmap both sides run anyway
        current = (state.actor, state.actor_opt, state.target_actor, state.target_critic)
        now = state.step % state.policy_freq == 0
        delayed = jax.tree.map(lambda new, old: jnp.where(now, new, old), delayed, current)
    actor, actor_opt, target_actor, target_critic = delayed
    state = state.replace(
        actor=actor,
        actor_opt=actor_opt,
        target_actor=target_actor,
        target_critic=target_critic,
        step=state.step + 1,
    )
    return state, {**critic_metrics, **actor_metrics}
