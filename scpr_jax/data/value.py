"""Per-user value functions V_z for regret labels, learned offline by expectile regression.

Regret labels (PAPER.md 3.2) score a segment by V_z(s_L) - V_z(s_0) + sum_t r_z,t. The
authors get V_z from a second online SAC per crowd user (3M environment steps each). On a
2-core CPU that is hours per user, so we learn V_z from D_tau itself, relabelled with the
user's reward r_z = r_user(g_z) - K * cost on goal-stripped observations, with IQL-style
in-sample value learning (Kostrikov et al., 2022):

    L_V = E[ |tau - 1(u < 0)| u^2 ],  u = Q_target(s, a) - V(s)          (expectile tau)
    L_Q = E[ (r_z + gamma * (1 - terminated) * V(s') - Q(s, a))^2 ]

An expectile tau near 1 approximates the value of the best in-data behaviour rather than of
the data's mixture policy. All users train together: the update is vmapped over users
(stacked parameters), and chunks of updates run inside one jit(lax.scan). Targets are
divided by a per-user reward scale (max |r_z|) for conditioning and V is scaled back.
`user_value_fn` returns the ``value_fn(user, obs)`` that labelling takes, so an online SAC
critic can be plugged in instead later.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from scpr_jax.agents.losses import expectile_loss
from scpr_jax.data.labels import ValueFn, user_rewards
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import Task, strip_goal
from scpr_jax.nets import MLP


def value_config(preset: str = "small") -> ml_collections.ConfigDict:
    """Static settings of the offline value learner ("paper" or "small"), locked."""
    if preset not in ("paper", "small"):
        raise ValueError(f"unknown preset {preset!r}; valid presets: paper, small")
    cfg = ml_collections.ConfigDict()
    cfg.hidden = (256, 256)  # MLP widths of Q and V
    cfg.lr = 3e-4  # Adam learning rate
    cfg.batch_size = 256  # transitions per update (per user)
    cfg.steps = 200_000 if preset == "paper" else 5_000  # updates per user
    cfg.chunk = 1_000  # updates per jitted lax.scan call
    return cfg.lock()


@struct.dataclass
class ValueHparams:
    """Dynamic hyperparameters (pytree leaves: sweepable with vmap)."""

    gamma: jax.Array | float = 0.99  # discount of V_z (labels themselves use gamma = 1)
    expectile: jax.Array | float = 0.9  # tau of the expectile loss
    polyak: jax.Array | float = 0.005  # target-network step size


@struct.dataclass
class ValueData:
    """D_tau prepared for value learning, on device."""

    obs: jax.Array  # [N, obs] goal-stripped
    action: jax.Array  # [N, action_size]
    next_obs: jax.Array  # [N, obs] goal-stripped
    terminated: jax.Array  # [N] bool
    r: jax.Array  # [n_users, N] r_z / scale_z
    scale: jax.Array  # [n_users] reward scale max |r_z|


@struct.dataclass
class ValueState:
    """One user's learner state (stacked over users when vmapped)."""

    q: dict
    q_target: dict
    v: dict
    q_opt: optax.OptState
    v_opt: optax.OptState
    step: jax.Array  # [] int32


def value_data(trajs: Trajectories, task: Task, user_goals: jax.Array, K: float) -> ValueData:
    """Relabels D_tau with every user's reward r_user - K * cost."""
    r = jax.vmap(user_rewards, in_axes=(None, None, 0, None))(trajs, task, user_goals, K)
    scale = jnp.maximum(jnp.abs(r).max(-1), 1e-6)
    return ValueData(
        obs=strip_goal(trajs.obs, task),
        action=trajs.action,
        next_obs=strip_goal(trajs.next_obs, task),
        terminated=trajs.terminated,
        r=r / scale[:, None],
        scale=scale,
    )


def _nets(cfg):
    return MLP(tuple(cfg.hidden), 1), MLP(tuple(cfg.hidden), 1), optax.adam(cfg.lr)


def init(key: jax.Array, cfg, obs_size: int, action_size: int) -> ValueState:
    """Fresh learner state of one user."""
    q_net, v_net, opt = _nets(cfg)
    k_q, k_v = jax.random.split(key)
    q = q_net.init(k_q, jnp.zeros(obs_size + action_size))
    v = v_net.init(k_v, jnp.zeros(obs_size))
    return ValueState(q, q, v, opt.init(q), opt.init(v), jnp.asarray(0, jnp.int32))


def update(state: ValueState, batch: tuple, hp: ValueHparams, cfg) -> tuple[ValueState, dict]:
    """One IQL value step for one user; batch = (s [B, o], a [B, a], r [B], s' [B, o], term [B])."""
    q_net, v_net, opt = _nets(cfg)
    s, a, r, s_next, term = batch
    sa = jnp.concatenate([s, a], -1)

    def v_loss(v):
        u = q_net.apply(state.q_target, sa)[:, 0] - v_net.apply(v, s)[:, 0]
        return jnp.mean(expectile_loss(u, hp.expectile))

    def q_loss(q):
        target = r + hp.gamma * (1.0 - term) * v_net.apply(state.v, s_next)[:, 0]
        return jnp.mean(jnp.square(jax.lax.stop_gradient(target) - q_net.apply(q, sa)[:, 0]))

    lv, gv = jax.value_and_grad(v_loss)(state.v)
    lq, gq = jax.value_and_grad(q_loss)(state.q)
    dv, v_opt = opt.update(gv, state.v_opt)
    dq, q_opt = opt.update(gq, state.q_opt)
    q = optax.apply_updates(state.q, dq)
    q_target = optax.incremental_update(q, state.q_target, hp.polyak)
    new = ValueState(q, q_target, optax.apply_updates(state.v, dv), q_opt, v_opt, state.step + 1)
    return new, {"v_loss": lv, "q_loss": lq}


def _train_chunk(cfg, n_steps: int):
    """jit(scan) of ``n_steps`` updates, vmapped over users."""

    def one_user(state, key, r, data, hp):
        def body(state, k):
            i = jax.random.randint(k, (cfg.batch_size,), 0, r.shape[0])
            batch = (
                data.obs[i],
                data.action[i],
                r[i],
                data.next_obs[i],
                data.terminated[i].astype(jnp.float32),
            )
            return update(state, batch, hp, cfg)

        return jax.lax.scan(body, state, jax.random.split(key, n_steps))

    return jax.jit(jax.vmap(one_user, in_axes=(0, 0, 0, None, None)))


def fit_user_values(
    key: jax.Array, data: ValueData, cfg, hp: ValueHparams | None = None
) -> tuple[ValueState, dict]:
    """Trains every user's V_z for ``cfg.steps`` updates; returns (stacked state, last metrics)."""
    hp = ValueHparams() if hp is None else hp
    n_users = data.r.shape[0]
    k_init, k_train = jax.random.split(key)
    sizes = (data.obs.shape[-1], data.action.shape[-1])
    state = jax.vmap(lambda k: init(k, cfg, *sizes))(jax.random.split(k_init, n_users))
    chunks, metrics, done, c = {}, {}, 0, 0
    while done < cfg.steps:  # Python loop over chunks only; at most two compiled lengths
        n = min(cfg.chunk, cfg.steps - done)
        if n not in chunks:
            chunks[n] = _train_chunk(cfg, n)
        keys = jax.random.split(jax.random.fold_in(k_train, c), n_users)
        state, metrics = chunks[n](state, keys, data.r, data, hp)
        done, c = done + n, c + 1
    return state, jax.tree.map(lambda m: m[:, -1], metrics)


def user_value_fn(state: ValueState, data: ValueData, cfg) -> ValueFn:
    """``value_fn(user, obs) -> V_z(obs)`` in reward units, for `labels.crowd_labels`."""
    _, v_net, _ = _nets(cfg)

    def value_fn(user, obs):
        v = jax.tree.map(lambda p: p[user], state.v)
        return data.scale[user] * v_net.apply(v, obs)[0]

    return value_fn
