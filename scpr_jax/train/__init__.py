"""The shared training loop: jitted scan chunks, logging, orbax checkpoints, resume."""

from scpr_jax.train.logging import MetricLogger
from scpr_jax.train.loop import LoopState, init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.sweep import Members, grid, place, set_leaves

__all__ = [
    "LoopState",
    "Members",
    "MetricLogger",
    "grid",
    "init_loop",
    "make_chunk",
    "place",
    "seed_axis",
    "set_leaves",
    "train_loop",
]
