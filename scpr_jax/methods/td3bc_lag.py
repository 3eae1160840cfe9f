"""TD3+BC-Lagrangian: a constrained offline baseline (the OSRL BCQ-L / BEAR-L family, for TD3+BC).

Beside TD3+BC's reward critic Q_r (on r_new) it fits a twin cost critic Q_c on the true
per-step cost, y_c = c + gamma (1 - d) max_j Q_c'_j(s', a') (pessimistic about cost), and
trains the actor against the Lagrangian with a learned multiplier mu >= 0:

    L_pi = -lambda * mean(Q_r1(s, a_pi) - mu * Q_c1(s, a_pi)) + bc_weight ||a_pi - a_D||^2
           + beta_reg ||u||^2,            lambda = q_scale / sg(mean |Q_r1(s, a_pi)|),
    mu <- max(0, mu + lambda_lr * (mean Q_c1(s, a_pi) - kappa)),
    kappa = cost_limit * (1 - gamma^T) / ((1 - gamma) T)

(kappa: an episode cost budget ``cost_limit`` over T = ``episode_len`` steps in the units of a
discounted per-step cost value, as OSRL converts its cost threshold). mu rises while the
policy's estimated cost exceeds the budget and falls (to 0) below it. ``cost_limit``,
``lambda_lr`` and every TD3 leaf are state leaves, so a sweep over the cost limit is a vmap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from scpr_jax.agents import td3
from scpr_jax.agents.sac import soft_update
from scpr_jax.agents.td3_config import validate_td3_config
from scpr_jax.downstream import offline
from scpr_jax.envs import task_class
from scpr_jax.methods.base import TD3BC_LEAVES, Learner, Method
from scpr_jax.optim import ADAM, adam_step
from scpr_jax.skill import action_size, execute, latent_size, u_bound
from scpr_jax.train import init_loop, make_chunk, seed_axis, train_loop


@struct.dataclass
class LagState:
    """TD3+BC's learner plus the cost critic, its target and Adam state, and the multiplier."""

    td3: td3.TD3State
    cost_critic: dict
    target_cost_critic: dict
    cost_opt: object
    lagrange: jax.Array  # [] mu >= 0
    lambda_lr: jax.Array  # [] step size of mu's projected ascent
    cost_limit: jax.Array  # [] episode cost budget
    episode_len: int = struct.field(pytree_node=False, default=1000)  # T of kappa


@struct.dataclass
class LagData:
    """D_tau for TD3+BC (`offline.OfflineData`) plus the per-row cost."""

    base: offline.OfflineData
    cost: jax.Array  # [N] float32


def lag_data(trajs, reward, skill, reward_term=None) -> LagData:
    """`offline.offline_data` with the true cost of every row."""
    base = offline.offline_data(trajs, reward, skill, reward_term)
    return LagData(base=base, cost=jnp.asarray(trajs.cost, jnp.float32))


def cost_threshold(cost_limit, gamma, episode_len: int) -> jax.Array:
    """kappa = cost_limit (1 - gamma^T) / ((1 - gamma) T), the budget as a Q_c value.  -> []."""
    return cost_limit * (1.0 - gamma**episode_len) / ((1.0 - gamma) * episode_len)


def lagrange_step(lagrange, lambda_lr, q_cost, threshold) -> jax.Array:
    """mu <- max(0, mu + lambda_lr (mean Q_c(s, a_pi) - kappa)).  [], [], [B], [] -> []."""
    return jnp.maximum(0.0, lagrange + lambda_lr * (jnp.mean(q_cost) - threshold))


def actor_loss(actor, state: LagState, batch: dict, skill):
    """L_pi of the module docstring.  -> ([], metrics)."""
    s = state.td3
    u = td3.high_level_action(s, actor, batch["obs"])
    a_pi = execute(skill, batch["obs"], u)
    q_r = td3.first_q(s, s.critic, batch["obs"], a_pi)
    q_c = td3.first_q(s, state.cost_critic, batch["obs"], a_pi)
    lam = s.q_scale / jax.lax.stop_gradient(jnp.maximum(jnp.mean(jnp.abs(q_r)), 1e-6))
    bc = jnp.mean(jnp.sum(jnp.square(a_pi - batch["action"]), axis=-1))
    u_sq = jnp.mean(jnp.sum(jnp.square(u), axis=-1))
    objective = jnp.mean(q_r) - state.lagrange * jnp.mean(q_c)
    loss = -lam * objective + s.bc_weight * bc + s.beta_reg * u_sq
    return loss, {"actor_loss": loss, "bc_mse": bc, "q_cost_pi": jnp.mean(q_c), "lambda": lam}


def lag_update(state: LagState, batch: dict, key: jax.Array, skill):
    """One step: reward critic, cost critic, actor, multiplier, targets (policy_freq 1)."""
    s = state.td3
    next_action = td3.smoothed_next_action(s, batch, key, skill)
    next_q = s.critic_net.apply(s.target_critic, batch["next_obs"], next_action)
    next_qc = s.critic_net.apply(state.target_cost_critic, batch["next_obs"], next_action)
    alive = s.gamma * (1.0 - batch["terminated"])
    y_r = batch["reward"] + alive * jnp.min(next_q, axis=0)
    y_c = batch["cost"] + alive * jnp.max(next_qc, axis=0)
    grads, m_r = jax.grad(td3.critic_loss, has_aux=True)(s.critic, s, batch, y_r)
    critic, critic_opt = adam_step(s.critic, grads, s.critic_opt, s.lr)
    grads, m_c = jax.grad(td3.critic_loss, has_aux=True)(state.cost_critic, s, batch, y_c)
    cost_critic, cost_opt = adam_step(state.cost_critic, grads, state.cost_opt, s.lr)
    state = state.replace(td3=s.replace(critic=critic, critic_opt=critic_opt),
                          cost_critic=cost_critic, cost_opt=cost_opt)  # fmt: skip
    grads, m_pi = jax.grad(actor_loss, has_aux=True)(state.td3.actor, state, batch, skill)
    actor, actor_opt = adam_step(state.td3.actor, grads, state.td3.actor_opt, s.lr)
    kappa = cost_threshold(state.cost_limit, s.gamma, state.episode_len)
    lagrange = lagrange_step(state.lagrange, state.lambda_lr, m_pi["q_cost_pi"], kappa)
    new_td3 = state.td3.replace(
        actor=actor, actor_opt=actor_opt, step=s.step + 1,
        target_actor=soft_update(s.target_actor, actor, s.tau),
        target_critic=soft_update(s.target_critic, critic, s.tau),
    )  # fmt: skip
    state = state.replace(
        td3=new_td3, lagrange=lagrange,
        target_cost_critic=soft_update(state.target_cost_critic, cost_critic, s.tau),
    )  # fmt: skip
    metrics = {"critic_loss": m_r["critic_loss"], "cost_critic_loss": m_c["critic_loss"],
               "q_cost": m_c["q_mean"], "lagrange": lagrange, "kappa": kappa, **m_pi}  # fmt: skip
    return state, metrics


def lag_init(key, obs_size: int, skill, cfg) -> LagState:
    """Fresh TD3+BC learner, cost critic and multiplier ``lambda_init``."""
    k_td3, k_cost = jax.random.split(key)
    sizes = (obs_size, latent_size(skill), action_size(skill))
    s = td3.td3_init(k_td3, *sizes, cfg, u_bound(skill))
    cost_critic = s.critic_net.init(k_cost, jnp.zeros((1, obs_size)), jnp.zeros((1, sizes[2])))
    leaf = functools.partial(jnp.asarray, dtype=jnp.float32)
    return LagState(
        td3=s, cost_critic=cost_critic, target_cost_critic=jax.tree.map(jnp.copy, cost_critic),
        cost_opt=ADAM.init(cost_critic), lagrange=leaf(cfg.lambda_init),
        lambda_lr=leaf(cfg.lambda_lr), cost_limit=leaf(cfg.cost_limit),
        episode_len=int(cfg.episode_len),
    )  # fmt: skip


def _sample(batch_size: int):
    base = offline.offline_sampler(batch_size)

    def sample(key, data: LagData):
        batch, skill = base(key, data.base)
        i = jax.random.randint(key, (batch_size,), 0, data.cost.shape[0])  # the same rows
        return {**batch, "cost": data.cost[i]}, skill

    return sample


def train(key, data: LagData, cfg, workdir, seeds=0, evaluate=None, eval_every=0,
          progress=None, omega: float = 0.0) -> LagState:  # fmt: skip
    """`offline.train_offline` for the Lagrangian learner (``omega`` unused: no reward term)."""
    validate(cfg)
    obs_size = data.base.obs.shape[-1]
    loop = init_loop(key, lambda k: lag_init(k, obs_size, data.base.skill, cfg), seeds)

    def update(state, batch_skill, k):
        batch, skill = batch_skill
        return lag_update(state, batch, k, skill)

    chunk = make_chunk(update, _sample(int(cfg.batch_size)), int(cfg.chunk))
    final = train_loop(
        "downstream", loop, chunk, data, int(cfg.steps), int(cfg.chunk), workdir,
        n_seeds=seed_axis(seeds), evaluate=evaluate, eval_every=eval_every, progress=progress,
    )  # fmt: skip
    return final.algo


def validate(cfg: ml_collections.ConfigDict) -> None:
    """TD3+BC's checks plus the Lagrangian's; ValueError naming the field."""
    validate_td3_config(cfg)
    for name in ("cost_limit", "lambda_lr", "lambda_init"):
        if not cfg[name] >= 0:
            raise ValueError(f"td3bc config.{name}={cfg[name]} must be >= 0")
    if cfg.episode_len < 1 or cfg.policy_freq != 1:
        raise ValueError(
            f"td3bc config: episode_len={cfg.episode_len} must be >= 1 and "
            f"policy_freq={cfg.policy_freq} must be 1 for the Lagrangian learner"
        )


def extend(c: ml_collections.ConfigDict, preset: str, task: str) -> None:
    """The Lagrangian's settings in its `td3bc` section."""
    c.cost_limit = 10.0  # episode cost budget (unsafe steps per episode)
    c.lambda_lr = 0.01  # step size of the multiplier's projected ascent
    c.lambda_init = 1.0  # initial multiplier mu
    c.episode_len = int(task_class(task).max_steps)  # T converting the budget to Q_c units


METHOD = Method(
    name="td3bc-lag",
    learner=Learner(
        data=lag_data,
        train=train,
        policy=lambda state: state.td3,
        leaves={**TD3BC_LEAVES, "cost_limit": "cost_limit", "lambda_lr": "lambda_lr"},
        validate=validate,
        extend=extend,
    ),
)
