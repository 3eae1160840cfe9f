"""Crowd preference sets D_pref (PAPER.md 3.2): container, presets, builder, summary.

A preference *set* is n_pairs pairs of L-step segments of D_tau; with dense annotation every
crowd user labels every set, so D_pref holds n_sets x n_users labelled sets that share
segments and differ in labels. Segments are stored as start rows (see `segments`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from scpr_jax.data import labels, segments
from scpr_jax.data.labels import ValueFn
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import TASKS, Task, strip_goal, task_class

PRESETS = ("paper", "small")
LABEL_KINDS = ("partial", "regret")


@struct.dataclass
class PreferenceSets:
    """Crowd-labelled preference sets over segments of one `Trajectories`."""

    starts1: jax.Array  # [n_sets, n_pairs] int32 start row of sigma1
    starts2: jax.Array  # [n_sets, n_pairs] int32 start row of sigma2
    y: jax.Array  # [n_users, n_sets, n_pairs] float32, 1.0 when user prefers sigma1
    annotated: jax.Array  # [n_users, n_sets] bool, user labelled this set
    user_goals: jax.Array  # [n_users, goal_size] the crowd's hidden goals
    train_sets: jax.Array  # [n_train] int32 set indices of the training split
    eval_sets: jax.Array  # [n_eval] int32 set indices of the evaluation split
    segment_len: int = struct.field(pytree_node=False, default=64)

    @property
    def n_users(self) -> int:
        return self.y.shape[0]

    @property
    def n_sets(self) -> int:
        return self.y.shape[1]

    @property
    def n_pairs(self) -> int:
        return self.y.shape[2]


def label_config(preset: str, task_name: str) -> ml_collections.ConfigDict:
    """Labelling settings of a preset ("paper" or "small") for one task (locked)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}; valid tasks: {', '.join(TASKS)}")
    paper = task_class(task_name).paper  # the task's crowd and segment sizes (PAPER.md 3.2, 4)
    cfg = ml_collections.ConfigDict()
    cfg.n_sets = 5000 if preset == "paper" else 500  # preference sets (shared by all users)
    cfg.n_pairs = paper.n_pairs  # segment pairs per set
    cfg.segment_len = paper.segment_len or (64 if preset == "paper" else 32)  # steps L
    cfg.kind = "partial"  # "partial" (partial return, Safe-VPL) or "regret" (Safe-CPL)
    cfg.K = 10.0  # safety penalty per unsafe step inside every user's reward
    cfg.n_users = paper.n_users  # crowd size (other sizes: labels.crowd_goals)
    cfg.flip_ratio = 0.0  # probability of flipping each label (noise ablation)
    cfg.minority_ratio = 1.0  # share of sets labelled by users 1.. (user 0 labels all)
    cfg.eval_fraction = 0.1  # share of sets held out for evaluation
    return cfg.lock()


def validate_label_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field."""
    rules = {  # field -> (valid?, what is allowed)
        "n_sets": (cfg.n_sets >= 2, ">= 2"),
        "n_pairs": (cfg.n_pairs >= 1, ">= 1"),
        "segment_len": (cfg.segment_len >= 1, ">= 1"),
        "kind": (cfg.kind in LABEL_KINDS, f"one of {LABEL_KINDS}"),
        "K": (cfg.K >= 0, ">= 0"),
        "n_users": (cfg.n_users >= 1, ">= 1"),
        "flip_ratio": (0.0 <= cfg.flip_ratio <= 1.0, "in [0, 1]"),
        "minority_ratio": (0.0 < cfg.minority_ratio <= 1.0, "in (0, 1]"),
        "eval_fraction": (0.0 < cfg.eval_fraction < 1.0, "in (0, 1)"),
    }
    for field, (ok, allowed) in rules.items():
        if not ok:
            raise ValueError(f"label config: {field}={cfg[field]!r} invalid; must be {allowed}")


@partial(jax.jit, static_argnames=("n_sets", "eval_fraction"))
def split_sets(key: jax.Array, n_sets: int, eval_fraction: float) -> tuple[jax.Array, jax.Array]:
    """Random train/eval split of set indices (sorted) ([n_train], [n_eval]) int32."""
    n_eval = min(max(round(eval_fraction * n_sets), 1), n_sets - 1)
    order = jax.random.permutation(key, n_sets).astype(jnp.int32)
    return jnp.sort(order[n_eval:]), jnp.sort(order[:n_eval])


def make_preferences(
    key: jax.Array,
    trajs: Trajectories,
    task: Task,
    cfg: ml_collections.ConfigDict,
    value_fn: ValueFn | None = None,
) -> PreferenceSets:
    """Samples segment pairs of D_tau and labels them by the simulated crowd.

    ``value_fn(user, obs) -> V`` (goal-stripped obs) is required for ``cfg.kind == "regret"``,
    e.g. `value.user_value_fn` of a `value.fit_user_values` state.
    """
    validate_label_config(cfg)
    if (cfg.kind == "regret") != (value_fn is not None):
        raise ValueError(f"kind={cfg.kind!r} needs value_fn exactly when kind is 'regret'")
    k_pairs, k_flip, k_mask, k_split = jax.random.split(key, 4)
    starts1, starts2 = segments.sample_pairs(
        k_pairs, trajs, cfg.n_sets, cfg.n_pairs, cfg.segment_len
    )
    goals = jnp.asarray(labels.crowd_goals(task, cfg.n_users))
    y = labels.crowd_labels(
        trajs, task, goals, float(cfg.K), starts1, starts2, cfg.segment_len, value_fn
    )
    train_sets, eval_sets = split_sets(k_split, cfg.n_sets, cfg.eval_fraction)
    return PreferenceSets(
        starts1=starts1,
        starts2=starts2,
        y=labels.flip_labels(k_flip, y, cfg.flip_ratio),
        annotated=labels.annotation_mask(k_mask, cfg.n_users, cfg.n_sets, cfg.minority_ratio),
        user_goals=goals,
        train_sets=train_sets,
        eval_sets=eval_sets,
        segment_len=cfg.segment_len,
    )


def set_segments(
    prefs: PreferenceSets, obs: jax.Array, task: Task, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Goal-stripped observation segments (sigma1, sigma2) of set s, each [n_pairs, L, obs].

    obs: [N, obs_size + goal_obs_size] observations of D_tau.
    """
    obs = strip_goal(obs, task)
    return (
        segments.gather_segments(obs, prefs.starts1[s], prefs.segment_len),
        segments.gather_segments(obs, prefs.starts2[s], prefs.segment_len),
    )


def set_features(prefs: PreferenceSets, obs: jax.Array, z: jax.Array, s: jax.Array) -> jax.Array:
    """Encoder input of user z's set s: [s1_t, s2_t, y] per step [n_pairs, L, 2 * obs + 1].

    obs: [N, obs] goal-stripped observations (strip once, outside the training loop).
    """
    return segments.encoder_inputs(
        obs, prefs.starts1[s], prefs.starts2[s], prefs.y[z, s], prefs.segment_len
    )


def annotated_sets(prefs: PreferenceSets, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(user, set) index pairs of the labelled sets of a split, each [n_labelled] int32."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r} must be 'train' or 'eval'")
    sets = np.asarray(prefs.train_sets if split == "train" else prefs.eval_sets)
    z, i = np.nonzero(np.asarray(prefs.annotated)[:, sets])
    return z.astype(np.int32), sets[i].astype(np.int32)


def summary(prefs: PreferenceSets) -> dict:
    """Sets per user, label balance (fraction of y = 1) per user, and crowd disagreement.

    Disagreement: fraction of pairs, among sets labelled by >= 2 users, on which the labelling
    users do not all agree.
    """
    y = np.asarray(prefs.y)
    mask = np.asarray(prefs.annotated)
    per_set = mask.sum(0)
    balance = [
        float(y[z][mask[z]].mean()) if mask[z].any() else float("nan") for z in range(prefs.n_users)
    ]
    shared = per_set >= 2
    if shared.any():
        m = mask[:, shared][:, :, None]
        ones = np.where(m, y[:, shared], 0.0).sum(0)
        disagree = float(((ones > 0) & (ones < per_set[shared][:, None])).mean())
    else:
        disagree = float("nan")
    return {
        "sets_per_user": mask.sum(1).tolist(),
        "label_balance": balance,
        "disagreement": disagree,
        "n_train_sets": int(prefs.train_sets.shape[0]),
        "n_eval_sets": int(prefs.eval_sets.shape[0]),
    }
