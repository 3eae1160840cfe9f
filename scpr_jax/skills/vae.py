"""Preference-set VAE: q(z' | S) encoder, learned prior p(z'), Bradley-Terry reward decoder.

PAPER.md 3.3-3.4. A preference *set* S holds P pairs of L-step segments with labels y.
Shapes for one set (the functions here are written for one set and vmapped over a batch):

    feats [P, L, 2 * obs + 1]   per-step encoder input [s1_t, s2_t, y]
    obs1, obs2 [P, L, obs]      goal-free observations of the two segments
    act1, act2 [P, L, act]      their actions
    y [P]                       1.0 if sigma1 is preferred
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from scpr_jax.nets import MLP, leaky_relu
from scpr_jax.optim import ADAM, adam_step
from scpr_jax.skills import losses
from scpr_jax.train.accumulate import microbatch_count, microbatch_grad

LOGVAR_MIN, LOGVAR_MAX = -20.0, 4.0


class _HeadDense(nn.Module):
    """x @ W + b with a one-head DenseGeneral's kernel and bias shapes, as a 2-D matmul."""

    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = x.shape[-1]
        n_out = math.prod(self.kernel_shape) // n_in

        def init(key, shape, dtype=jnp.float32):  # as DenseGeneral: lecun_normal of [in, out]
            return nn.initializers.lecun_normal()(key, (n_in, n_out), dtype).reshape(shape)

        kernel = self.param("kernel", init, self.kernel_shape)
        bias = self.param("bias", nn.initializers.zeros, self.bias_shape)
        return x @ kernel.reshape(n_in, n_out) + bias.reshape(n_out)


class SelfAttention(nn.Module):
    """Single-head self-attention over axis -2: ``nn.SelfAttention(num_heads=1)``'s math
    and parameters (query/key/value/out), computed with 2-D projections.

    Flax's version keeps a head axis of size 1 through every projection, which on CPU
    costs layout copies in the backward pass (about 40% of a small-preset VAE update).
    x [..., T, H] -> [..., T, H].
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.shape[-1]
        q, k, v = (_HeadDense((h, 1, h), (1, h), name=n)(x) for n in ("query", "key", "value"))
        logits = (q / jnp.sqrt(h).astype(x.dtype)) @ jnp.swapaxes(k, -1, -2)  # [..., T, T]
        return _HeadDense((1, h, h), (h,), name="out")(jax.nn.softmax(logits, axis=-1) @ v)


class SetEncoder(nn.Module):
    """Linear -> attention over time -> mean -> attention over pairs -> mean -> Gaussian."""

    hidden: int
    latent_dim: int
    embed_activation: bool = True

    @nn.compact
    def __call__(self, feats: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.Dense(self.hidden)(feats)  # [P, L, H]
        if self.embed_activation:
            # lets per-step features mix y with the states (e.g. "sigma1 faster and preferred");
            # with a purely linear embedding only the attention softmax is nonlinear
            h = leaky_relu(h)
        h = SelfAttention(name="time_attention")(h).mean(axis=-2)  # [P, H]
        # no positional encoding over pairs: the set representation is permutation-invariant
        h = SelfAttention(name="pair_attention")(h).mean(axis=-2)  # [H]
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        logvar = jnp.clip(nn.Dense(self.latent_dim, name="logvar")(h), LOGVAR_MIN, LOGVAR_MAX)
        return mean, logvar


class RewardDecoder(nn.Module):
    """r_phi([s, z', a]): MLP with LeakyReLU(0.2)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array, z: jax.Array, act: jax.Array) -> jax.Array:
        z = jnp.broadcast_to(z, obs.shape[:-1] + z.shape[-1:])
        x = jnp.concatenate([obs, z, act], axis=-1)
        return MLP(self.hidden, 1, activation=leaky_relu)(x)[..., 0]


@struct.dataclass
class VAEParams:
    encoder: Any
    decoder: Any
    prior_mean: jax.Array  # [Z]
    prior_logvar: jax.Array  # [Z]


@struct.dataclass
class VAEState:
    params: VAEParams
    opt_state: Any
    step: jax.Array  # [] int32
    lr: jax.Array  # [] Adam step size (leaves: sweepable without recompiling)
    kl_weight: jax.Array  # [] weight of KL(q || p), times the cyclical annealer


@struct.dataclass
class VAEConfig:
    """Static model settings (closed over) and the loss weights."""

    latent_dim: int = struct.field(pytree_node=False, default=4)
    hidden: int = struct.field(pytree_node=False, default=256)
    embed_activation: bool = struct.field(pytree_node=False, default=True)
    decoder_hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(256, 256))
    total_steps: int = struct.field(pytree_node=False, default=1000)  # for the KL annealer
    n_cycles: int = struct.field(pytree_node=False, default=4)
    lr: float = struct.field(pytree_node=False, default=3e-4)
    microbatches: int = struct.field(pytree_node=False, default=0)  # 0: automatic (accumulate)
    kl_weight: float = 1e-3


def _modules(config: VAEConfig) -> tuple[SetEncoder, RewardDecoder]:
    encoder = SetEncoder(config.hidden, config.latent_dim, config.embed_activation)
    return encoder, RewardDecoder(config.decoder_hidden)


def vae_init(key: jax.Array, example: dict, config: VAEConfig) -> VAEState:
    """Initial parameters from one example set (unbatched arrays as in the module doc)."""
    encoder, decoder = _modules(config)
    k_enc, k_dec = jax.random.split(key)
    z = jnp.zeros(config.latent_dim)
    params = VAEParams(
        encoder=encoder.init(k_enc, example["feats"]),
        decoder=decoder.init(k_dec, example["obs1"], z, example["act1"]),
        prior_mean=jnp.zeros(config.latent_dim),
        prior_logvar=jnp.zeros(config.latent_dim),
    )
    return VAEState(
        params=params,
        opt_state=ADAM.init(params),
        step=jnp.asarray(0, jnp.int32),
        lr=jnp.asarray(config.lr, jnp.float32),
        kl_weight=jnp.asarray(config.kl_weight, jnp.float32),
    )


def posterior(params: VAEParams, feats: jax.Array, config: VAEConfig):
    """Posterior mean and log-variance of one set.  feats [P, L, D] -> ([Z], [Z])."""
    return _modules(config)[0].apply(params.encoder, feats)


def set_logits(params: VAEParams, z: jax.Array, s: dict, config: VAEConfig) -> jax.Array:
    """BT logits of every pair of a set under latent z.  -> [P]."""
    decoder = _modules(config)[1]
    r1 = decoder.apply(params.decoder, s["obs1"], z, s["act1"])  # [P, L]
    r2 = decoder.apply(params.decoder, s["obs2"], z, s["act2"])
    return losses.bt_logit(r1, r2)


def set_elbo_loss(params: VAEParams, s: dict, key: jax.Array, beta: jax.Array, config):
    """Negative ELBO of one set: mean_pairs BCE(logit(z), y) + beta * KL.  -> []."""
    mean, logvar = posterior(params, s["feats"], config)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    logits = set_logits(params, z, s, config)
    nll = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, s["y"]))
    kl = losses.gaussian_kl(mean, logvar, params.prior_mean, params.prior_logvar)
    loss = nll + beta * kl
    accuracy = jnp.mean((logits > 0) == (s["y"] > 0.5))
    return loss, {"loss": loss, "nll": nll, "kl": kl, "accuracy": accuracy}


def vae_update(state: VAEState, batch: dict, key: jax.Array, config: VAEConfig):
    """One Adam step on a batch of sets (leading axis B on every array of ``batch``).

    The gradient is accumulated over ``config.microbatches`` equal slices of the sets
    (`train.accumulate`); every set keeps the key it would get in one pass.
    """
    beta = losses.cyclical_cosine(state.step, config.total_steps, config.n_cycles)
    n_sets, n_pairs, seg = batch["obs1"].shape[:3]
    n = microbatch_count(config.microbatches, n_sets, 2 * n_pairs * seg)

    def batch_loss(params, part):
        sets, keys = part
        per_set = jax.vmap(set_elbo_loss, (None, 0, 0, None, None))
        loss, metrics = per_set(params, sets, keys, beta * state.kl_weight, config)
        return loss.mean(), jax.tree.map(jnp.mean, metrics)

    keys = jax.random.split(key, n_sets)
    grads, metrics = microbatch_grad(batch_loss, state.params, (batch, keys), n)
    params, opt_state = adam_step(state.params, grads, state.opt_state, state.lr)
    new = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new, {**metrics, "beta": beta}


def preference_accuracy(params: VAEParams, batch: dict, config: VAEConfig) -> jax.Array:
    """Held-out accuracy of the BT decoder at the posterior mean, per set.  -> [B]."""

    def one(s):
        mean, _ = posterior(params, s["feats"], config)
        return jnp.mean((set_logits(params, mean, s, config) > 0) == (s["y"] > 0.5))

    return jax.vmap(one)(batch)
