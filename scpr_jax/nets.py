"""Small network building blocks shared by every agent (Flax linen, pure init/apply)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Multi-layer perceptron: hidden layers with ``activation``, linear output [..., out]."""

    hidden: Sequence[int]
    out: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    final_scale: float = 1.0  # scale of the last layer's initialisation

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        init = nn.initializers.variance_scaling(self.final_scale, "fan_avg", "uniform")
        return nn.Dense(self.out, kernel_init=init)(x)


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with slope 0.2 (the paper's decoders)."""
    return nn.leaky_relu(x, negative_slope=0.2)


ACTIVATIONS = {"relu": nn.relu, "leaky_relu": leaky_relu}  # by name, for saved descriptions
