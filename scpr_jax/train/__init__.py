"""The shared training loop: jitted scan chunks, logging, orbax checkpoints, resume."""

from scpr_jax.train.logging import MetricLogger
from scpr_jax.train.loop import LoopState, init_loop, make_chunk, seed_axis, train_loop

__all__ = ["LoopState", "MetricLogger", "init_loop", "make_chunk", "seed_axis", "train_loop"]
