"""In-memory datasets and uniform minibatch sampling, drawn as the JAX samplers draw them.

Transitions: `sample_rows` is the uniform row draw of `scpr_jax.downstream.offline`,
`online.sample_replay` and the benchmark's IQL / SAC samplers. Preference sets: `SetData`
keeps D_tau's rows once plus segment starts and labels, and `sample_sets` gathers a batch
of labelled sets like `scpr_jax.skills.batches.sample_sets` (and `train_cpl` with the frozen
posteriors attached).
"""

from __future__ import annotations

import dataclasses

import torch


def sample_rows(data: dict, batch_size: int, gen: torch.Generator) -> dict:
    """[batch_size] rows drawn uniformly with replacement from every [N, ...] tensor."""
    n = next(iter(data.values())).shape[0]
    i = torch.randint(n, (batch_size,), generator=gen)
    return {name: x[i] for name, x in data.items()}


@dataclasses.dataclass
class SetData:
    """Labelled preference sets over D_tau (mirrors `scpr_jax.skills.batches.SetData`)."""

    obs: torch.Tensor  # [N, O] goal-stripped observations
    action: torch.Tensor  # [N, A]
    starts1: torch.Tensor  # [n_sets, P] int64 segment starts
    starts2: torch.Tensor  # [n_sets, P]
    y: torch.Tensor  # [n_users, n_sets, P] 1.0 if sigma1 is preferred
    users: torch.Tensor  # [M] user of each labelled set
    sets: torch.Tensor  # [M] set of each labelled set
    segment_len: int
    z_mean: torch.Tensor | None = None  # [M, Z] frozen posteriors (CPL only)
    z_logvar: torch.Tensor | None = None


def take_sets(data: SetData, idx: torch.Tensor, feats: bool = True) -> dict:
    """Labelled sets ``idx`` [B]: obs1/obs2 [B, P, L, O], act1/act2 [B, P, L, A], y [B, P],
    plus feats [B, P, L, 2 O + 1] (the encoder input) or z_mean/z_logvar [B, Z]."""
    s = data.sets[idx]
    y = data.y[data.users[idx], s]
    steps = torch.arange(data.segment_len)
    rows1 = data.starts1[s][..., None] + steps  # [B, P, L]
    rows2 = data.starts2[s][..., None] + steps
    batch = {
        "obs1": data.obs[rows1],
        "obs2": data.obs[rows2],
        "act1": data.action[rows1],
        "act2": data.action[rows2],
        "y": y,
    }
    if feats:
        label = y[:, :, None, None].expand(*rows1.shape, 1)
        batch["feats"] = torch.cat([batch["obs1"], batch["obs2"], label], dim=-1)
    else:
        batch["z_mean"], batch["z_logvar"] = data.z_mean[idx], data.z_logvar[idx]
    return batch


def sample_sets(data: SetData, batch_size: int, gen: torch.Generator, feats: bool = True):
    """[batch_size] labelled sets drawn uniformly with replacement (see `take_sets`)."""
    idx = torch.randint(data.users.shape[0], (batch_size,), generator=gen)
    return take_sets(data, idx, feats)
