"""One training loop for every stage: K updates per jitted scan chunk, then Python.

An algorithm provides ``update(state, batch, key) -> (state, metrics)`` and a sampler
``sample(key, data) -> batch`` that draws a minibatch from on-device data inside the scan.
Before the first chunk XLA's memory analysis of the compiled program is checked against
what a device can still allocate (`sweep.check_program`). Between chunks the loop logs,
evaluates, checks for NaNs and writes an orbax checkpoint of the whole `LoopState`
(algorithm state, RNG key, update count), so a stopped stage resumes where it stopped and
finishes with the same parameters as an uninterrupted run.

Seeds: give `train_loop` a `LoopState` whose leaves carry a leading seed axis and set
``n_seeds``; the chunk is vmapped over it with the data shared (no copies per seed), and the
seed axis is sharded over all devices (`sweep.place`). A `sweep.Members` in place of a seed
list also gives each member its own values of dynamic hyperparameters.

Several processes (`distributed.maybe_initialize`): every process runs this same loop on the
same inputs; metrics, evaluations and the returned state are fetched whole into each one
(`distributed.host_local`), so all make the same decisions (NaN stop, logging steps), while
only process 0 writes logs and calls ``progress``; orbax checkpoints are saved by all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import struct

from scpr_jax import runs
from scpr_jax.train import distributed
from scpr_jax.train.logging import MetricLogger
from scpr_jax.train.sweep import (
    Members,
    check_memory,
    check_program,
    place,
    set_leaves,
    tree_bytes,
)


@struct.dataclass
class LoopState:
    """Everything a stage needs to resume: algorithm state, RNG key, updates done."""

    algo: Any
    key: jax.Array  # [2] uint32 PRNG key
    step: jax.Array  # [] int32


def make_chunk(
    update: Callable[[Any, Any, jax.Array], tuple[Any, dict]],
    sample: Callable[[jax.Array, Any], Any],
    n_updates: int,
) -> Callable[[LoopState, Any], tuple[LoopState, dict]]:
    """A pure function running ``n_updates`` updates in one ``lax.scan``; metrics averaged."""

    def chunk(loop: LoopState, data: Any) -> tuple[LoopState, dict]:
        def body(algo, key):
            k_batch, k_update = jax.random.split(key)
            return update(algo, sample(k_batch, data), k_update)

        key, k_chunk = jax.random.split(loop.key)
        algo, metrics = jax.lax.scan(body, loop.algo, jax.random.split(k_chunk, n_updates))
        metrics = jax.tree.map(jnp.mean, metrics)
        return LoopState(algo=algo, key=key, step=loop.step + n_updates), metrics

    return chunk


Seeds = int | tuple[int, ...] | list[int] | range | Members


def seed_axis(seeds: Seeds) -> int | None:
    """None for one unbatched seed (an int), else the number of vmapped seeds."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 0:
            raise ValueError(f"seed={seeds} must be a non-negative integer")
        return None
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds={seeds!r} must be a non-empty list of non-negative integers")
    return len(seeds)


def init_loop(key: jax.Array, init: Callable[[jax.Array], Any], seeds: Seeds = 0) -> LoopState:
    """`LoopState` of one seed (an int, unbatched) or of several stacked on a leading axis.

    Seed s draws its parameters from ``init(k)`` and its loop key, both from
    ``fold_in(key, s)``, so member j of a vmapped run equals a separate run of ``seeds[j]``.
    ``seeds`` may be a `Members`, whose hyperparameters then replace the leaves they name.
    """

    def one(seed):
        k_init, k_loop = jax.random.split(jax.random.fold_in(key, seed))
        return LoopState(algo=init(k_init), key=k_loop, step=jnp.asarray(0, jnp.int32))

    n = seed_axis(seeds) or 1
    check_memory(tree_bytes(jax.eval_shape(one, jnp.asarray(0, jnp.int32))), n)  # before allocating
    if seed_axis(seeds) is None:
        return jax.jit(one)(jnp.asarray(seeds, jnp.int32))
    loop = jax.jit(jax.vmap(one))(jnp.asarray(list(seeds), jnp.int32))
    if isinstance(seeds, Members):
        loop = loop.replace(algo=set_leaves(loop.algo, seeds.hparams))
    return loop


def _check_finite(stage: str, step: int, metrics: dict[str, np.ndarray]) -> None:
    for name, value in metrics.items():
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(
                f"stage {stage!r}: metric {name!r} is not finite ({value}) at update {step}; "
                "stopping instead of writing garbage (last good checkpoint kept)"
            )


def _restore(manager: ocp.CheckpointManager, step: int, loop: LoopState, stage: str) -> LoopState:
    """The checkpoint of ``step`` in the structure of ``loop``; ValueError naming the directory
    when it does not fit (another version's or another setting's state, or a damaged file)."""
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(loop))
    except Exception as err:  # orbax raises several types for a tree that does not match
        raise ValueError(
            f"stage {stage!r}: cannot restore checkpoint {step} of {manager.directory}; it was "
            "made for another state (an older scpr-jax or other settings) or is damaged. "
            "Delete that stage directory to retrain it (orbax's error is above)."
        ) from err


def train_loop(
    stage: str,
    loop: LoopState,
    chunk: Callable[[LoopState, Any], tuple[LoopState, dict]],
    data: Any,
    total_updates: int,
    chunk_updates: int,
    workdir: str | Path,
    n_seeds: int | None = None,
    evaluate: Callable[[LoopState], dict] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 1,
    progress: Callable[[int, int, dict], None] | None = None,
) -> LoopState:
    """Runs ``chunk`` until ``total_updates``, resuming from ``workdir/ckpt`` if present.

    ``chunk`` must perform ``chunk_updates`` updates (see `make_chunk`). Metrics go to
    ``workdir/train.*`` and evaluations (every ``eval_every`` updates and at the end) to
    ``workdir/eval.*``. Returns the final `LoopState` (with several processes, a full copy
    in each). ``evaluate`` gets a state it may read with ``np.asarray``.
    """
    if total_updates % chunk_updates:
        raise ValueError(
            f"total_updates={total_updates} must be a multiple of chunk_updates={chunk_updates}"
        )
    workdir = Path(workdir).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    manager = ocp.CheckpointManager(workdir / "ckpt", options=options)
    resume = manager.latest_step()
    loop, data = place(loop, n_seeds, data)  # the seed axis sharded over all devices
    if resume is not None:
        loop = _restore(manager, resume, loop, stage)
    start = int(np.max(distributed.fetch(loop.step)))
    step_fn = jax.vmap(chunk, in_axes=(0, None)) if n_seeds else chunk
    step_fn = jax.jit(step_fn)
    if start < total_updates:  # compiled once here: calls below reuse the executable
        check_program(step_fn.lower(loop, data).compile(), stage)
    writer = runs.is_writer()
    train_log = MetricLogger(workdir, "train", resume_step=start)
    eval_log = MetricLogger(workdir, "eval", resume_step=start) if evaluate else None
    t0 = time.perf_counter()
    chunks_done = 0
    try:
        while start < total_updates:
            loop, metrics = step_fn(loop, data)
            metrics = distributed.fetch(metrics)
            start += chunk_updates
            chunks_done += 1
            _check_finite(stage, start, metrics)
            scalars = train_log.log(start, metrics)
            scalars["updates_per_s"] = chunks_done * chunk_updates / (time.perf_counter() - t0)
            last = start >= total_updates
            if evaluate and (last or (eval_every and start % eval_every == 0)):
                evals = distributed.fetch(evaluate(distributed.host_local(loop)))
                evals = eval_log.log(start, evals)
                scalars.update({f"eval/{k}": v for k, v in evals.items()})
            if last or chunks_done % checkpoint_every == 0:
                manager.save(start, args=ocp.args.StandardSave(loop))
            if progress and writer:
                progress(start, total_updates, scalars)
    finally:  # an interrupted stage still completes its last checkpoint
        manager.wait_until_finished()
        train_log.close()
        if eval_log:
            eval_log.close()
    return distributed.host_local(loop)
