"""One training loop for every stage: K updates per jitted scan chunk, then Python.

An algorithm provides ``update(state, batch, key) -> (state, metrics)`` and a sampler
``sample(key, data) -> batch`` that draws a minibatch from on-device data inside the scan.
Before the first chunk XLA's memory analysis of the compiled program is checked against
what a device can still allocate (`sweep.check_program`). Between chunks the loop logs,
evaluates, checks for NaNs and writes an orbax checkpoint of the whole `LoopState`
(algorithm state, RNG key, update count) with its SHA-256 (`Checkpoints`), so a stopped stage
resumes where it stopped and finishes with the same parameters as an uninterrupted run.

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

import hashlib
import shutil
import sys
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
from scpr_jax.errors import IntegrityError, NonFiniteError
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


def _check_finite(stage: str, workdir: Path, step: int, metrics: dict[str, np.ndarray]) -> None:
    for name, value in metrics.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(
                f"stage {stage!r} ({workdir}): metric {name!r} is not finite ({value}) at update "
                f"{step}; stopping instead of writing garbage (last good checkpoint kept; to "
                f"retrain with other settings, delete {workdir})"
            )


def _key_data(tree: Any) -> Any:
    """``tree`` with typed PRNG key arrays replaced by their raw uint32 data."""

    def raw(x):
        dtype = getattr(x, "dtype", None)
        return jax.random.key_data(x) if jnp.issubdtype(dtype, jax.dtypes.prng_key) else x

    return jax.tree.map(raw, tree)


def state_digest(loop: Any) -> str:
    """SHA-256 of every array of ``loop`` (dtype, shape and bytes, in tree order)."""
    h = hashlib.sha256()
    for x in jax.tree.leaves(distributed.fetch(_key_data(loop))):
        x = np.ascontiguousarray(np.asarray(x))
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(x.tobytes())
    return h.hexdigest()


class Checkpoints:
    """Orbax checkpoints of one stage (``<workdir>/ckpt``, the last two kept) with the
    SHA-256 of each step's arrays (``<workdir>/ckpt.sha256.json``): a restore verifies them
    and falls back to the previous step, saying so, when the newest is damaged."""

    def __init__(self, workdir: str | Path, stage: str):
        workdir = Path(workdir).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
        self.manager = ocp.CheckpointManager(workdir / "ckpt", options=options)
        self.stage, self.digest_path = stage, workdir / "ckpt.sha256.json"
        self.digests = runs.read_json(self.digest_path) if self.digest_path.exists() else {}

    def save(self, step: int, state: Any) -> None:
        """Checkpoints ``state`` as ``step`` (asynchronously) and records its checksum (one
        process only: several processes save without checksums, see the README)."""
        saved = self.manager.save(step, args=ocp.args.StandardSave(state))
        if not saved or jax.process_count() > 1:
            return
        kept = {str(s) for s in self.manager.all_steps()} | {str(step)}
        self.digests = {k: v for k, v in self.digests.items() if k in kept}
        self.digests[str(step)] = state_digest(state)
        runs.atomic_write_json(self.digest_path, self.digests)

    def restore(self, target: Any) -> Any:
        """The newest checkpoint that restores in the structure of ``target`` and matches its
        checksum (None if there is none); a damaged one is reported and removed, and the
        previous one tried. ValueError naming the directory when none fits."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        problems = []
        for step in steps:
            try:
                restored = self.manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as err:  # orbax raises several types for a tree that does not fit
                problems.append(f"checkpoint {step}: {type(err).__name__}: {str(err)[:300]}")
                continue
            want = self.digests.get(str(step))  # none: made before checksums were recorded
            if want is not None and state_digest(restored) != want:
                problems.append(f"checkpoint {step}: its arrays do not match their SHA-256")
                continue
            if problems:
                where, why = f"checkpoint {step} of {self.manager.directory}", "; ".join(problems)
                print(f"[{self.stage}] resuming from {where}: newer ones are damaged ({why})",
                      file=sys.stderr)  # fmt: skip
                for bad in steps[: steps.index(step)]:
                    self.manager.delete(bad)
            return restored
        if not steps:
            return None
        raise IntegrityError(
            f"stage {self.stage!r}: cannot restore checkpoint {steps[0]} of "
            f"{self.manager.directory} (nor an earlier one); it was made for another state (an "
            f"older scpr-jax or other settings) or is damaged: {'; '.join(problems)}. Delete "
            "that stage directory to retrain it."
        )

    def close(self) -> None:
        """Waits for the last asynchronous save."""
        self.manager.wait_until_finished()

    @staticmethod
    def remove(workdir: str | Path) -> None:
        """Deletes a stage's checkpoints and their checksums (process 0 only)."""
        if runs.is_writer():
            shutil.rmtree(Path(workdir) / "ckpt", ignore_errors=True)
            (Path(workdir) / "ckpt.sha256.json").unlink(missing_ok=True)


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
    checkpoints = Checkpoints(workdir, stage)
    loop, data = place(loop, n_seeds, data)  # the seed axis sharded over all devices
    if (restored := checkpoints.restore(loop)) is not None:
        loop = restored
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
            _check_finite(stage, workdir, start, metrics)
            scalars = train_log.log(start, metrics)
            scalars["updates_per_s"] = chunks_done * chunk_updates / (time.perf_counter() - t0)
            last = start >= total_updates
            if evaluate and (last or (eval_every and start % eval_every == 0)):
                evals = distributed.fetch(evaluate(distributed.host_local(loop)))
                evals = eval_log.log(start, evals)
                scalars.update({f"eval/{k}": v for k, v in evals.items()})
            if last or chunks_done % checkpoint_every == 0:
                checkpoints.save(start, loop)
            if progress and writer:
                progress(start, total_updates, scalars)
    finally:  # an interrupted stage still completes its last checkpoint
        checkpoints.close()
        train_log.close()
        if eval_log:
            eval_log.close()
    return distributed.host_local(loop)
