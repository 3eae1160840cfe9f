"""Preference sets as on-device training data: one labelled set per (user, set) pair.

A `SetData` keeps D_tau's goal-stripped observations and actions once, plus the segment
indices and labels of D_pref; `set_example` gathers one user's labelled set in the format
of `vae` (feats, obs1, obs2, act1, act2, y) and `sample_sets` draws a batch of them inside
a jitted scan.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from scpr_jax.data.preferences import PreferenceSets, annotated_sets
from scpr_jax.data.segments import encoder_inputs, gather_segments
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task, strip_goal


@struct.dataclass
class SetData:
    """D_pref over D_tau, on device (shared by all seeds of a sweep)."""

    obs: jax.Array  # [N, obs] goal-stripped observations of D_tau
    action: jax.Array  # [N, act]
    starts1: jax.Array  # [n_sets, P] int32
    starts2: jax.Array  # [n_sets, P] int32
    y: jax.Array  # [n_users, n_sets, P] float32
    users: jax.Array  # [M] int32 user of each labelled (user, set) pair of the split
    sets: jax.Array  # [M] int32 set of each labelled pair
    segment_len: int = struct.field(pytree_node=False, default=64)

    @property
    def size(self) -> int:
        return self.users.shape[0]


def set_data(trajs: Trajectories, prefs: PreferenceSets, task: Task, split: str) -> SetData:
    """The labelled (user, set) pairs of ``split`` ("train" or "eval") with D_tau on device."""
    users, sets = annotated_sets(prefs, split)
    if users.size == 0:
        raise ValueError(f"split {split!r} has no labelled sets")
    return SetData(
        obs=strip_goal(trajs.obs, task),
        action=trajs.action,
        starts1=prefs.starts1,
        starts2=prefs.starts2,
        y=prefs.y,
        users=jnp.asarray(users),
        sets=jnp.asarray(sets),
        segment_len=prefs.segment_len,
    )


def set_example(data: SetData, i: jax.Array) -> dict:
    """The i-th labelled set: feats [P, L, 2 obs + 1], obs1/obs2 [P, L, obs],
    act1/act2 [P, L, act], y [P]."""
    z, s, L = data.users[i], data.sets[i], data.segment_len
    y = data.y[z, s]
    return {
        "feats": encoder_inputs(data.obs, data.starts1[s], data.starts2[s], y, L),
        "obs1": gather_segments(data.obs, data.starts1[s], L),
        "obs2": gather_segments(data.obs, data.starts2[s], L),
        "act1": gather_segments(data.action, data.starts1[s], L),
        "act2": gather_segments(data.action, data.starts2[s], L),
        "y": y,
    }


def sample_sets(key: jax.Array, data: SetData, batch_size: int) -> dict:
    """A batch of labelled sets drawn uniformly with replacement (leading axis B)."""
    idx = jax.random.randint(key, (batch_size,), 0, data.size)
    return jax.vmap(set_example, in_axes=(None, 0))(data, idx)


def all_sets(data: SetData) -> dict:
    """Every labelled set of ``data`` as one batch (for evaluation)."""
    return jax.vmap(set_example, in_axes=(None, 0))(data, jnp.arange(data.size))


def per_user_mean(values: jax.Array, users: jax.Array, n_users: int) -> np.ndarray:
    """Mean of per-set values grouped by user [n_users] (NaN for users without sets)."""
    values, users = np.asarray(values, np.float64), np.asarray(users)
    total = np.bincount(users, weights=values, minlength=n_users)
    count = np.bincount(users, minlength=n_users)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def accuracy_summary(accuracy, users, n_users: int, batched: bool, **per_set) -> dict:
    """Held-out accuracy (mean and per user) of one run, or of each seed when ``batched``
    (then every entry is a list over seeds).  accuracy [(S,) M]; per_set: name -> fn(seed)."""

    def one(i, acc):
        out = {
            "accuracy": float(np.mean(acc)),
            "accuracy_per_user": per_user_mean(acc, users, n_users).tolist(),
        }
        return out | {name: fn(i) for name, fn in per_set.items()}

    if not batched:
        return one(None, accuracy)
    runs = [one(i, a) for i, a in enumerate(accuracy)]
    return {k: [r[k] for r in runs] for k in runs[0]}


def accuracy_log(summary: dict) -> dict:
    """`accuracy_summary` as train_loop eval metrics: accuracy, accuracy_user<z>."""
    per_user = np.asarray(summary["accuracy_per_user"]).T  # [n_users(, n_seeds)]
    return {
        "accuracy": np.asarray(summary["accuracy"]),
        **{f"accuracy_user{z}": a for z, a in enumerate(per_user)},
    }
