"""Safe-CPL policy decoder mu_theta([s, z']) trained with the CPL regret loss (PAPER.md 3.5).

Stage 2 of Safe-CPL. The BT-VAE of `vae` (trained on regret-labelled sets) is frozen: its
parameters are an *input* of every update, never part of the state, and each set's latent
z' ~ q(z' | S) is drawn under ``stop_gradient``, so gradients reach theta only. With a
unit-variance Gaussian policy and gamma = 1 (log pi = -||mu - a||^2 up to a constant),

    lp_t = -||mu_theta(s_t, z') - a_t||^2,   adv(sigma) = alpha * sum_t lp_t,
    loss = mean_{sets, pairs} -log sigmoid(adv(sigma_pref) - lambda * adv(sigma_other)).

No behaviour-cloning term. Batches of sets use the VAE's per-set format with a leading
axis B: feats [B, P, L, 2 * obs + 1], obs1/obs2 [B, P, L, obs], act1/act2 [B, P, L, act], y [B, P].
Because the encoder is frozen, a batch may instead carry each set's precomputed posterior
(`set_posteriors`) as z_mean, z_logvar [B, Z] in place of feats: the same z' distribution
without re-running the attention encoder, which otherwise costs about as much as the update.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from scpr_jax.envs import TASKS, task_class
from scpr_jax.nets import MLP, leaky_relu
from scpr_jax.optim import ADAM, adam_step
from scpr_jax.skill import Skill, latent_skill
from scpr_jax.skills import losses, vae
from scpr_jax.train.accumulate import microbatch_count, microbatch_grad

PRESETS = ("paper", "small")


class PolicyDecoder(nn.Module):
    """mu_theta([s, z']): MLP with LeakyReLU(0.2) and a tanh mean in [-1, 1]."""

    hidden: tuple[int, ...]
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array, z: jax.Array) -> jax.Array:
        z = jnp.broadcast_to(z, obs.shape[:-1] + z.shape[-1:])
        x = jnp.concatenate([obs, z], axis=-1)
        return jnp.tanh(MLP(self.hidden, self.action_size, activation=leaky_relu)(x))


@struct.dataclass
class PolicyParams:
    """Decoder weights plus the static architecture, so a rollout needs nothing else."""

    net: Any
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    action_size: int = struct.field(pytree_node=False)


@struct.dataclass
class CPLState:
    params: PolicyParams
    opt_state: optax.OptState
    step: jax.Array  # [] int32
    alpha: jax.Array  # [] temperature of the regret model
    lam: jax.Array  # [] conservative weight lambda on the non-preferred segment
    lr: jax.Array  # [] Adam step size (a leaf: schedules and sweeps need no recompile)


def cpl_config(preset: str, task_name: str) -> ml_collections.ConfigDict:
    """Stage-2 settings for ``task_name`` at ``preset`` ("paper" or "small"), locked."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}; valid tasks: {', '.join(TASKS)}")
    paper = task_class(task_name).paper
    cfg = ml_collections.ConfigDict()
    cfg.hidden = (256, 256, 256)  # widths of mu_theta
    cfg.alpha = 0.2  # regret temperature alpha
    cfg.lam = paper.cpl_lambda  # lambda on the non-preferred segment (the task's, PAPER.md 3.5)
    cfg.lr = 3e-4  # Adam learning rate
    cfg.batch_size = 96  # preference sets per update
    cfg.steps = 500_000 if preset == "paper" else 3_000  # updates
    cfg.chunk = 1_000 if preset == "paper" else 500  # updates per jitted lax.scan
    cfg.microbatches = 0  # gradient accumulation slices per batch; 0: automatic (accumulate)
    if preset == "small":  # minutes on a 2-core CPU
        cfg.hidden = (128, 128, 128)
        cfg.batch_size = 16
    return cfg.lock()


def validate_cpl_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field."""
    rules = {  # field -> (valid?, what is allowed)
        "hidden": (len(cfg.hidden) >= 1 and all(int(w) >= 1 for w in cfg.hidden), "widths >= 1"),
        "alpha": (cfg.alpha > 0, "> 0"),
        "lam": (0.0 <= cfg.lam <= 1.0, "in [0, 1]"),
        "lr": (cfg.lr > 0, "> 0"),
        "batch_size": (cfg.batch_size >= 1, ">= 1"),
        "steps": (cfg.steps >= 1, ">= 1"),
        "chunk": (cfg.chunk >= 1 and cfg.steps % cfg.chunk == 0, ">= 1 and divide steps"),
        "microbatches": (
            cfg.get("microbatches", 0) >= 0
            and (cfg.get("microbatches", 0) == 0 or cfg.batch_size % cfg.microbatches == 0),
            ">= 0 (0: automatic) and divide batch_size",
        ),
    }
    for field, (ok, allowed) in rules.items():
        if not ok:
            raise ValueError(f"cpl config: {field}={cfg[field]!r} invalid; must be {allowed}")


def cpl_init(key: jax.Array, obs_size: int, latent_dim: int, action_size: int, config) -> CPLState:
    """Fresh decoder and Adam state; ``config`` provides hidden, alpha, lam and lr."""
    validate_cpl_config(config)
    hidden = tuple(int(w) for w in config.hidden)
    net = PolicyDecoder(hidden, int(action_size)).init(
        key, jnp.zeros((1, obs_size)), jnp.zeros((1, latent_dim))
    )
    params = PolicyParams(net=net, hidden=hidden, action_size=int(action_size))
    return CPLState(
        params=params,
        opt_state=ADAM.init(params),
        step=jnp.asarray(0, jnp.int32),
        alpha=jnp.asarray(config.alpha, jnp.float32),
        lam=jnp.asarray(config.lam, jnp.float32),
        lr=jnp.asarray(config.lr, jnp.float32),
    )


def cpl_action(params: PolicyParams, obs: jax.Array, z: jax.Array) -> jax.Array:
    """Skill action mu_theta([s, z']).  obs [..., obs], z [..., Z] (broadcast) -> [..., act]."""
    return PolicyDecoder(params.hidden, params.action_size).apply(params.net, obs, z)


def cpl_skill(params: PolicyParams, vae_params, obs_size: int) -> Skill:
    """Safe-CPL skill: the decoder mu_theta([s, z']) (its MLP, LeakyReLU) with the VAE's prior."""
    prior = (vae_params.prior_mean, vae_params.prior_logvar)
    mlp = {"params": params.net["params"]["MLP_0"]}  # PolicyDecoder = tanh(MLP_0([s, z']))
    n_actions = params.action_size
    return latent_skill("cpl", mlp, params.hidden, n_actions, "leaky_relu", prior, obs_size)


def set_posteriors(vae_params, feats: jax.Array, vae_config) -> tuple[jax.Array, jax.Array]:
    """Frozen posterior (mean, logvar) of sets.  feats [B, P, L, D] -> ([B, Z], [B, Z])."""
    vae_params = jax.lax.stop_gradient(vae_params)
    return jax.vmap(vae.posterior, (None, 0, None))(vae_params, feats, vae_config)


def sample_latents(batch: dict, key: jax.Array, vae_params, vae_config) -> jax.Array:
    """z' ~ q(z' | S) for every set of a batch, without gradient.  -> [B, Z]."""
    if "z_mean" in batch:  # precomputed by `set_posteriors`
        mean, logvar = batch["z_mean"], batch["z_logvar"]
    else:
        mean, logvar = set_posteriors(vae_params, batch["feats"], vae_config)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    return jax.lax.stop_gradient(z)


def set_cpl_loss(params: PolicyParams, s: dict, z: jax.Array, alpha, lam):
    """CPL loss of one set under latent z, averaged over its pairs.  -> ([], metrics)."""
    lp1 = -jnp.sum(jnp.square(cpl_action(params, s["obs1"], z) - s["act1"]), -1)  # [P, L]
    lp2 = -jnp.sum(jnp.square(cpl_action(params, s["obs2"], z) - s["act2"]), -1)
    loss = jnp.mean(losses.cpl_loss(lp1, lp2, s["y"], alpha, lam))
    adv1, adv2 = alpha * lp1.sum(-1), alpha * lp2.sum(-1)
    accuracy = jnp.mean((adv1 > adv2) == (s["y"] > 0.5))
    mse = -jnp.mean(jnp.where(s["y"][:, None] > 0.5, lp1, lp2))  # to the preferred actions
    return loss, {"loss": loss, "accuracy": accuracy, "mse_preferred": mse}


def latent_batch_loss(params, sets: dict, z: jax.Array, alpha, lam):
    """Mean CPL loss of a batch of sets under given latents z [B, Z].  -> ([], metrics)."""
    loss, metrics = jax.vmap(set_cpl_loss, (None, 0, 0, None, None))(params, sets, z, alpha, lam)
    return loss.mean(), jax.tree.map(jnp.mean, metrics)


def cpl_update(
    state: CPLState, batch: dict, key: jax.Array, vae_params, vae_config, microbatches: int = 0
):
    """One Adam step on theta for a batch of sets; the VAE stays frozen.  -> (state, metrics).

    One z' per set from the frozen posterior, then the gradient accumulated over
    ``microbatches`` equal slices of the sets (`train.accumulate`; 0: automatic).
    """
    z = sample_latents(batch, key, vae_params, vae_config)
    sets = {k: batch[k] for k in ("obs1", "obs2", "act1", "act2", "y")}
    n_sets, n_pairs, seg = sets["obs1"].shape[:3]
    n = microbatch_count(microbatches, n_sets, 2 * n_pairs * seg)

    def loss_fn(params, part):
        return latent_batch_loss(params, *part, state.alpha, state.lam)

    grads, metrics = microbatch_grad(loss_fn, state.params, (sets, z), n)
    params, opt_state = adam_step(state.params, grads, state.opt_state, state.lr)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def cpl_accuracy(params: PolicyParams, batch: dict, vae_params, vae_config) -> jax.Array:
    """Held-out regret-model accuracy (adv1 > adv2 vs y) at the posterior mean, per set [B]."""
    if "z_mean" in batch:
        z = batch["z_mean"]
    else:
        z = set_posteriors(vae_params, batch["feats"], vae_config)[0]
    _, metrics = jax.vmap(set_cpl_loss, (None, 0, 0, None, None))(params, batch, z, 1.0, 1.0)
    return metrics["accuracy"]
