"""The shared training loop: jitted scan chunks, logging, orbax checkpoints, resume."""

from scpr_jax.train.logging import MetricLogger
from scpr_jax.train.loop import LoopState, make_chunk, train_loop

__all__ = ["LoopState", "MetricLogger", "make_chunk", "train_loop"]
