"""Offline-RL losses as pure per-example functions: IQL's expectile regression and advantage
weights (Kostrikov, Nair and Levine, 2022), shared by `agents.iql` and `data.value`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """IQL asymmetric L2: |tau - 1(u < 0)| * u^2 with u = Q - V.  [...] -> [...]."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * jnp.square(diff)


def awr_weight(adv: jax.Array, temperature: float, max_weight: float = 100.0) -> jax.Array:
    """IQL advantage weights exp(temperature * A) clipped at ``max_weight``.  [...] -> [...]."""
    return jnp.minimum(jnp.exp(temperature * adv), max_weight)
