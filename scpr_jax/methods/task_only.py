"""Task-Only (PAPER.md 5): TD3+BC on r_new in the environment's action space; no safety signal.

The cost normaliser of Table 1 (its mean cost is 1.0)."""

from scpr_jax.methods.base import Method

METHOD = Method(name="task-only", online=True)
