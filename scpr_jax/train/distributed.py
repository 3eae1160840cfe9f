"""Multi-host runs: `jax.distributed` start-up, the writing process, host-local copies.

One program runs on every host (process). `maybe_initialize` connects the processes before
anything touches a device; from then on ``jax.devices()`` lists the devices of all hosts,
`sweep.place` shards the member axis over them and jit partitions each chunk across hosts.
Every process computes the same host-side values (losses, evaluations, the returned state,
via `host_local`), so all take the same branches; only process 0 (`runs.is_writer`) writes
logs, JSON and progress output, while all processes write orbax checkpoints together (the
run directory must be on a file system every host shares).

Environment read by `maybe_initialize` (the CLI passes ``os.environ``):
``SCPR_COORDINATOR=host:port``, ``SCPR_NUM_PROCESSES=N``, ``SCPR_PROCESS_ID=i`` (0..N-1);
or ``SCPR_DISTRIBUTED=auto`` to let JAX detect the cluster (Cloud TPU, SLURM, Open MPI).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={value!r} must be an integer when SCPR_COORDINATOR is set "
            "(SCPR_NUM_PROCESSES >= 1, 0 <= SCPR_PROCESS_ID < SCPR_NUM_PROCESSES)"
        ) from None


def maybe_initialize(environ: Mapping[str, str]) -> bool:
    """Starts `jax.distributed` if ``environ`` asks for it (see module doc); True if it did.

    Must run before anything touches a device. On CPU hosts the cross-process collectives
    go through gloo.
    """
    coordinator = environ.get("SCPR_COORDINATOR", "")
    auto = environ.get("SCPR_DISTRIBUTED", "")
    if auto not in ("", "auto"):
        raise ValueError(f"SCPR_DISTRIBUTED={auto!r}: the only allowed value is 'auto'")
    if not coordinator and not auto:
        return False
    settings = {}
    if coordinator:
        n, i = _int(environ, "SCPR_NUM_PROCESSES"), _int(environ, "SCPR_PROCESS_ID")
        if n < 1 or not 0 <= i < n:
            raise ValueError(
                f"SCPR_PROCESS_ID={i} with SCPR_NUM_PROCESSES={n}: need SCPR_NUM_PROCESSES >= 1 "
                "and 0 <= SCPR_PROCESS_ID < SCPR_NUM_PROCESSES"
            )
        if ":" not in coordinator:
            raise ValueError(f"SCPR_COORDINATOR={coordinator!r} must be host:port")
        settings = {"coordinator_address": coordinator, "num_processes": n, "process_id": i}
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)  # no settings: detected from the cluster
    return True


def global_mesh(axis: str) -> Mesh:
    """A 1-D mesh named ``axis`` over every device of every process."""
    return Mesh(np.asarray(jax.devices()), (axis,))


def to_global(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` (the same values in every process) as global arrays laid out by ``sharding``.

    Each process puts only its own devices' slices, so nothing crosses hosts; typed PRNG
    keys included. Leaves that are already global arrays are resharded by `jax.device_put`.
    """

    def put(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        x = x if isinstance(x, jax.Array) else jnp.asarray(x)
        slices = sharding.addressable_devices_indices_map(x.shape)
        whole = (slice(None),) * x.ndim  # replicated: no slicing copy of a large buffer
        shards = [
            jax.device_put(x if index == whole else x[index], device)
            for device, index in slices.items()
        ]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, shards)

    return jax.tree.map(put, tree)


@functools.cache
def _replicate(mesh: Mesh):
    return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec()))


def _is_global(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def host_local(tree: Any) -> Any:
    """``tree`` with every global (multi-process) array replaced by a full copy on this
    process's first device, so ``np.asarray`` and local jits work on it; others unchanged."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, x in enumerate(leaves) if _is_global(x) and not x.is_fully_replicated]
    if split:  # one collective for all sharded leaves
        gathered = _replicate(leaves[split[0]].sharding.mesh)([leaves[i] for i in split])
        for i, x in zip(split, gathered, strict=True):
            leaves[i] = x
    local = [x.addressable_data(0) if _is_global(x) else x for x in leaves]
    return jax.tree.unflatten(treedef, local)


def fetch(tree: Any) -> Any:
    """`jax.device_get` that also works on global arrays (same values in every process)."""
    return jax.device_get(host_local(tree))
