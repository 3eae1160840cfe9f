"""Adam with the step size as an argument, so every learner keeps lr as a state leaf (a sweep
over it is a vmap axis, not a recompile)."""

from __future__ import annotations

import jax
import optax

ADAM = optax.scale_by_adam()  # Adam's direction (bias-corrected moments), no step size


def adam_step(params, grads, opt_state: optax.OptState, lr: jax.Array):
    """(params - lr * Adam direction, next Adam state), as ``optax.adam(lr)``; lr [] may be
    traced."""
    direction, opt_state = ADAM.update(grads, opt_state, params)
    return jax.tree.map(lambda p, d: p - lr * d, params, direction), opt_state
