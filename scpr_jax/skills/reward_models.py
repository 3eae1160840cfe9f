"""Baseline reward models (PAPER.md 5): the pooled unimodal BT reward (RC) and SOPL.

Both learn a per-step reward r(s, a) from crowd pairs pooled over users (every user's
labelled pairs treated as one crowd), on goal-stripped observations:

    RC:    logit = sum_t r_hat(sigma1) - sum_t r_hat(sigma2)
           loss  = BCE(logit, y) + 0.1 * mean_{b, t, i} r_hat(sigma_i)_t^2
    SOPL:  logit = (R_task(sigma1) - R_task(sigma2)) + sum_t r_psi(sigma1) - sum_t r_psi(sigma2)
           loss  = BCE(logit, y)   (privileged: R_task is the labelling user's true task return
                                    sum_t r_user, without cost, so r_psi fits the safety residual)

Downstream the offline data D_tau is relabelled as r' = r_new + omega * term (the term of
`rc_term` / `sopl_term`, kept apart from r_new so that omega can be a vmapped sweep axis):

    RC(omega): r' = (1 - omega) * r_new + omega * (r_hat - mean) / std   (term r_hat_std - r_new)
    SOPL, sopl.combine = "centred" (default):
               r' = r_new + w * (r_psi - mean),   w = 0.5               (term r_psi - mean)
    SOPL, sopl.combine = "standardised":
               r' = (1 - w) * r_new + w * (r_psi - mean) / std          (term r_psi_std - r_new)

Two readings of SOPL's "combined with r_new at weight 0.5 (mean-centred)". "centred": r_new
keeps weight 1 and the residual, already in r_user units through the task-return offset in the
logit, is scaled by w. "standardised": RC's convex combination. With deterministic labels the
BT fit makes r_psi only as large as flipping the safety-decided pairs needs (0.56 per unsafe
step on Ball-Run, not K = 10: `experiments/results/diagnostics/ball-run-sopl.md`), so the
"r_user units" calibration of the first reading does not hold. The paper gives no L2 term for
SOPL, so its ``l2_weight`` defaults to 0. Mean and std are taken over all rows of D_tau.

Pair batches: obs1, obs2 [B, L, obs] (the goal, if present, is sliced off), act1, act2
[B, L, act], y [B], and for SOPL task_return1, task_return2 [B].
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from scpr_jax import artifacts
from scpr_jax.data import labels, segments
from scpr_jax.data.preferences import PreferenceSets, annotated_sets
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task, strip_goal
from scpr_jax.nets import MLP, leaky_relu
from scpr_jax.optim import ADAM, adam_step
from scpr_jax.skills import losses

KINDS = ("rc", "sopl")
COMBINES = ("centred", "standardised")  # how SOPL's residual joins r_new (module docstring)
PRESETS = ("paper", "small")


class RewardNet(nn.Module):
    """r([s, a]): MLP with LeakyReLU(0.2), scalar output."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, act], axis=-1)
        return MLP(self.hidden, 1, activation=leaky_relu)(x)[..., 0]


@struct.dataclass
class RewardParams:
    """Weights plus the static architecture; ``obs_size`` is the goal-free observation size."""

    net: Any
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    obs_size: int = struct.field(pytree_node=False)


@struct.dataclass
class RewardState:
    params: RewardParams
    opt_state: optax.OptState
    step: jax.Array  # [] int32
    l2_weight: jax.Array  # [] weight of the mean squared predicted reward
    lr: jax.Array  # [] Adam step size (a leaf: sweepable without recompiling)
    kind: str = struct.field(pytree_node=False)  # "rc" or "sopl"


@struct.dataclass
class RewardStats:
    mean: jax.Array  # [] mean of r over D_tau
    std: jax.Array  # [] standard deviation of r over D_tau


@struct.dataclass
class PairData:
    """Pooled crowd pairs over D_tau, on device (one row per labelled pair)."""

    obs: jax.Array  # [N, obs] goal-stripped observations of D_tau
    action: jax.Array  # [N, act]
    starts1: jax.Array  # [M] int32 start row of sigma1
    starts2: jax.Array  # [M] int32
    y: jax.Array  # [M] 1.0 if the labelling user preferred sigma1
    task_return1: jax.Array  # [M] labelling user's sum_t r_user over sigma1 (no cost)
    task_return2: jax.Array  # [M]
    segment_len: int = struct.field(pytree_node=False)


def reward_config(preset: str, kind: str) -> ml_collections.ConfigDict:
    """Settings of the RC ("rc") or SOPL ("sopl") reward at ``preset``, locked."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if kind not in KINDS:
        raise ValueError(f"unknown reward model {kind!r}; valid: {', '.join(KINDS)}")
    cfg = ml_collections.ConfigDict()
    cfg.kind = kind  # "rc" (pooled unimodal BT) or "sopl" (task return in the logit)
    cfg.hidden = (256, 256) if preset == "paper" else (128, 128)  # MLP widths
    cfg.lr = 1e-4  # Adam learning rate
    cfg.batch_size = 256  # pairs per update
    cfg.epochs = 1000 if preset == "paper" else 50  # passes over the pooled training pairs
    cfg.chunk = 1000 if preset == "paper" else 250  # updates per jitted lax.scan
    cfg.l2_weight = 0.1 if kind == "rc" else 0.0  # weight of mean r^2 (paper: RC only)
    cfg.weight = 0.5  # RC: omega; SOPL: weight of the residual
    if kind == "sopl":
        cfg.combine = "centred"  # "centred" or "standardised" (module docstring)
    return cfg.lock()


def validate_reward_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid field."""
    rules = {  # field -> (valid?, what is allowed)
        "kind": (cfg.kind in KINDS, f"one of {KINDS}"),
        "hidden": (len(cfg.hidden) >= 1 and all(int(w) >= 1 for w in cfg.hidden), "widths >= 1"),
        "lr": (cfg.lr > 0, "> 0"),
        "batch_size": (cfg.batch_size >= 1, ">= 1"),
        "epochs": (cfg.epochs >= 1, ">= 1"),
        "chunk": (cfg.chunk >= 1, ">= 1"),
        "l2_weight": (cfg.l2_weight >= 0, ">= 0"),
        "weight": (0.0 <= cfg.weight <= 1.0, "in [0, 1]"),
        "combine": (cfg.get("combine", "centred") in COMBINES, f"one of {COMBINES}"),
    }
    for field, (ok, allowed) in rules.items():
        if not ok:
            raise ValueError(f"reward config: {field}={cfg[field]!r} invalid; must be {allowed}")


def total_updates(cfg: ml_collections.ConfigDict, n_pairs: int) -> int:
    """epochs * ceil(n_pairs / batch_size), rounded up to a multiple of ``chunk``."""
    steps = cfg.epochs * math.ceil(n_pairs / cfg.batch_size)
    return cfg.chunk * math.ceil(steps / cfg.chunk)


def reward_init(key: jax.Array, obs_size: int, action_size: int, config) -> RewardState:
    """Fresh reward model; ``config`` provides kind, hidden, lr and l2_weight."""
    validate_reward_config(config)
    hidden = tuple(int(w) for w in config.hidden)
    net = RewardNet(hidden).init(key, jnp.zeros((1, obs_size)), jnp.zeros((1, action_size)))
    params = RewardParams(net=net, hidden=hidden, obs_size=int(obs_size))
    return RewardState(
        params=params,
        opt_state=ADAM.init(params),
        step=jnp.asarray(0, jnp.int32),
        l2_weight=jnp.asarray(config.l2_weight, jnp.float32),
        lr=jnp.asarray(config.lr, jnp.float32),
        kind=str(config.kind),
    )


def reward_fn(params: RewardParams, obs: jax.Array, act: jax.Array) -> jax.Array:
    """Per-step r(s, a); goal features past ``obs_size`` dropped.  [..., O], [..., A] -> [...]."""
    return RewardNet(params.hidden).apply(params.net, obs[..., : params.obs_size], act)


def pair_loss(params: RewardParams, batch: dict, l2_weight, kind: str):
    """BCE of the (offset) BT logit + l2_weight * mean r^2 over a pair batch.  -> ([], metrics)."""
    r1 = reward_fn(params, batch["obs1"], batch["act1"])  # [B, L]
    r2 = reward_fn(params, batch["obs2"], batch["act2"])
    logit = losses.bt_logit(r1, r2)
    if kind == "sopl":
        logit = logit + batch["task_return1"] - batch["task_return2"]
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, batch["y"]))
    l2 = 0.5 * (jnp.mean(jnp.square(r1)) + jnp.mean(jnp.square(r2)))
    loss = bce + l2_weight * l2
    accuracy = jnp.mean((logit > 0) == (batch["y"] > 0.5))
    return loss, {"loss": loss, "bce": bce, "l2": l2, "accuracy": accuracy}


def reward_update(state: RewardState, batch: dict, key: jax.Array):
    """One Adam step on a pair batch (``key`` unused: the loss is deterministic)."""
    del key
    grads, metrics = jax.grad(pair_loss, has_aux=True)(
        state.params, batch, state.l2_weight, state.kind
    )
    params, opt_state = adam_step(state.params, grads, state.opt_state, state.lr)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics


def pooled_pairs(
    prefs: PreferenceSets, trajs: Trajectories, task: Task, split: str = "train"
) -> PairData:
    """Every labelled (user, set, pair) of a split as one crowd, with each user's task returns."""
    z, sets = annotated_sets(prefs, split)  # [n_labelled]
    n_pairs = prefs.n_pairs
    starts1 = jnp.asarray(np.asarray(prefs.starts1)[sets].reshape(-1))
    starts2 = jnp.asarray(np.asarray(prefs.starts2)[sets].reshape(-1))
    user = jnp.asarray(np.repeat(z, n_pairs))  # labelling user of every pair [M]
    y = prefs.y[user, jnp.repeat(jnp.asarray(sets), n_pairs), jnp.tile(jnp.arange(n_pairs), len(z))]

    # each user's per-row task reward (K = 0: no cost) [n_users, N]; a pair reads its labeller's
    r_task = jax.vmap(labels.user_rewards, (None, None, 0, None))(
        trajs, task, prefs.user_goals, jnp.float32(0.0)
    )

    def task_return(u, start):  # [] sum of r_task[u] over the segment starting at ``start``
        return jax.lax.dynamic_slice(r_task, (u, start), (1, prefs.segment_len)).sum()

    return PairData(
        obs=strip_goal(trajs.obs, task),
        action=trajs.action,
        starts1=starts1,
        starts2=starts2,
        y=y,
        task_return1=jax.vmap(task_return)(user, starts1),
        task_return2=jax.vmap(task_return)(user, starts2),
        segment_len=prefs.segment_len,
    )


def sample_pair_batch(key: jax.Array, data: PairData, batch_size: int) -> dict:
    """A uniformly drawn batch of pooled pairs with gathered segments (see module doc)."""
    idx = jax.random.randint(key, (batch_size,), 0, data.y.shape[0])

    def seg(x, starts):
        return segments.gather_segments(x, starts[idx], data.segment_len)

    return {
        "obs1": seg(data.obs, data.starts1),
        "act1": seg(data.action, data.starts1),
        "obs2": seg(data.obs, data.starts2),
        "act2": seg(data.action, data.starts2),
        "y": data.y[idx],
        "task_return1": data.task_return1[idx],
        "task_return2": data.task_return2[idx],
    }


def predict_rewards(params: RewardParams, trajs: Trajectories, chunk: int = 4096) -> jax.Array:
    """r(s, a) on every row of D_tau in chunks of ``chunk`` rows (bounded memory).  -> [N]."""
    xs = (trajs.obs, trajs.action)
    return jax.lax.map(lambda x: reward_fn(params, *x), xs, batch_size=chunk)


def reward_stats(params: RewardParams, trajs: Trajectories) -> RewardStats:
    """Mean and standard deviation of the predicted reward over all rows of D_tau."""
    r = predict_rewards(params, trajs)
    return RewardStats(mean=jnp.mean(r), std=jnp.std(r))


def rc_term(trajs: Trajectories, params: RewardParams, stats: RewardStats) -> jax.Array:
    """RC's term (r_hat - mean) / std - r_new of every row: r' = r_new + omega * term.  -> [N]."""
    r_hat = (predict_rewards(params, trajs) - stats.mean) / jnp.maximum(stats.std, 1e-6)
    return r_hat - trajs.reward


def sopl_term(
    trajs: Trajectories, params: RewardParams, stats: RewardStats, combine: str = "centred"
) -> jax.Array:
    """SOPL's term of every row, r' = r_new + w * term: r_psi - mean ("centred") or
    (r_psi - mean) / std - r_new ("standardised").  -> [N]."""
    centred = predict_rewards(params, trajs) - stats.mean
    if combine == "centred":
        return centred
    if combine == "standardised":
        return centred / jnp.maximum(stats.std, 1e-6) - trajs.reward
    raise ValueError(f"sopl.combine={combine!r} invalid; must be one of {COMBINES}")


def save_reward(directory, params: RewardParams, kind: str) -> None:
    """The trained ``kind`` ("rc" / "sopl") reward as the stage's artifact ``reward``."""
    meta = {"kind": kind, "hidden": list(params.hidden), "obs_size": params.obs_size}
    artifacts.save(directory, "reward", "reward model", params, meta)


def load_reward(directory, kind: str) -> RewardParams:
    """The `RewardParams` of `save_reward` (ArtifactError if it is another model's)."""
    state, meta = artifacts.load(directory, "reward", "reward model")
    if meta["kind"] != kind:
        raise artifacts.ArtifactError(f"{directory}/reward.json is a {meta['kind']!r} reward")
    return RewardParams(net=state["net"], hidden=tuple(meta["hidden"]), obs_size=meta["obs_size"])
