"""SAC loss pieces, the jitted update, and the offline-trajectory collector (PAPER.md 3.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.agents.sac import (
    Transition,
    actor_loss,
    alpha_loss,
    critic_loss,
    critic_target,
    sac_init,
    sac_update,
    sample_action,
    soft_update,
    tanh_gaussian_log_prob,
)
from scpr_jax.data.collect import (
    collect,
    collect_config,
    collector_init,
    distinct_buffers,
    make_chunk,
    sample_batch,
    summarize,
)
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make
from scpr_jax.train import set_leaves
from scpr_jax.train.sweep import sweepable


def tiny_config(**overrides):
    config = collect_config("small")
    config.update(dict(n_envs=4, total_steps=80, warmup_steps=8, updates_per_step=2, batch_size=8))
    config.update(dict(hidden=(16,), max_steps=10, chunk_steps=6, **overrides))
    return config


def tiny_batch(batch_size=3, obs_size=3, action_size=2):
    k_obs, k_next = jax.random.split(jax.random.key(7))
    return Transition(
        obs=jax.random.normal(k_obs, (batch_size, obs_size)),
        action=jnp.full((batch_size, action_size), 0.3),
        reward=jnp.arange(batch_size, dtype=jnp.float32),
        next_obs=jax.random.normal(k_next, (batch_size, obs_size)),
        terminated=jnp.array([0.0, 1.0, 0.0])[:batch_size],
    )


# (a) loss pieces with hand-computed numbers


def test_critic_target_hand_computed():
    # y = r + gamma (1 - d)(min_j Q'_j - alpha logp'): 1 + 0.9 * (3 - 0.1 * 0.5) = 3.655; 2 + 0
    y = critic_target(
        reward=jnp.array([1.0, 2.0]),
        terminated=jnp.array([0.0, 1.0]),
        next_q=jnp.array([[3.0, 5.0], [4.0, 1.0]]),
        next_log_prob=jnp.array([0.5, 0.2]),
        alpha=0.1,
        gamma=0.9,
    )
    np.testing.assert_allclose(y, [3.655, 2.0], rtol=1e-6)


def test_tanh_gaussian_log_prob_hand_computed():
    # u = mean = 0, std 1: two dims of log N(0; 0, 1) = -0.5 log(2 pi), Jacobian term 0
    lp = tanh_gaussian_log_prob(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))
    np.testing.assert_allclose(lp, -np.log(2 * np.pi), rtol=1e-6)
    # u = 1, mean 0.5, std 0.5: z = 1 -> -0.5 - log 0.5 - 0.5 log(2 pi) - log(1 - tanh(1)^2)
    lp = tanh_gaussian_log_prob(jnp.array([1.0]), jnp.array([0.5]), jnp.log(jnp.array([0.5])))
    np.testing.assert_allclose(lp, -0.7257914 + 0.8675617, rtol=1e-5)
    # saturated u: log(1 - tanh(u)^2) -> 2 (log 2 - u) stays finite
    lp = tanh_gaussian_log_prob(jnp.array([20.0]), jnp.array([20.0]), jnp.zeros(1))
    np.testing.assert_allclose(lp, -0.5 * np.log(2 * np.pi) - 2 * (np.log(2.0) - 20.0), rtol=1e-6)


def test_alpha_loss_and_soft_update_hand_computed():
    # alpha 2, entropy 1 above target -2: loss = 2 * 3 = 6, d/dlog_alpha = 6 > 0 lowers alpha
    loss, metrics = alpha_loss(jnp.log(2.0), jnp.asarray(1.0), jnp.asarray(-2.0))
    np.testing.assert_allclose(loss, 6.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["alpha"], 2.0, rtol=1e-6)
    grad = jax.grad(lambda la: alpha_loss(la, 1.0, -2.0)[0])(jnp.log(2.0))
    np.testing.assert_allclose(grad, 6.0, rtol=1e-6)
    target = soft_update({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.25)
    np.testing.assert_allclose(target["w"], [0.25, 0.25])


def test_losses_with_zero_critic():
    # with all-zero critic parameters Q = 0, so L_Q = sum_j 0.5 * mean(y^2) = mean(y^2) with
    # y = r - gamma (1 - d) alpha logp', and L_pi = alpha * mean(logp)
    state = sac_init(jax.random.key(0), 3, 2, tiny_config(init_alpha=0.5))
    zeros = jax.tree.map(jnp.zeros_like, state.critic_params)
    state = state.replace(critic_params=zeros, target_critic_params=zeros)
    batch, key = tiny_batch(), jax.random.key(3)
    _, next_lp = sample_action(state.actor_params, state, batch.next_obs, key)
    y = batch.reward - 0.99 * (1.0 - batch.terminated) * 0.5 * next_lp
    loss, _ = critic_loss(state.critic_params, state, batch, key)
    np.testing.assert_allclose(loss, jnp.mean(y**2), rtol=1e-5)
    _, lp = sample_action(state.actor_params, state, batch.obs, key)
    loss, metrics = actor_loss(state.actor_params, state, batch, key)
    np.testing.assert_allclose(loss, 0.5 * jnp.mean(lp), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy"], -jnp.mean(lp), rtol=1e-5)


def test_sample_batch_applies_penalty():
    buffer = Trajectories(
        obs=jnp.zeros((2, 1, 3)),
        action=jnp.zeros((2, 1, 2)),
        reward=jnp.array([[0.7], [5.0]]),
        cost=jnp.array([[1.0], [0.0]]),
        next_obs=jnp.zeros((2, 1, 3)),
        terminated=jnp.zeros((2, 1), bool),
        truncated=jnp.zeros((2, 1), bool),
        info={},
    )
    batch = sample_batch(buffer, jnp.asarray(1), jnp.asarray(10.0), jax.random.key(0), 4)
    np.testing.assert_allclose(batch.reward, np.full(4, 0.7 - 10.0), rtol=1e-6)


# (b) the jitted update compiles once


def test_sac_update_traces_once():
    traces = []

    def counted(state, batch, key):
        traces.append(1)
        return sac_update(state, batch, key)

    update = jax.jit(counted)
    state, batch = sac_init(jax.random.key(0), 3, 2, tiny_config()), tiny_batch()
    for i in range(3):
        state, metrics = update(state, batch, jax.random.key(i))
    assert len(traces) == 1
    assert int(state.step) == 3
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_lr_is_a_vmap_axis_equal_to_separate_runs():
    """Two members with lr set by `set_leaves` equal two runs initialised with those lrs."""
    lrs, batch = (3e-4, 3e-3), tiny_batch()
    states = jax.tree.map(
        lambda x: jnp.stack([x, x]), sac_init(jax.random.key(0), 3, 2, tiny_config())
    )
    assert "lr" in sweepable(states, 2)
    states = set_leaves(states, {"lr": lrs})
    alone = [sac_init(jax.random.key(0), 3, 2, tiny_config(lr=lr)) for lr in lrs]
    vmapped, update = jax.jit(jax.vmap(sac_update, (0, None, None))), jax.jit(sac_update)
    for i in range(3):
        states, _ = vmapped(states, batch, jax.random.key(i))
        alone = [update(s, batch, jax.random.key(i))[0] for s in alone]
    for j, one in enumerate(alone):
        for a, b in zip(jax.tree.leaves(states), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[j], b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(states.log_alpha[0], states.log_alpha[1])  # the lr matters


# collector: config, layout, purity


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="n_envs"):
        collect(jax.random.key(0), "ball-run", tiny_config(n_envs=0))
    with pytest.raises(ValueError, match="penalty_switch"):
        collect(jax.random.key(0), "ball-run", tiny_config(penalty_switch=1.5))
    with pytest.raises(ValueError, match="preset"):
        collect_config("huge")
    with pytest.raises(ValueError, match="downstream"):
        collect(jax.random.key(0), "ball-run/crowd", tiny_config())


def test_summarize_hand_computed():
    # 2 streams x 4 steps; stream 0: episodes [0, 1] and [2, 3]; stream 1: [0..2], then a
    # cut-off episode; switch at t = 2
    done = np.array([[0, 1, 0, 1], [0, 0, 1, 0]], bool).reshape(-1)
    traj = Trajectories(
        obs=jnp.zeros((8, 1)),
        action=jnp.zeros((8, 1)),
        reward=jnp.array([1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 9.0]),
        cost=jnp.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
        next_obs=jnp.zeros((8, 1)),
        terminated=jnp.zeros(8, bool),
        truncated=jnp.asarray(done),
        info={"goal": jnp.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])[:, None]},
        n_streams=2,
    )
    s = summarize(traj, np.array([[0.0], [1.0]]), switch_t=2)
    assert (s["transitions"], s["episodes"]) == (8, 3)
    assert s["unsafe_fraction"] == 0.5
    assert s["unsafe_fraction_first_half"] == 0.75 and s["unsafe_fraction_second_half"] == 0.25
    assert s["unsafe_fraction_by_goal"] == [0.5, 0.5]
    assert s["unsafe_fraction_by_goal_first_half"] == [0.5, 1.0]
    # episodes ending in the first half: [1, 2] (return 3, cost 1); second: [3, 4], [1, 1, 1]
    assert s["episode_return_first_half"] == 3.0 and s["episode_cost_first_half"] == 1.0
    assert s["episode_return_second_half"] == 5.0 and s["episode_cost_second_half"] == 1.0
    assert s["unsafe_episode_fraction_second_half"] == 0.5


def test_chunk_vmaps_over_seeds():
    env, config = make("ball-run/downstream"), tiny_config()
    chunk = make_chunk(env, config, 6)  # crosses warm-up (2 steps), so SAC updates run
    states = [collector_init(jax.random.key(seed), env, config) for seed in (0, 1)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
    batched, batched_metrics = jax.jit(jax.vmap(chunk))(stacked)
    single = jax.jit(chunk)
    for i, state in enumerate(states):
        state, metrics = single(state)
        assert int(state.sac.step) == 5 * config.updates_per_step
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(batched), strict=True):
            if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-5)
        for k, v in metrics.items():
            np.testing.assert_allclose(v, batched_metrics[k][i], rtol=1e-4, atol=1e-5)


def test_four_vmapped_seeds_equal_four_separate_runs():
    """collect(seeds=[0..3]) is one program; member j equals collect(fold_in(key, j))."""
    key, config = jax.random.key(3), tiny_config()
    batched, summaries = collect(key, "ball-run", config, seeds=[0, 1, 2, 3])
    assert batched.obs.shape[:2] == (4, 80) and len(summaries) == 4
    for j in range(4):
        one, summary = collect(jax.random.fold_in(key, j), "ball-run", config)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched), strict=True):
            np.testing.assert_allclose(a, b[j], rtol=1e-4, atol=1e-5)
        assert summary.keys() == summaries[j].keys()
        for k, v in summary.items():  # NaN for goals never drawn
            np.testing.assert_allclose(np.asarray(v, float), summaries[j][k], rtol=1e-5)


def test_members_that_do_not_fit_fail_before_anything_is_allocated(monkeypatch):
    from scpr_jax.train import sweep

    monkeypatch.setattr(sweep, "device_memory", lambda: 2**20)  # a 1 MiB device
    env, key = make("ball-run/downstream"), jax.random.key(0)
    live = len(jax.live_arrays())
    with pytest.raises(ValueError, match=r"needs ~[\d.]+ GiB per device \(1000 members x "):
        collect(key, env, tiny_config(), seeds=range(1000))  # ~17 kB each
    assert len(jax.live_arrays()) == live  # no state, no buffer


# (c) probe: SAC beats random on r_new before the switch and becomes safer after it


@pytest.fixture(scope="module")
def probe_run():
    config = collect_config("small")
    config.update(dict(n_envs=16, total_steps=40_000, warmup_steps=2000, batch_size=64))
    config.update(dict(hidden=(32, 32), max_steps=50, chunk_steps=625))
    traj, summary = collect(jax.random.key(0), "ball-run", config)
    return config, traj, summary


def test_probe_learns_then_becomes_safe(probe_run):
    config, traj, summary = probe_run
    n_steps = traj.size // traj.n_streams
    reward = np.asarray(traj.reward).reshape(traj.n_streams, n_steps)
    cost = np.asarray(traj.cost).reshape(traj.n_streams, n_steps)
    warmup_t, switch_t = config.warmup_steps // config.n_envs, n_steps // 2
    random_reward = reward[:, :warmup_t].mean()  # uniform random actions before warm-up
    assert reward[:, int(0.3 * n_steps) : switch_t].mean() > random_reward + 0.2
    assert cost[:, int(0.8 * n_steps) :].mean() < 0.5 * cost[:, :switch_t].mean()
    assert summary["unsafe_fraction_second_half"] < summary["unsafe_fraction_first_half"]
    assert summary["episodes"] == config.total_steps // config.max_steps


def test_probe_dataset_layout(probe_run):
    config, traj, _ = probe_run
    task = make("ball-run/downstream").task
    assert traj.n_streams == config.n_envs and traj.size == config.total_steps
    assert set(traj.info) == {"prev_pos", "pos", "vel", "agent_specific", "goal"}
    # stored reward is r_new (no penalty) and is recomputable from the relabelling info
    r_new = jax.vmap(task.reward)(traj.info, traj.info["goal"])
    np.testing.assert_allclose(traj.reward, r_new, rtol=1e-5, atol=1e-6)
    # stream-major: within a stream next_obs[t] == obs[t + 1] except at episode ends
    n_steps = traj.size // traj.n_streams
    obs = np.asarray(traj.obs).reshape(traj.n_streams, n_steps, -1)
    next_obs = np.asarray(traj.next_obs).reshape(traj.n_streams, n_steps, -1)
    end = np.asarray(traj.truncated).reshape(traj.n_streams, n_steps)
    assert np.all(end[:, config.max_steps - 1 :: config.max_steps])
    same = np.all(next_obs[:, :-1] == obs[:, 1:], axis=-1)
    assert np.all(same[~end[:, :-1]]) and not np.any(same[end[:, :-1]])


def test_distinct_buffers_unaliases_repeated_leaves():
    """A state holding one array twice (as Brax Swimmer's reset returns) cannot be donated."""
    x = jnp.arange(3.0)
    tree = distinct_buffers({"obs": x, "state": {"obs": x}})
    pointers = {leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(tree)}
    assert len(pointers) == 2
    np.testing.assert_array_equal(tree["state"]["obs"], x)
