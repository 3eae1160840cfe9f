"""Implicit Q-learning (Kostrikov, Nair and Levine, 2022, "Offline Reinforcement Learning
with Implicit Q-Learning"), as used for Safe-VPL's skills (PAPER.md 3.4).

Twin Q critics with a Polyak-averaged target, a state-value network V fitted by expectile
regression on the target Q, and a Gaussian policy (tanh-squashed mean, state-independent
log-std) extracted by advantage-weighted regression. `iql_update` follows the reference
order: V from the target critics, then the policy with the new V, then Q towards
r + gamma * (1 - terminated) * V(s'), then the targets. Q and V take Adam steps of size lr;
the policy's step size decays to 0 over total_steps updates, lr * cosine_factor(count) (as
`optax.cosine_decay_schedule`). Widths and total_steps are static fields of `IQLState`; lr,
gamma, expectile, temperature, the weight clip and tau are float32 leaves (a sweep over them
can be a vmap).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from scpr_jax.agents.losses import awr_weight, expectile_loss
from scpr_jax.agents.sac import TwinQ, soft_update
from scpr_jax.envs import PaperSettings, task_class
from scpr_jax.nets import MLP
from scpr_jax.optim import ADAM, adam_step

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
PRESETS = ("small", "paper")


def iql_config(preset: str = "small", env: str | None = None) -> ml_collections.ConfigDict:
    """IQL settings: ``"paper"`` (PAPER.md 3.4) or ``"small"`` (2-core CPU), for task ``env``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    c = ml_collections.ConfigDict()
    c.hidden = (1024, 1024, 1024, 1024)  # hidden widths of both Q, V, the policy mean (() = linear)
    c.lr = 1e-4  # Adam learning rate (the policy's decays to 0 by a cosine schedule)
    c.batch_size = 512  # transitions per update
    paper = PaperSettings(bc_alpha=(0.0, 0.0)) if env is None else task_class(env).paper
    c.steps = paper.iql_steps  # updates (also the schedule length)
    c.chunk = 1000  # updates per jitted lax.scan chunk (logging/checkpoints between chunks)
    c.gamma = 0.99  # discount
    c.expectile = paper.iql_expectile  # tau of the expectile loss on V (the task's)
    c.temperature = 10.0  # beta in the advantage weight exp(beta * (Q - V))
    c.max_weight = 100.0  # clip of the advantage weight
    c.tau = 0.005  # Polyak rate of the target critics
    if preset == "small":  # a few minutes on 2 CPU cores
        c.hidden = (256, 256)
        c.batch_size = 256
        c.steps = 30_000
    return c.lock()


_RULES = (  # (fields, predicate, what is allowed)
    (("batch_size", "steps", "chunk"), lambda v: v >= 1 and v == int(v), "a positive integer"),
    (("lr", "temperature", "max_weight"), lambda v: v > 0, "> 0"),
    (("gamma", "tau"), lambda v: 0 <= v <= 1, "in [0, 1]"),
    (("expectile",), lambda v: 0 < v < 1, "in (0, 1)"),
)


def validate_iql_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first field outside its allowed range."""
    for names, ok, allowed in _RULES:
        for name in names:
            if not ok(float(config[name])):
                raise ValueError(f"iql config.{name}={config[name]} must be {allowed}")
    if any(int(w) < 1 for w in config.hidden):
        raise ValueError(f"iql config.hidden={config.hidden} must be positive widths")
    if config.steps % config.chunk:
        raise ValueError(f"iql config.steps={config.steps} must be a multiple of chunk")


@struct.dataclass
class PolicyParams:
    """Gaussian policy pi(a|s) = N(tanh(mu(s)), exp(log_std)^2); self-contained for rollouts."""

    mean: dict  # flax variables of the mean MLP
    log_std: jax.Array  # [A] state-independent log standard deviation
    hidden: tuple[int, ...] = struct.field(pytree_node=False)


def policy_action(params: PolicyParams, obs: jax.Array) -> jax.Array:
    """Executed (mean) action tanh(mu(s)) in [-1, 1].  obs [..., O] -> [..., A]."""
    mlp = MLP(params.hidden, params.log_std.shape[-1])
    return jnp.tanh(mlp.apply(params.mean, obs))


def policy_log_prob(params: PolicyParams, obs: jax.Array, action: jax.Array) -> jax.Array:
    """log pi(a|s) = sum_i log N(a_i; tanh mu_i(s), std_i^2).  [..., O], [..., A] -> [...]."""
    log_std = jnp.clip(params.log_std, LOG_STD_MIN, LOG_STD_MAX)
    z = (action - policy_action(params, obs)) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * np.log(2.0 * np.pi), axis=-1)


@struct.dataclass
class IQLState:
    """Parameters, targets, optimiser states and hyperparameters of one IQL learner."""

    q: dict  # twin-Q variables
    q_target: dict
    v: dict  # state-value variables
    policy: PolicyParams
    q_opt: optax.OptState
    v_opt: optax.OptState
    policy_opt: optax.OptState
    step: jax.Array  # [] int32 updates done
    lr: jax.Array  # [] Adam step size (the policy's decays from it by `cosine_factor`)
    gamma: jax.Array  # [] discount
    expectile: jax.Array  # [] expectile of the V regression
    temperature: jax.Array  # [] AWR inverse temperature beta
    max_weight: jax.Array  # [] clip of exp(beta * A)
    tau: jax.Array  # [] Polyak rate of the target critics
    hidden: tuple[int, ...] = struct.field(pytree_node=False)
    total_steps: int = struct.field(pytree_node=False)  # length of the policy's cosine decay

    @property
    def critic(self) -> TwinQ:
        return TwinQ(self.hidden)

    @property
    def value_net(self) -> MLP:
        return MLP(self.hidden, 1)


def cosine_factor(count: jax.Array, total_steps: int) -> jax.Array:
    """0.5 (1 + cos(pi min(count, T) / T)) with T = total_steps: 1 at 0, 0 from T on.  [] -> []."""
    count = jnp.minimum(count, float(total_steps))
    return 0.5 * (1 + jnp.cos(jnp.pi * count / float(total_steps)))


def policy_lr(state: IQLState) -> jax.Array:
    """Step size of the next policy update, lr * cosine_factor(policy updates done).  -> []."""
    return state.lr * cosine_factor(state.policy_opt.count, state.total_steps)


def value(state: IQLState, v_params: dict, obs: jax.Array) -> jax.Array:
    """V(s).  [..., O] -> [...]."""
    return state.value_net.apply(v_params, obs)[..., 0]


def value_loss(v_params: dict, state: IQLState, batch: dict) -> tuple[jax.Array, dict]:
    """L_V = mean_B |tau - 1(u < 0)| u^2,  u = min_j Q'_j(s, a) - V(s)  (Q' the targets)."""
    q = jnp.min(state.critic.apply(state.q_target, batch["obs"], batch["action"]), axis=0)
    v = value(state, v_params, batch["obs"])
    loss = jnp.mean(expectile_loss(q - v, state.expectile))
    return loss, {"v_loss": loss, "v": jnp.mean(v)}


def q_target(
    reward: jax.Array, terminated: jax.Array, next_v: jax.Array, gamma: jax.Array
) -> jax.Array:
    """y = r + gamma * (1 - terminated) * V(s').  [B] -> [B]."""
    return reward + gamma * (1.0 - terminated) * next_v


def critic_loss(q_params: dict, state: IQLState, batch: dict) -> tuple[jax.Array, dict]:
    """L_Q = mean_B sum_j (Q_j(s, a) - y)^2 with y = `q_target` (no gradient through V)."""
    next_v = value(state, state.v, batch["next_obs"])
    terminated = batch["terminated"].astype(next_v.dtype)
    y = jax.lax.stop_gradient(q_target(batch["reward"], terminated, next_v, state.gamma))
    q = state.critic.apply(q_params, batch["obs"], batch["action"])  # [2, B]
    loss = jnp.mean(jnp.sum(jnp.square(q - y), axis=0))
    return loss, {"q_loss": loss, "q": jnp.mean(q), "q_target": jnp.mean(y)}


def policy_loss(policy: PolicyParams, state: IQLState, batch: dict) -> tuple[jax.Array, dict]:
    """L_pi = -mean_B min(exp(beta * (min_j Q'_j(s, a) - V(s))), w_max) * log pi(a|s)."""
    q = jnp.min(state.critic.apply(state.q_target, batch["obs"], batch["action"]), axis=0)
    adv = q - value(state, state.v, batch["obs"])
    weight = jax.lax.stop_gradient(awr_weight(adv, state.temperature, state.max_weight))
    log_prob = policy_log_prob(policy, batch["obs"], batch["action"])
    loss = -jnp.mean(weight * log_prob)
    metrics = {
        "policy_loss": loss,
        "adv": jnp.mean(adv),
        "weight": jnp.mean(weight),
        "log_std": jnp.mean(policy.log_std),
    }
    return loss, metrics


def iql_init(
    key: jax.Array, obs_size: int, action_size: int, config: ml_collections.ConfigDict
) -> IQLState:
    """Fresh IQL learner for [obs_size] observations and [action_size] actions in [-1, 1]."""
    validate_iql_config(config)
    k_q, k_v, k_pi = jax.random.split(key, 3)
    hidden = tuple(int(w) for w in config.hidden)
    obs, action = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
    q = TwinQ(hidden).init(k_q, obs, action)
    policy = PolicyParams(
        mean=MLP(hidden, action_size).init(k_pi, obs),
        log_std=jnp.zeros(action_size),
        hidden=hidden,
    )
    v = MLP(hidden, 1).init(k_v, obs)
    return IQLState(
        q=q,
        q_target=jax.tree.map(jnp.copy, q),  # own buffers: donatable
        v=v,
        policy=policy,
        q_opt=ADAM.init(q),
        v_opt=ADAM.init(v),
        policy_opt=ADAM.init(policy),
        step=jnp.asarray(0, jnp.int32),
        lr=jnp.asarray(config.lr, jnp.float32),
        gamma=jnp.asarray(config.gamma, jnp.float32),
        expectile=jnp.asarray(config.expectile, jnp.float32),
        temperature=jnp.asarray(config.temperature, jnp.float32),
        max_weight=jnp.asarray(config.max_weight, jnp.float32),
        tau=jnp.asarray(config.tau, jnp.float32),
        hidden=hidden,
        total_steps=int(config.steps),
    )


def iql_update(state: IQLState, batch: dict, key: jax.Array) -> tuple[IQLState, dict]:
    """One IQL step on a [B]-batch dict(obs, action, reward, next_obs, terminated)."""
    del key  # deterministic given the batch
    grads, v_metrics = jax.grad(value_loss, has_aux=True)(state.v, state, batch)
    v, v_opt = adam_step(state.v, grads, state.v_opt, state.lr)
    state = state.replace(v=v, v_opt=v_opt)

    grads, pi_metrics = jax.grad(policy_loss, has_aux=True)(state.policy, state, batch)
    policy, policy_opt = adam_step(state.policy, grads, state.policy_opt, policy_lr(state))

    grads, q_metrics = jax.grad(critic_loss, has_aux=True)(state.q, state, batch)
    q, q_opt = adam_step(state.q, grads, state.q_opt, state.lr)
    state = state.replace(
        q=q,
        q_opt=q_opt,
        q_target=soft_update(state.q_target, q, state.tau),
        policy=policy,
        policy_opt=policy_opt,
        step=state.step + 1,
    )
    return state, {**v_metrics, **pi_metrics, **q_metrics}
