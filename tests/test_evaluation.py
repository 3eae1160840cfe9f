"""Normalised table on hand numbers, and downstream rollouts against plain Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.envs import make
from scpr_jax.evaluation import (
    downstream_returns,
    downstream_returns_fn,
    normalised_table,
    table_markdown,
)

# compiling the rollouts dominates (each then runs a few dozen steps)
pytestmark = pytest.mark.usefixtures("fast_compile")

RAW = {
    "oracle": {"return": [10.0, 12.0], "cost": [0.0, 1.0]},
    "task-only": {"return": [11.0, 13.0], "cost": [4.0, 6.0]},
    "safe-vpl": {"return": [9.0, 11.0], "cost": [1.0, 2.0]},
    "rc": {"return": [1.0, 2.0, 3.0], "cost": [5.0, 5.0, 5.0]},
    "single": {"return": [22.0], "cost": [2.5]},
}


def assert_entry(entry, mean, se):
    np.testing.assert_allclose([entry["mean"], entry["se"]], [mean, se], rtol=1e-12, atol=1e-12)


def test_normalised_table_hand_numbers():
    table = normalised_table(RAW)
    assert table["methods"] == list(RAW)
    assert table["notes"] == []
    assert table["reward_ref_mean"] == 11.0 and table["cost_ref_mean"] == 5.0
    rows = table["rows"]
    # two seeds [a, b]: std(ddof=1) = |a - b| / sqrt(2), so SE = |a - b| / 2
    assert_entry(rows["oracle"]["return"], 11.0, 1.0)
    assert_entry(rows["oracle"]["cost"], 0.5, 0.5)
    assert_entry(rows["oracle"]["rew_norm"], 1.0, 1.0 / 11.0)
    assert_entry(rows["oracle"]["cost_norm"], 0.1, 0.1)
    assert_entry(rows["task-only"]["rew_norm"], 12.0 / 11.0, 1.0 / 11.0)
    assert_entry(rows["task-only"]["cost_norm"], 1.0, 0.2)
    assert_entry(rows["safe-vpl"]["return"], 10.0, 1.0)
    assert_entry(rows["safe-vpl"]["rew_norm"], 10.0 / 11.0, 1.0 / 11.0)
    assert_entry(rows["safe-vpl"]["cost_norm"], 0.3, 0.1)
    # three seeds 1, 2, 3: std(ddof=1) = 1, SE = 1 / sqrt(3)
    assert_entry(rows["rc"]["return"], 2.0, 1.0 / np.sqrt(3.0))
    assert_entry(rows["rc"]["rew_norm"], 2.0 / 11.0, 1.0 / (11.0 * np.sqrt(3.0)))
    assert_entry(rows["rc"]["cost_norm"], 1.0, 0.0)
    assert rows["rc"]["n_seeds"] == 3
    # one seed: SE is 0, not NaN
    assert_entry(rows["single"]["rew_norm"], 2.0, 0.0)
    assert_entry(rows["single"]["cost_norm"], 0.5, 0.0)
    assert rows["safe-vpl"]["cost"]["per_seed"] == [1.0, 2.0]


def test_missing_and_zero_references_give_none_and_notes():
    no_oracle = {k: v for k, v in RAW.items() if k != "oracle"}
    table = normalised_table(no_oracle)
    assert all(row["rew_norm"] is None for row in table["rows"].values())
    assert all(row["cost_norm"] is not None for row in table["rows"].values())
    assert len(table["notes"]) == 1 and "'oracle'" in table["notes"][0]
    assert table["reward_ref_mean"] is None

    safe_task_only = {**RAW, "task-only": {"return": [11.0, 13.0], "cost": [0.0, 0.0]}}
    table = normalised_table(safe_task_only)
    assert all(row["cost_norm"] is None for row in table["rows"].values())
    assert all(row["rew_norm"] is not None for row in table["rows"].values())
    assert len(table["notes"]) == 1 and "~0" in table["notes"][0]

    table = normalised_table(RAW, reward_ref="sopl", cost_ref="nobody")
    assert all(r["rew_norm"] is None and r["cost_norm"] is None for r in table["rows"].values())
    assert len(table["notes"]) == 2


def test_negative_reward_reference_is_defined_and_noted():
    raw = {"oracle": {"return": [-10.0, -12.0], "cost": [0.0, 0.0]}}
    raw["better"] = {"return": [-5.5, -5.5], "cost": [0.0, 0.0]}
    raw["task-only"] = {"return": [0.0, 0.0], "cost": [1.0, 1.0]}
    table = normalised_table(raw)
    # the ratio stays return / reference: a higher return gives a LOWER normalised reward
    assert_entry(table["rows"]["oracle"]["rew_norm"], 1.0, 1.0 / 11.0)
    assert_entry(table["rows"]["better"]["rew_norm"], 0.5, 0.0)
    assert len(table["notes"]) == 1 and "negative" in table["notes"][0]


@pytest.mark.parametrize(
    "raw, match",
    [
        ({}, "empty"),
        ({"a": {"return": [1.0]}}, "'cost'"),
        ({"a": {"return": [1.0, 2.0], "cost": [1.0]}}, "2 returns but 1 costs"),
        ({"a": {"return": [[1.0]], "cost": [1.0]}}, r"shape \(1, 1\)"),
        ({"a": {"return": [], "cost": []}}, "n_seeds >= 1"),
    ],
)
def test_normalised_table_rejects_bad_input(raw, match):
    with pytest.raises(ValueError, match=match):
        normalised_table(raw)


def test_table_markdown():
    raw = {k: RAW[k] for k in ("safe-vpl", "oracle", "task-only")}
    text = table_markdown(normalised_table(raw))
    lines = text.splitlines()
    assert lines[0] == "| Method | Rew (norm) | Cost (norm) | Return (raw) | Cost (raw) |"
    # rows in the given order, "mean ± se"
    assert (
        lines[2] == "| safe-vpl | 0.909 ± 0.091 | 0.300 ± 0.100 | 10.000 ± 1.000 | 1.500 ± 0.500 |"
    )
    assert lines[3].startswith("| oracle | 1.000 ± 0.091 | 0.100 ± 0.100 |")
    assert lines[4].startswith("| task-only | 1.091 ± 0.091 | 1.000 ± 0.200 |")
    assert "Seeds per method: 2." in text and "Notes:" not in text

    text = table_markdown(normalised_table({k: RAW[k] for k in ("rc", "single")}))
    assert "| rc | n/a | n/a | 2.000 ± 0.577 | 5.000 ± 0.000 |" in text
    assert "Seeds: rc 3, single 1" in text
    assert "Notes:" in text and text.count("\n- ") == 2


def reference_returns(key, task_name, act, n_episodes, max_steps):
    """Plain Python loop, one episode at a time, with the key use of `downstream_returns_fn`."""
    env = make(f"{task_name}/downstream")
    params = env.default_params(max_steps=max_steps)
    wrap, data = jax.random.wrap_key_data, jax.random.key_data
    # keys travel as raw uint32 data: iterating over a key array dispatches one op per item
    split = jax.jit(lambda k, n: data(jax.random.split(wrap(k), n)), static_argnums=1)
    reset = jax.jit(lambda k: env.reset(wrap(k), params))
    step = jax.jit(lambda k, state, obs: env.step(wrap(k), state, act(obs), params))
    returns, costs, goals, lengths = [], [], [], []
    for key_e in np.asarray(split(data(key), n_episodes)):
        k_reset, k_steps = np.asarray(split(key_e, 2))
        obs, state = reset(k_reset)
        goals.append(np.asarray(state.inner.goal))
        ret = cost = 0.0
        length = 0
        for k in np.asarray(split(k_steps, max_steps)):
            ts, state = step(k, state, obs)
            length += 1
            reward, c, done = jax.device_get((ts.reward, ts.cost, ts.terminated | ts.truncated))
            ret, cost = ret + float(reward), cost + float(c)
            if done:
                break
            obs = ts.obs
        returns.append(ret)
        costs.append(cost)
        lengths.append(length)
    return np.array(returns), np.array(costs), np.array(goals), np.array(lengths)


def test_constant_policy_matches_python_loop_and_goals_vary():
    key, n_episodes, max_steps = jax.random.key(3), 6, 30

    def act(obs):
        return jnp.array([0.8, 1.0])  # drifts out of the corridor: costs > 0

    returns, costs = downstream_returns(key, "ball-run", act, n_episodes, max_steps)
    ref_returns, ref_costs, goals, _ = reference_returns(key, "ball-run", act, n_episodes, 30)
    assert returns.shape == costs.shape == (n_episodes,)
    np.testing.assert_allclose(returns, ref_returns, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(costs, ref_costs)
    assert np.all(costs > 0) and np.all(costs < max_steps)
    # every reset draws its own downstream goal; the same actions then earn different r_new
    assert len(np.unique(goals)) > 1
    assert len(np.unique(np.round(returns, 4))) > 1


def test_goal_seeking_policy_stops_at_termination():
    """Ball-Reach terminates at the goal; steps after that (auto-reset) must not count."""
    key, n_episodes, max_steps = jax.random.key(0), 6, 40

    def act(obs):
        return jnp.clip(50.0 * obs[-2:], -1.0, 1.0)  # obs[-2:] = (goal - p) / 20

    returns, costs = downstream_returns(key, "ball-reach", act, n_episodes, max_steps)
    ref = reference_returns(key, "ball-reach", act, n_episodes, max_steps)
    ref_returns, ref_costs, goals, lengths = ref
    assert np.any(lengths < max_steps), "no episode terminated early: test is vacuous"
    assert len({tuple(g) for g in goals}) > 1
    np.testing.assert_allclose(returns, ref_returns, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(costs, ref_costs)


def test_vmap_over_parameter_seeds_equals_separate_calls():
    env = make("ball-run/downstream")

    def act(w, obs):
        return jnp.tanh(w @ obs)

    f = downstream_returns_fn("ball-run", 3, act, max_steps=20)
    ws = jax.random.normal(jax.random.key(1), (2, env.action_size, env.obs_size))
    keys = jax.random.split(jax.random.key(2), 2)
    batched = jax.jit(jax.vmap(f))(keys, ws)
    single = jax.jit(f)
    for i in range(2):
        returns, costs = single(keys[i], ws[i])
        np.testing.assert_allclose(batched[0][i], returns, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(batched[1][i], costs)
    assert not np.allclose(batched[0][0], batched[0][1])


def test_downstream_returns_rejects_bad_input():
    with pytest.raises(ValueError, match="n_episodes=0"):
        downstream_returns_fn("ball-run", 0, lambda p, o: o[:2])
    with pytest.raises(ValueError, match="without a form"):
        downstream_returns_fn("ball-run/downstream", 2, lambda p, o: o[:2])


def test_control_interval_holds_the_latent_between_choices():
    """interval=3: u = choose(obs_t) at t = 0, 3, 6, ... and the skill acts on every obs."""
    env, n_steps, interval = make("ball-run/downstream"), 10, 3
    w = jax.random.normal(jax.random.key(1), (env.action_size, env.obs_size))
    choose = jax.jit(lambda p, obs: jnp.tanh(p @ obs))
    execute = jax.jit(lambda p, obs, u: jnp.clip(u + 0.1 * obs[:2], -1.0, 1.0))
    f = downstream_returns_fn("ball-run", 1, (choose, execute), n_steps, interval=interval)
    key = jax.random.key(4)
    returns, costs = jax.jit(f)(key, w)
    # reference: the documented key use, one Python step at a time
    params = env.default_params(max_steps=n_steps)
    k_reset, k_steps = jax.random.split(jax.random.split(key, 1)[0])
    obs, state = env.reset(k_reset, params)
    ret, u, actions = 0.0, None, []
    for t, k in enumerate(jax.random.split(k_steps, n_steps)):
        u = choose(w, obs) if t % interval == 0 else u
        actions.append(execute(w, obs, u))
        ts, state = env.step(k, state, actions[-1], params)
        ret, obs = ret + float(ts.reward), ts.obs
    np.testing.assert_allclose(returns[0], ret, rtol=1e-5, atol=1e-5)
    assert costs.shape == (1,)
    every_step = jax.jit(
        downstream_returns_fn("ball-run", 1, lambda p, o: execute(p, o, choose(p, o)), n_steps)
    )
    assert not np.allclose(every_step(key, w)[0], returns)  # holding u changes the rollout
    with pytest.raises(ValueError, match="interval=0 must be an integer >= 1"):
        downstream_returns_fn("ball-run", 1, (choose, execute), interval=0)
