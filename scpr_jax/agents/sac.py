"""Soft actor-critic (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications").

Tanh-Gaussian actor, twin Q critics with Polyak-averaged targets and automatic temperature
(target entropy -action_size). `sac_init` builds an immutable `SACState`; `sac_update` does
one gradient step on the critics, the actor and the temperature (Adam, one step size lr for
all three), then the target update. Network widths and the action size are static fields of
the state (they fix shapes); lr, gamma, tau and the target entropy are float32 leaves (a
sweep over them can be a vmap axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from scpr_jax.nets import MLP
from scpr_jax.optim import ADAM, adam_step

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@struct.dataclass
class Transition:
    """A minibatch of transitions for SAC."""

    obs: jax.Array  # [B, obs_size]
    action: jax.Array  # [B, action_size] in [-1, 1]
    reward: jax.Array  # [B] training reward
    next_obs: jax.Array  # [B, obs_size] (the final observation at an episode end)
    terminated: jax.Array  # [B] 1.0 where the next state is terminal (no bootstrap)


class Actor(nn.Module):
    """obs [..., obs_size] -> (mean, log_std), each [..., action_size] (pre-tanh Gaussian)."""

    hidden: Sequence[int]
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw = jnp.split(MLP(self.hidden, 2 * self.action_size)(obs), 2, axis=-1)
        # smooth squashing instead of clipping keeps gradients for log_std at the bounds
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


class TwinQ(nn.Module):
    """(obs [..., obs_size], action [..., action_size]) -> Q values [2, ...]."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        return jnp.stack([MLP(self.hidden, 1)(x)[..., 0] for _ in range(2)])


@struct.dataclass
class SACState:
    """Parameters, targets, optimiser states and temperature of one SAC learner."""

    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    actor_opt_state: optax.OptState
    critic_opt_state: optax.OptState
    alpha_opt_state: optax.OptState
    log_alpha: jax.Array  # [] log temperature
    step: jax.Array  # [] int32 updates done
    lr: jax.Array  # [] Adam step size of the actor, the critics and the temperature
    gamma: jax.Array  # [] discount
    tau: jax.Array  # [] Polyak rate of the target critics
    target_entropy: jax.Array  # [] H_target, -action_size by default
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)

    @property
    def actor(self) -> Actor:
        return Actor(self.hidden, self.action_size)

    @property
    def critic(self) -> TwinQ:
        return TwinQ(self.hidden)


def tanh_gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log pi(tanh u) = sum_i [log N(u_i; mean_i, std_i^2) - log(1 - tanh(u_i)^2)].

    Shapes [..., A] -> [...]. log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) stays
    finite for large |u|.
    """
    z = (u - mean) * jnp.exp(-log_std)
    log_normal = -0.5 * jnp.square(z) - log_std - 0.5 * np.log(2.0 * np.pi)
    log_det = 2.0 * (np.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(log_normal - log_det, axis=-1)


def sample_action(
    actor_params: dict, state: SACState, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Reparameterised a = tanh(mean + std * eps) and log pi(a|s); [..., O] -> [..., A], [...]."""
    mean, log_std = state.actor.apply(actor_params, obs)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)


def critic_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_q: jax.Array,
    next_log_prob: jax.Array,
    alpha: jax.Array,
    gamma: jax.Array,
) -> jax.Array:
    """y = r + gamma * (1 - terminated) * (min_j Q'_j(s', a') - alpha * log pi(a'|s')); [B].

    ``next_q`` is [2, B] (both target critics at a' ~ pi(.|s')).
    """
    soft_value = jnp.min(next_q, axis=0) - alpha * next_log_prob
    return reward + gamma * (1.0 - terminated) * soft_value


def critic_loss(
    critic_params: dict, state: SACState, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """L_Q = mean_B sum_j 0.5 * (Q_j(s, a) - sg(y))^2 with y from `critic_target`."""
    next_action, next_log_prob = sample_action(state.actor_params, state, batch.next_obs, key)
    next_q = state.critic.apply(state.target_critic_params, batch.next_obs, next_action)
    alpha = jnp.exp(state.log_alpha)
    y = critic_target(batch.reward, batch.terminated, next_q, next_log_prob, alpha, state.gamma)
    q = state.critic.apply(critic_params, batch.obs, batch.action)
    loss = 0.5 * jnp.mean(jnp.sum(jnp.square(q - jax.lax.stop_gradient(y)), axis=0))
    return loss, {"critic_loss": loss, "q": jnp.mean(q), "target_q": jnp.mean(y)}


def actor_loss(
    actor_params: dict, state: SACState, batch: Transition, key: jax.Array
) -> tuple[jax.Array, dict]:
    """L_pi = mean_B [alpha * log pi(a|s) - min_j Q_j(s, a)], a ~ pi(.|s) reparameterised."""
    action, log_prob = sample_action(actor_params, state, batch.obs, key)
    q = jnp.min(state.critic.apply(state.critic_params, batch.obs, action), axis=0)
    alpha = jnp.exp(state.log_alpha)
    loss = jnp.mean(alpha * log_prob - q)
    return loss, {"actor_loss": loss, "entropy": -jnp.mean(log_prob)}


def alpha_loss(
    log_alpha: jax.Array, entropy: jax.Array, target_entropy: jax.Array
) -> tuple[jax.Array, dict]:
    """L_alpha = alpha * (H - H_target) with H = -mean log pi held fixed (alpha = exp log_alpha).

    Raises alpha when the policy's entropy H falls below H_target and lowers it otherwise.
    """
    alpha = jnp.exp(log_alpha)
    loss = alpha * jax.lax.stop_gradient(entropy - target_entropy)
    return loss, {"alpha_loss": loss, "alpha": alpha}


def soft_update(target: dict, online: dict, tau: jax.Array) -> dict:
    """Polyak averaging theta' <- (1 - tau) * theta' + tau * theta."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def sac_init(key: jax.Array, obs_size: int, action_size: int, config) -> SACState:
    """Fresh SAC learner; ``config`` provides hidden, lr, gamma, tau and init_alpha."""
    k_actor, k_critic = jax.random.split(key)
    hidden = tuple(int(w) for w in config.hidden)
    obs, action = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
    actor_params = Actor(hidden, action_size).init(k_actor, obs)
    critic_params = TwinQ(hidden).init(k_critic, obs, action)
    log_alpha = jnp.asarray(np.log(config.init_alpha), jnp.float32)
    return SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=jax.tree.map(jnp.copy, critic_params),  # own buffers: donatable
        actor_opt_state=ADAM.init(actor_params),
        critic_opt_state=ADAM.init(critic_params),
        alpha_opt_state=ADAM.init(log_alpha),
        log_alpha=log_alpha,
        step=jnp.asarray(0, jnp.int32),
        lr=jnp.asarray(config.lr, jnp.float32),
        gamma=jnp.asarray(config.gamma, jnp.float32),
        tau=jnp.asarray(config.tau, jnp.float32),
        target_entropy=jnp.asarray(-float(action_size), jnp.float32),
        hidden=hidden,
        action_size=int(action_size),
    )


def sac_update(state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
    """One SAC step (critics, actor, temperature, targets) on a [B]-batch of transitions."""
    k_critic, k_actor = jax.random.split(key)

    grads, critic_metrics = jax.grad(critic_loss, has_aux=True)(
        state.critic_params, state, batch, k_critic
    )
    critic_params, critic_opt_state = adam_step(
        state.critic_params, grads, state.critic_opt_state, state.lr
    )
    state = state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state)

    grads, actor_metrics = jax.grad(actor_loss, has_aux=True)(
        state.actor_params, state, batch, k_actor
    )
    actor_params, actor_opt_state = adam_step(
        state.actor_params, grads, state.actor_opt_state, state.lr
    )

    grads, alpha_metrics = jax.grad(alpha_loss, has_aux=True)(
        state.log_alpha, actor_metrics["entropy"], state.target_entropy
    )
    log_alpha, alpha_opt_state = adam_step(state.log_alpha, grads, state.alpha_opt_state, state.lr)
    state = state.replace(
        actor_params=actor_params,
        actor_opt_state=actor_opt_state,
        log_alpha=log_alpha,
        alpha_opt_state=alpha_opt_state,
        target_critic_params=soft_update(
            state.target_critic_params, state.critic_params, state.tau
        ),
        step=state.step + 1,
    )
    return state, {**critic_metrics, **actor_metrics, **alpha_metrics}
