"""Network blocks of the PyTorch references and loading of Flax parameters into them."""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

leaky_relu = functools.partial(F.leaky_relu, negative_slope=0.2)  # the paper's decoders


class MLP(nn.Module):
    """Hidden Linear layers with ``activation`` and a linear output: [..., in] -> [..., out]."""

    def __init__(
        self,
        in_size: int,
        hidden: Sequence[int],
        out: int,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.relu,
    ):
        super().__init__()
        widths = [in_size, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.out = nn.Linear(widths[-1], out)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.out(x)


class TwinQ(nn.Module):
    """(obs [..., O], action [..., A]) -> Q values [2, ...] of two independent MLPs."""

    def __init__(self, obs_size: int, action_size: int, hidden: Sequence[int]):
        super().__init__()
        self.q1 = MLP(obs_size + action_size, hidden, 1)
        self.q2 = MLP(obs_size + action_size, hidden, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([self.q1(x)[..., 0], self.q2(x)[..., 0]])


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: an independent copy with gradients switched off."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging theta' <- (1 - tau) * theta' + tau * theta, in place."""
    for t, p in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(p, tau)


def _tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


@torch.no_grad()
def load_linear(linear: nn.Linear, dense: dict) -> None:
    """Copies a Flax Dense ({"kernel": [in, out], "bias": [out]}) into ``linear``."""
    linear.weight.copy_(_tensor(dense["kernel"]).T)
    linear.bias.copy_(_tensor(dense["bias"]))


def load_mlp(mlp: MLP, tree: dict) -> None:
    """Copies the variables of a `scpr_jax.nets.MLP` (Dense_0 .. Dense_n) into ``mlp``."""
    layers = [*mlp.hidden, mlp.out]
    if len(tree) != len(layers):
        raise ValueError(f"Flax MLP has {len(tree)} layers; the torch MLP has {len(layers)}")
    for i, layer in enumerate(layers):
        load_linear(layer, tree[f"Dense_{i}"])


def load_twin_q(twin: TwinQ, variables: dict) -> None:
    """Copies `scpr_jax.agents.sac.TwinQ` variables ({"params": {MLP_0, MLP_1}})."""
    load_mlp(twin.q1, variables["params"]["MLP_0"])
    load_mlp(twin.q2, variables["params"]["MLP_1"])


@torch.no_grad()
def load_attention(attention: nn.MultiheadAttention, tree: dict) -> None:
    """Copies a one-head Flax SelfAttention (query/key/value/out) into a packed torch one."""
    kernels = [_tensor(tree[n]["kernel"])[:, 0, :].T for n in ("query", "key", "value")]
    biases = [_tensor(tree[n]["bias"])[0] for n in ("query", "key", "value")]
    attention.in_proj_weight.copy_(torch.cat(kernels))
    attention.in_proj_bias.copy_(torch.cat(biases))
    attention.out_proj.weight.copy_(_tensor(tree["out"]["kernel"])[0].T)
    attention.out_proj.bias.copy_(_tensor(tree["out"]["bias"]))
