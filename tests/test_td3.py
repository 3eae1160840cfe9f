"""TD3 / TD3+BC over a frozen skill: losses by hand, gradient path, tracing, configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import methods
from scpr_jax import skill as hl
from scpr_jax.agents import td3

# compiling dominates these tests (tiny programs, few steps): skip most XLA passes
pytestmark = pytest.mark.usefixtures("fast_compile")


def small_config(method="safe-cpl", **overrides):
    cfg = methods.td3bc_config("small", "ball-run", method).unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk = (16,), 32, 40, 20
    for name, value in overrides.items():
        cfg[name] = value
    return cfg.lock()


def dense(kernel, bias):
    """Variables of one linear layer inside a hidden=() MLP submodule: x @ kernel + bias."""
    return {"Dense_0": {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias)}}


def linear_cpl_skill(kernel, prior_mean, prior_std, obs_size):
    """A "skill" a = tanh([s, z'] @ kernel) with z' = prior_mean + prior_std * u."""
    net = {"params": {"MLP_0": dense(kernel, np.zeros(np.shape(kernel)[1], np.float32))}}
    return hl.Skill(
        params={"params": net["params"]["MLP_0"]},  # the decoder's MLP (`cpl.cpl_skill`)
        prior_mean=jnp.asarray(prior_mean, jnp.float32),
        prior_std=jnp.asarray(prior_std, jnp.float32),
        kind="cpl",
        obs_size=obs_size,
        n_actions=np.shape(kernel)[1],
        activation="leaky_relu",
    )


def linear_state(skill, obs_size, actor_bias, q1=None, q2=None, **hparams):
    """TD3 state with linear networks: u = u_bound * tanh(actor_bias) for every s."""
    cfg = small_config(hidden=(), **hparams)
    z, a = hl.latent_size(skill), hl.action_size(skill)
    state = td3.td3_init(jax.random.PRNGKey(0), obs_size, z, a, cfg, hl.u_bound(skill))
    actor = {"params": {"MLP_0": dense(np.zeros((obs_size, z)), actor_bias)}}
    state = state.replace(actor=actor, target_actor=actor)
    if q1 is not None:
        critic = {"params": {"MLP_0": dense(*q1), "MLP_1": dense(*q2)}}
        state = state.replace(critic=critic, target_critic=critic)
    return state


def batch_of(obs, action, reward, next_obs, terminated):
    return {
        "obs": jnp.asarray(obs, jnp.float32),
        "action": jnp.asarray(action, jnp.float32),
        "reward": jnp.asarray(reward, jnp.float32),
        "next_obs": jnp.asarray(next_obs, jnp.float32),
        "terminated": jnp.asarray(terminated),
    }


def random_batch(key, n, obs_size, action_size):
    k = jax.random.split(key, 4)
    return batch_of(
        jax.random.normal(k[0], (n, obs_size)),
        jax.random.uniform(k[1], (n, action_size), minval=-1, maxval=1),
        jax.random.normal(k[2], (n,)),
        jax.random.normal(k[3], (n, obs_size)),
        jnp.arange(n) % 3 == 0,
    )


def test_actor_output_is_bounded_for_huge_preactivations():
    skill = linear_cpl_skill(np.ones((3, 2)), [1.0, -1.0], [0.5, 2.0], obs_size=2)
    for s, bound in ((skill, 3.0), (hl.identity_skill(2, 2), 1.0)):
        state = td3.td3_init(jax.random.PRNGKey(0), 3, 2, 2, small_config(), hl.u_bound(s))
        big = jax.tree.map(lambda x: 1e6 * jnp.sign(x) + 1e6, state.actor)
        obs = jnp.array([[1e3, -1e3, 5.0], [-1e4, 1e4, -7.0]])
        u = td3.high_level_action(state, big, obs)
        assert np.all(np.abs(u) <= bound) and np.allclose(np.abs(u), bound)


def test_critic_target_hand_computed():
    # identity skill, u = tanh(atanh(0.5)) = 0.5 for every s';  Q1 = s + 2a, Q2 = s + a + 0.25
    skill = hl.identity_skill(1, 1)
    q1, q2 = ([[1.0], [2.0]], [0.0]), ([[1.0], [1.0]], [0.25])
    state = linear_state(skill, 1, [np.arctanh(0.5)], q1, q2, gamma=0.9, target_noise=0.0)
    batch = batch_of([[0.0], [0.0]], [[0.0], [0.0]], [1.0, 0.0], [[2.0], [0.0]], [False, True])
    # s' = 2: min(3, 2.75) -> y = 1 + 0.9 * 2.75;  s' = 0 is terminal -> y = 0
    y = td3.critic_target(state, batch, jax.random.PRNGKey(0), skill)
    np.testing.assert_allclose(y, [1.0 + 0.9 * 2.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(td3.td_target(1.0, 0.0, jnp.array([3.0, 2.75]), 0.9), 3.475)
    # huge noise clipped to +-0.3, then the action clipped to [-1, 1]: a' in {0.4, 1.0} for u=0.9
    state = linear_state(skill, 1, [np.arctanh(0.9)], q1, q2, target_noise=100.0, noise_clip=0.5)
    keys = jax.random.split(jax.random.PRNGKey(1), 64)
    a = jax.vmap(td3.smoothed_next_action, (None, None, 0, None))(state, batch, keys, skill)
    np.testing.assert_allclose(np.unique(np.round(np.asarray(a), 5)), [0.4, 1.0], rtol=1e-6)
    # critic loss: Q(s=0, a=0) = [0, 0.25] against y = [3.475, 0]
    loss, _ = td3.critic_loss(state.critic, state, batch, jnp.array([3.475, 0.0]))
    np.testing.assert_allclose(loss, (2 * 3.475**2 - 2 * 0.25 * 3.475 + 0.25**2 + 0.25**2) / 2)


def test_first_q_is_twin_q_head_one():
    state = td3.td3_init(jax.random.PRNGKey(3), 3, 2, 2, small_config(), 3.0)
    obs, action = jnp.ones((4, 3)), jnp.full((4, 2), 0.3)
    both = state.critic_net.apply(state.critic, obs, action)
    np.testing.assert_allclose(td3.first_q(state, state.critic, obs, action), both[0], rtol=1e-6)


def test_beta_reg_adds_exactly_its_penalty():
    # u = 3 * tanh(atanh([0.5, -0.25])) = [1.5, -0.75]: ||u||^2 = 2.8125 for every s
    skill = linear_cpl_skill([[0.3], [-0.2], [0.5], [0.1]], [0.0, 0.0], [1.0, 1.0], obs_size=2)
    batch = random_batch(jax.random.PRNGKey(0), 8, 3, 1)
    losses = {}
    for beta in (0.0, 0.7):
        state = linear_state(skill, 3, np.arctanh([0.5, -0.25]), beta_reg=beta)
        losses[beta], metrics = td3.actor_loss(state.actor, state, batch, skill)
    np.testing.assert_allclose(losses[0.7] - losses[0.0], 0.7 * 2.8125, rtol=1e-5)
    np.testing.assert_allclose(metrics["u_norm"], np.sqrt(2.8125), rtol=1e-6)


def test_bc_term_and_lambda_by_hand():
    # identity skill: a_pi = u = 0.5; Q1(s, a) = 2a + 0 * s = 1 -> lambda = q_scale / 1
    skill = hl.identity_skill(1, 1)
    q = ([[0.0], [2.0]], [0.0])
    state = linear_state(skill, 1, [np.arctanh(0.5)], q, q, bc_alpha=3.0, bc_weight=2.0, beta_reg=0)
    batch = batch_of([[1.0], [-1.0]], [[0.0], [1.0]], [0.0, 0.0], [[0.0], [0.0]], [True, True])
    loss, m = td3.actor_loss(state.actor, state, batch, skill)
    # bc = mean(0.25, 0.25) = 0.25;  loss = -3 * 1 + 2 * 0.25
    np.testing.assert_allclose([m["lambda"], m["bc_mse"], loss], [3.0, 0.25, -2.5], rtol=1e-6)


def test_gradient_flows_through_the_frozen_skill_only_to_the_actor():
    skill = linear_cpl_skill([[0.3, 0.0], [0.0, 0.2], [1.0, -0.5], [0.5, 1.0]], [0.1, 0.2],
                             [0.5, 2.0], obs_size=2)  # fmt: skip
    state = td3.td3_init(jax.random.PRNGKey(0), 3, 2, 2, small_config(), 3.0)
    batch = random_batch(jax.random.PRNGKey(1), 16, 3, 2)
    grad = jax.grad(lambda p, sk: td3.actor_loss(p, state, batch, sk)[0])
    g1 = grad(state.actor, skill)
    assert all(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g1))
    other = skill.replace(params=jax.tree.map(lambda x: 2.0 * x, skill.params))
    g2 = grad(state.actor, other)
    assert not np.allclose(jax.tree.leaves(g1)[-1], jax.tree.leaves(g2)[-1])
    # the skill's weights are held constant inside the loss: zero gradient if one asks
    g_skill = jax.grad(lambda sk: td3.actor_loss(state.actor, state, batch, sk)[0])(skill)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_skill.params))
    # the skill is no part of the state, and an update leaves it bitwise unchanged
    before = jax.tree.map(np.array, skill)
    new, _ = jax.jit(td3.td3_update)(state, batch, jax.random.PRNGKey(2), skill)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, skill, before)
    assert not np.allclose(jax.tree.leaves(new.actor)[-1], jax.tree.leaves(state.actor)[-1])


def test_update_compiles_once():
    skill = linear_cpl_skill(0.3 * np.ones((5, 2)), [0.0, 0.0], [1.0, 1.0], obs_size=3)
    state = td3.td3_init(jax.random.PRNGKey(0), 4, 2, 2, small_config(), 3.0)
    traces = []

    def counted(*args):
        traces.append(1)
        return td3.td3_update(*args)

    update = jax.jit(counted)
    s = state
    for k in range(3):  # a different skill each call: an argument, not a compiled constant
        sk = skill.replace(params=jax.tree.map(lambda x, k=k: (1 + k) * x, skill.params))
        batch = random_batch(jax.random.PRNGKey(k), 32, 4, 2)
        s, _ = update(s, batch, jax.random.PRNGKey(10 + k), sk)
    assert len(traces) == 1 and int(s.step) == 3


def test_policy_freq_delays_actor_and_targets():
    skill = hl.identity_skill(3, 2)
    state = td3.td3_init(jax.random.PRNGKey(0), 3, 2, 2, small_config(policy_freq=2), 1.0)
    update = jax.jit(td3.td3_update)
    batch = random_batch(jax.random.PRNGKey(1), 32, 3, 2)
    s1, _ = update(state, batch, jax.random.PRNGKey(2), skill)  # step 0: actor moves
    s2, _ = update(s1, batch, jax.random.PRNGKey(3), skill)  # step 1: critic only
    for name in ("actor", "target_actor", "target_critic"):
        assert not np.allclose(jax.tree.leaves(getattr(s1, name))[0],
                               jax.tree.leaves(getattr(state, name))[0])  # fmt: skip
        jax.tree.map(np.testing.assert_array_equal, getattr(s2, name), getattr(s1, name))
    assert not np.allclose(jax.tree.leaves(s2.critic)[0], jax.tree.leaves(s1.critic)[0])


def test_hyperparameters_are_a_vmap_axis():
    skill = hl.identity_skill(3, 2)
    state = td3.td3_init(jax.random.PRNGKey(0), 3, 2, 2, small_config(), 1.0)
    states = jax.tree.map(lambda x: jnp.stack([x, x]), state).replace(beta_reg=jnp.array([0, 5.0]))
    batch = random_batch(jax.random.PRNGKey(1), 32, 3, 2)
    update = jax.jit(jax.vmap(td3.td3_update, (0, None, None, None)))
    _, m = update(states, batch, jax.random.PRNGKey(2), skill)
    assert m["actor_loss"].shape == (2,) and m["actor_loss"][1] > m["actor_loss"][0]


def test_configs():
    paper = methods.td3bc_config("paper", "ball-circle", "safe-vpl")
    assert (paper.bc_alpha, paper.beta_reg, paper.steps, paper.batch_size) == (2000, 1.0, 2e6, 512)
    assert methods.td3bc_config("paper", "ant-vel", "task-only").bc_alpha == 1.0
    assert methods.td3bc_config("paper", "ball-run", "oracle").bc_alpha == 20.0
    assert methods.td3bc_config("paper", "ball-run", "rc").beta_reg == 0.0
    assert methods.td3bc_config("paper", "swimmer-vel", "sopl").steps == 1_000_000
    online = td3.td3_config("paper", "ant-vel")
    assert (online.q_scale, online.bc_weight, online.beta_reg, online.steps) == (200, 0, 0.01, 2e6)
    td3.validate_td3_config(online)
    with pytest.raises(ValueError, match="unknown method 'ours'"):
        methods.td3bc_config("small", "ball-run", "ours")
    with pytest.raises(ValueError, match="unknown env 'ball-jump'"):
        methods.td3bc_config("small", "ball-jump", "oracle")
    with pytest.raises(ValueError, match="unknown preset"):
        td3.td3_config("huge", "ball-run")
    bad = {"beta_reg": -1.0, "gamma": 1.5, "batch_size": 0, "policy_freq": 0, "lr": 0.0}
    for name, value in bad.items():
        with pytest.raises(ValueError, match=f"config.{name}="):
            td3.validate_td3_config(small_config(**{name: value}))
    with pytest.raises(ValueError, match="config.steps=50 must be a multiple of chunk=20"):
        td3.validate_td3_config(small_config(steps=50))
    cfg = small_config().unlock()
    cfg.method = "x"
    with pytest.raises(ValueError, match="config.method='x'"):
        methods.validate_td3_config(cfg)
