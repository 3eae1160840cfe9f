"""Training the RC / SOPL baseline reward models through the shared loop (PAPER.md 5)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from scpr_jax.data.preferences import PreferenceSets
from scpr_jax.data.segments import gather_segments
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task
from scpr_jax.skills import reward_models as rm
from scpr_jax.train import LoopState, init_loop, make_chunk, seed_axis, train_loop
from scpr_jax.train.loop import Seeds


def _held_out(params: rm.RewardParams, pairs: rm.PairData, kind: str) -> dict:
    """Held-out pooled pair accuracy and loss (jit/vmap-able)."""

    def seg(x, starts):
        return gather_segments(x, starts, pairs.segment_len)

    batch = {
        "obs1": seg(pairs.obs, pairs.starts1),
        "act1": seg(pairs.action, pairs.starts1),
        "obs2": seg(pairs.obs, pairs.starts2),
        "act2": seg(pairs.action, pairs.starts2),
        "y": pairs.y,
        "task_return1": pairs.task_return1,
        "task_return2": pairs.task_return2,
    }
    _, metrics = rm.pair_loss(params, batch, 0.0, kind)
    return {"accuracy": metrics["accuracy"], "bce": metrics["bce"]}


def safety_gap(params: rm.RewardParams, trajs: Trajectories) -> dict:
    """Mean predicted reward on safe (cost 0) and unsafe (cost 1) rows of D_tau."""
    r = np.asarray(rm.predict_rewards(params, trajs))  # the goal is sliced off inside
    unsafe = np.asarray(trajs.cost) > 0
    return {
        "reward_safe_rows": float(r[~unsafe].mean()) if (~unsafe).any() else float("nan"),
        "reward_unsafe_rows": float(r[unsafe].mean()) if unsafe.any() else float("nan"),
    }


def train_reward_model(
    key: jax.Array,
    trajs: Trajectories,
    prefs: PreferenceSets,
    task: Task,
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    progress: Callable[[int, int, dict], None] | None = None,
    seeds: Seeds = 0,
) -> tuple[rm.RewardState, dict]:
    """Trains (or resumes) the pooled RC or SOPL reward on D_pref; returns (state, summary).

    ``cfg.kind`` selects the model; updates = epochs over the pooled training pairs (see
    `reward_models.total_updates`). ``seeds``: an int or a list of seeds run vmapped.
    """
    rm.validate_reward_config(cfg)
    train = rm.pooled_pairs(prefs, trajs, task, "train")
    held_out = rm.pooled_pairs(prefs, trajs, task, "eval")
    n_seeds = seed_axis(seeds)
    total = rm.total_updates(cfg, int(train.y.shape[0]))
    obs_size, action_size = task.obs_size, task.action_size

    def sample(k, data):
        return rm.sample_pair_batch(k, data, int(cfg.batch_size))

    held = jax.jit(jax.vmap(_held_out, (0, None, None)) if n_seeds else _held_out, static_argnums=2)

    def eval_fn(loop: LoopState) -> dict:
        return jax.device_get(held(loop.algo.params, held_out, cfg.kind))

    loop = train_loop(
        f"reward-{cfg.kind}",
        init_loop(key, lambda k: rm.reward_init(k, obs_size, action_size, cfg), seeds),
        make_chunk(rm.reward_update, sample, int(cfg.chunk)),
        train, total, int(cfg.chunk), workdir, n_seeds=n_seeds, evaluate=eval_fn,
        eval_every=int(cfg.chunk) * 4, progress=progress,
    )  # fmt: skip
    metrics = eval_fn(loop)
    summary = {
        "updates": total,
        "train_pairs": int(train.y.shape[0]),
        "held_out_pairs": int(held_out.y.shape[0]),
        "accuracy": np.asarray(metrics["accuracy"]).tolist(),
        "bce": np.asarray(metrics["bce"]).tolist(),
    }
    if n_seeds is None:
        summary.update(safety_gap(loop.algo.params, trajs))
    return loop.algo, summary
