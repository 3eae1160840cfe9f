"""Training the Safe-CPL policy decoder through the shared loop (PAPER.md 3.5, stage 2).

The BT-VAE trained on regret-labelled sets is frozen: the posterior (mean, log-variance) of
every labelled set is computed once before training and stored beside the sets, so each
update draws z' ~ q(z' | S) without re-running the attention encoder (`cpl.set_posteriors`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from scpr_jax.data.preferences import PreferenceSets
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task
from scpr_jax.skills import batches, cpl
from scpr_jax.skills.vae import VAEConfig, VAEParams
from scpr_jax.train import LoopState, init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.loop import Seeds

SET_FIELDS = ("obs1", "obs2", "act1", "act2", "y")  # what the decoder reads of a set


@struct.dataclass
class CPLData:
    """Labelled sets of one split plus their frozen posteriors, on device."""

    sets: batches.SetData
    z_mean: jax.Array  # [M, Z] posterior mean of every labelled set
    z_logvar: jax.Array  # [M, Z]


def cpl_data(sets: batches.SetData, vae_params: VAEParams, vae_config: VAEConfig) -> CPLData:
    """Attaches the frozen VAE posterior of every labelled set (computed once, in one pass)."""
    feats = jax.vmap(lambda i: batches.set_example(sets, i)["feats"])(jnp.arange(sets.size))
    post = jax.jit(cpl.set_posteriors, static_argnums=2)
    z_mean, z_logvar = post(vae_params, feats, vae_config)
    return CPLData(sets=sets, z_mean=z_mean, z_logvar=z_logvar)


def _take(data: CPLData, idx: jax.Array) -> dict:
    """Sets ``idx`` [B] in the decoder's batch format, with z_mean and z_logvar [B, Z]."""
    full = jax.vmap(batches.set_example, in_axes=(None, 0))(data.sets, idx)
    batch = {k: full[k] for k in SET_FIELDS}  # feats unused: jit drops its gather
    return {**batch, "z_mean": data.z_mean[idx], "z_logvar": data.z_logvar[idx]}


def sample_cpl_batch(key: jax.Array, data: CPLData, batch_size: int) -> dict:
    """Uniformly drawn labelled sets with their frozen posteriors (leading axis B)."""
    return _take(data, jax.random.randint(key, (batch_size,), 0, data.sets.size))


def evaluate(params: cpl.PolicyParams, data: CPLData, n_users: int, seeds: Seeds = 0) -> dict:
    """Held-out regret-model accuracy at the posterior mean, overall and per user."""
    fn = jax.vmap(cpl.cpl_accuracy, (0, None, None, None)) if seed_axis(seeds) else cpl.cpl_accuracy
    batch = _take(data, jnp.arange(data.sets.size))
    accuracy = np.asarray(jax.jit(fn, static_argnums=3)(params, batch, None, None))
    users = np.asarray(data.sets.users)
    return batches.accuracy_summary(accuracy, users, n_users, bool(seed_axis(seeds)))


def train_cpl(
    key: jax.Array,
    trajs: Trajectories,
    prefs: PreferenceSets,
    task: Task,
    vae_params: VAEParams,
    vae_config: VAEConfig,
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    progress: Callable[[int, int, dict], None] | None = None,
    seeds: Seeds = 0,
) -> tuple[cpl.CPLState, dict]:
    """Trains (or resumes) mu_theta on the regret-labelled sets; returns (state, summary).

    ``vae_params``: one frozen BT-VAE (unbatched) shared by every seed. ``seeds``: an int
    (one run) or a list of seeds run vmapped (leading seed axis on the state and summary).
    """
    cpl.validate_cpl_config(cfg)
    if vae_params.prior_mean.shape != (vae_config.latent_dim,):
        raise ValueError(
            f"VAE prior has shape {vae_params.prior_mean.shape}; a single VAE with "
            f"latent_dim={vae_config.latent_dim} is needed"
        )
    train = cpl_data(batches.set_data(trajs, prefs, task, "train"), vae_params, vae_config)
    held_out = cpl_data(batches.set_data(trajs, prefs, task, "eval"), vae_params, vae_config)

    def init(k):
        return cpl.cpl_init(k, task.obs_size, vae_config.latent_dim, task.action_size, cfg)

    def update(state, batch, k):  # the posteriors are in the batch
        return cpl.cpl_update(state, batch, k, None, None, int(cfg.get("microbatches", 0)))

    def sample(k, data):
        return sample_cpl_batch(k, data, int(cfg.batch_size))

    def eval_fn(loop: LoopState) -> dict:
        return batches.accuracy_log(evaluate(loop.algo.params, held_out, prefs.n_users, seeds))

    loop = train_loop(
        "cpl", init_loop(key, init, seeds), make_chunk(update, sample, int(cfg.chunk)), train,
        int(cfg.steps), int(cfg.chunk), workdir, n_seeds=seed_axis(seeds), evaluate=eval_fn,
        eval_every=int(cfg.chunk) * 2, progress=progress,
    )  # fmt: skip
    return loop.algo, evaluate(loop.algo.params, held_out, prefs.n_users, seeds)
