"""Training the preference VAE on D_pref through the shared loop (PAPER.md 3.3-3.4)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scpr_jax import artifacts
from scpr_jax.data.preferences import PreferenceSets
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task
from scpr_jax.skills import batches, vae
from scpr_jax.train import LoopState, init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.loop import Seeds


def vae_train_config(preset: str = "small") -> ml_collections.ConfigDict:
    """VAE settings: "paper" (PAPER.md 3.3) or "small" (minutes on a 2-core CPU), locked."""
    if preset not in ("paper", "small"):
        raise ValueError(f"unknown preset {preset!r}; valid presets: paper, small")
    c = ml_collections.ConfigDict()
    c.latent_dim = 4  # dimension of z'
    c.hidden = 256  # encoder width
    c.decoder_hidden = (256, 256)  # BT reward decoder widths
    c.embed_activation = True  # LeakyReLU after the encoder's input layer (see vae.SetEncoder)
    c.kl_weight = 1e-3  # weight of KL(q || p), times the cyclical annealer
    c.n_cycles = 4  # cosine cyclical KL annealing cycles
    c.lr = 3e-4  # Adam learning rate
    c.batch_size = 256  # preference sets per update
    c.steps = 100_000  # updates (paper: 600 epochs of the training sets)
    c.chunk = 1000  # updates per jitted scan chunk (logging / checkpoints in between)
    c.microbatches = 0  # gradient accumulation slices per batch; 0: automatic (accumulate)
    if preset == "small":
        c.hidden = 64
        c.decoder_hidden = (64, 64)  # the decoder dominates the cost: 32k steps per batch
        c.lr = 1e-3
        c.batch_size = 16
        c.steps = 3000
        c.chunk = 500
    return c.lock()


def model_config(c: ml_collections.ConfigDict) -> vae.VAEConfig:
    """The `vae.VAEConfig` of a training config."""
    for field in ("latent_dim", "hidden", "batch_size", "steps", "chunk", "n_cycles"):
        if c[field] < 1:
            raise ValueError(f"vae config: {field}={c[field]!r} must be >= 1")
    if c.steps % c.chunk:
        raise ValueError(f"vae config: steps={c.steps} must be a multiple of chunk={c.chunk}")
    microbatches = c.get("microbatches", 0)
    if microbatches < 0 or microbatches and c.batch_size % microbatches:
        raise ValueError(
            f"vae config: microbatches={microbatches!r} must be 0 (automatic) or divide "
            f"batch_size={c.batch_size}"
        )
    return vae.VAEConfig(
        latent_dim=c.latent_dim,
        hidden=c.hidden,
        embed_activation=c.embed_activation,
        decoder_hidden=tuple(c.decoder_hidden),
        total_steps=c.steps,
        n_cycles=c.n_cycles,
        lr=c.lr,
        microbatches=microbatches,
        kl_weight=c.kl_weight,
    )


def _held_out(params: vae.VAEParams, sets: dict, config: vae.VAEConfig):
    """Per-set held-out accuracy [M] and posterior means [M, Z] (jit/vmap-able)."""
    accuracy = vae.preference_accuracy(params, sets, config)
    means, _ = jax.vmap(vae.posterior, (None, 0, None))(params, sets["feats"], config)
    return accuracy, means


def evaluate(
    params: vae.VAEParams,
    data: batches.SetData,
    config: vae.VAEConfig,
    n_users: int,
    n_seeds: int | None = None,
) -> dict:
    """Held-out preference accuracy (mean and per user) and each user's mean posterior latent.

    With ``n_seeds`` the leaves of ``params`` carry a seed axis and every entry is a list
    over seeds.
    """
    fn = partial(_held_out, config=config)
    fn = jax.jit(jax.vmap(fn, (0, None)) if n_seeds else fn)
    accuracy, means = jax.device_get(fn(params, batches.all_sets(data)))
    users = np.asarray(data.users)

    def latents(i):  # each user's mean posterior latent [n_users, Z]
        mu = means if i is None else means[i]
        return [mu[users == z].mean(0).tolist() for z in range(n_users)]

    return batches.accuracy_summary(
        accuracy, users, n_users, bool(n_seeds), posterior_mean_per_user=latents
    )


def train_vae(
    key: jax.Array,
    trajs: Trajectories,
    prefs: PreferenceSets,
    task: Task,
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    progress: Callable[[int, int, dict], None] | None = None,
    seeds: Seeds = 0,
) -> tuple[vae.VAEState, dict]:
    """Trains (or resumes) the BT-VAE; returns (state, held-out evaluation summary).

    ``seeds``: one seed (an int) or a list of seeds run vmapped over the shared data, every
    state leaf and summary entry then carrying a leading seed axis (see `init_loop`).
    """
    config = model_config(cfg)
    n_seeds = seed_axis(seeds)
    train = batches.set_data(trajs, prefs, task, "train")
    held_out = batches.set_data(trajs, prefs, task, "eval")
    example = batches.set_example(train, jnp.asarray(0))
    loop = init_loop(key, lambda k: vae.vae_init(k, example, config), seeds)
    chunk = make_chunk(
        partial(vae.vae_update, config=config),
        partial(batches.sample_sets, batch_size=cfg.batch_size),
        cfg.chunk,
    )

    def eval_fn(loop: LoopState) -> dict:
        summary = evaluate(loop.algo.params, held_out, config, prefs.n_users, n_seeds)
        return batches.accuracy_log(summary)

    loop = train_loop(
        "vae", loop, chunk, train, cfg.steps, cfg.chunk, workdir, n_seeds=n_seeds,
        evaluate=eval_fn, eval_every=cfg.chunk * 2, progress=progress,
    )  # fmt: skip
    return loop.algo, evaluate(loop.algo.params, held_out, config, prefs.n_users, n_seeds)


def save_vae(directory, params: vae.VAEParams, cfg: ml_collections.ConfigDict) -> None:
    """The trained BT-VAE (encoder, decoder, prior) as artifact ``vae``, with its settings."""
    artifacts.save(directory, "vae", "preference VAE", params, {"config": cfg.to_dict()})


def load_vae(directory) -> tuple[vae.VAEParams, vae.VAEConfig]:
    """(parameters, `vae.VAEConfig`) of `save_vae`."""
    state, meta = artifacts.load(directory, "vae", "preference VAE")
    params = vae.VAEParams(**{k: state[k] for k in ("encoder", "decoder", "prior_mean",
                                                    "prior_logvar")})  # fmt: skip
    return params, model_config(ml_collections.ConfigDict(meta["config"]))
