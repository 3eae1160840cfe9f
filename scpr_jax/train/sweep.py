"""Sweeps as transforms: seeds x dynamic hyperparameters as one vmapped, sharded member axis.

A `Members` value goes wherever a stage takes ``seeds``: member j starts from seed
``seeds[j]`` (so members sharing a seed share their initialisation and RNG streams) and has
its own value of each swept hyperparameter, written into the state leaf of that name after
init (`set_leaves`). Only leaves that are per-member scalars can be swept this way (e.g.
TD3's ``beta_reg``, an optimiser's ``learning_rate``); settings that change shapes are run
as separate programs by the caller.

`place` lays the member axis out over every device (``jax.devices()``, all hosts) with a
`NamedSharding`; jit then partitions the vmapped program without any code change between
one CPU, 8 GPUs, a TPU slice or several hosts started by `distributed.maybe_initialize`.
With several processes everything is placed on the global mesh (members that do not divide
evenly are replicated): jit and orbax need every array global, none on one host only.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from scpr_jax.train.distributed import global_mesh, to_global

AXIS = "members"


@dataclass(frozen=True)
class Members:
    """The member axis of a sweep: a seed and a value of each swept leaf per member."""

    seeds: tuple[int, ...]
    hparams: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.seeds)
        if n == 0 or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds={self.seeds!r} must be a non-empty list of integers >= 0")
        for name, values in self.hparams.items():
            if len(values) != n:
                raise ValueError(f"hyperparameter {name!r} has {len(values)} values for {n} seeds")

    def __iter__(self) -> Iterator[int]:
        return iter(self.seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def describe(self, j: int) -> dict:
        """Member j's seed and hyperparameters."""
        return {"seed": self.seeds[j], **{k: v[j] for k, v in self.hparams.items()}}


def grid(seeds: Sequence[int], values: Mapping[str, Sequence[float]]) -> Members:
    """Every combination of ``values`` (outer, in order) times every seed (inner)."""
    names = list(values)
    combos = list(itertools.product(*(values[n] for n in names))) or [()]
    member_seeds = tuple(int(s) for _ in combos for s in seeds)
    hparams = {n: tuple(float(c[i]) for c in combos for _ in seeds) for i, n in enumerate(names)}
    return Members(member_seeds, hparams)


def _name(path) -> str:
    last = path[-1]
    return str(getattr(last, "name", getattr(last, "key", last)))


def sweepable(tree: Any, n_members: int) -> list[str]:
    """Names of the leaves of ``tree`` that are one float per member ([n_members])."""
    names = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if path and jnp.shape(leaf) == (n_members,) and jnp.issubdtype(leaf.dtype, jnp.floating):
            names.add(_name(path))
    return sorted(names)


def set_leaves(tree: Any, hparams: Mapping[str, Sequence[float]]) -> Any:
    """``tree`` with every leaf named k in ``hparams`` replaced by its member values [M]."""
    if not hparams:
        return tree
    n = len(next(iter(hparams.values())))
    unknown = set(hparams) - set(sweepable(tree, n))
    if unknown:
        raise ValueError(
            f"cannot sweep {sorted(unknown)} as a vmapped axis: not a per-member leaf of this "
            f"stage's state; sweepable here: {', '.join(sweepable(tree, n))}"
        )

    def put(path, leaf):
        name = _name(path) if path else ""
        if name in hparams and jnp.shape(leaf) == (n,):
            return jnp.asarray(hparams[name], leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(put, tree)


def member_sharding(n_members: int) -> NamedSharding | None:
    """Sharding of a leading member axis over all devices; None if there is one device or
    ``n_members`` does not divide evenly (the run then stays on the default device)."""
    n_devices = jax.device_count()
    if n_devices == 1 or n_members % n_devices:
        return None
    return NamedSharding(global_mesh(AXIS), PartitionSpec(AXIS))


def place(tree: Any, n_members: int | None, data: Any = None) -> tuple[Any, Any]:
    """(``tree`` with its member axis sharded over the devices, ``data`` replicated).

    With several processes ``tree`` and ``data`` must hold the same values in each; a tree
    without an evenly divisible member axis is then replicated on every device.
    """
    sharding = member_sharding(n_members) if n_members else None
    multi = jax.process_count() > 1
    if sharding is None and not multi:
        return tree, data
    replicated = NamedSharding(global_mesh(AXIS), PartitionSpec())
    if not multi:
        return jax.device_put(tree, sharding), jax.device_put(data, replicated)
    return to_global(tree, sharding or replicated), to_global(data, replicated)


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # typed PRNG keys (key<fry>: 8 bytes)
        return int(getattr(dtype, "itemsize", 8))
    return np.dtype(dtype).itemsize


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``, typed keys included."""
    return sum(int(np.prod(x.shape)) * _itemsize(x.dtype) for x in jax.tree.leaves(tree))


def device_memory() -> int:
    """Bytes one device can still allocate: its allocator limit less what is in use, or the
    host's free memory on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(member_bytes: int, n_members: int, shared_bytes: int = 0) -> None:
    """Raises ValueError, with the estimate, if the members' states (sharded over the devices
    when `member_sharding` allows) plus the shared data would not fit in 90% of a device."""
    per_device = (
        n_members if member_sharding(n_members) is None else n_members // jax.device_count()
    )
    need = member_bytes * per_device + shared_bytes
    limit = device_memory()
    if need > 0.9 * limit:
        raise ValueError(
            f"this run needs ~{need / 2**30:.2f} GiB per device ({n_members} members x "
            f"{member_bytes / 2**20:.1f} MiB of state, {per_device} on each device, plus "
            f"{shared_bytes / 2**20:.1f} MiB of shared data), but a device has "
            f"{limit / 2**30:.2f} GiB; use fewer seeds per run, more devices or a smaller buffer"
        )


def check_program(compiled: jax.stages.Compiled, stage: str) -> None:
    """Raises ValueError if running ``compiled`` (its inputs already allocated) needs more than
    90% of what a device can still allocate, by XLA's memory analysis: outputs plus temporaries
    (activations of every member) less the buffers it reuses."""
    mem = compiled.memory_analysis()
    if mem is None:  # a backend without the analysis
        return
    need = mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    limit = device_memory()
    if need > 0.9 * limit:
        raise ValueError(
            f"stage {stage!r}: one training chunk needs ~{need / 2**30:.2f} GiB more per device "
            f"(XLA's estimate: {mem.temp_size_in_bytes / 2**30:.2f} GiB of temporaries such as "
            f"activations, {mem.output_size_in_bytes / 2**30:.2f} GiB of outputs), but a device "
            f"can still allocate {limit / 2**30:.2f} GiB; use fewer seeds per run, more "
            "devices, a smaller batch or more microbatches"
        )
