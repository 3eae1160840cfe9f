"""The acting core: step -> store -> maybe-learn, chunk means, episode sums (hand-derived)."""

import ast
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax import acting
from scpr_jax.acting import (
    EpisodeSums,
    accumulate,
    act_store_learn,
    chunk_means,
    is_host,
    maybe_learn,
    rollout,
    scan_updates,
    store_and_learn,
)
from scpr_jax.envs import make
from scpr_jax.envs.core import TimeStep


def test_acting_imports_only_lower_layers():
    tree = ast.parse(inspect.getsource(acting))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in modules if m.startswith("scpr_jax")}
    assert all(m.split(".")[1] in ("envs", "runs", "train") for m in ours), ours


# --- episodes


def test_accumulate_masks_the_steps_after_the_first_end():
    # two copies, 4 steps; copy 0 ends at step 1 (AutoReset continues), copy 1 never ends
    reward = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]], np.float32)
    cost = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32)
    done = np.array([[False, False], [True, False], [False, False], [True, False]])
    for xp, dtype in ((jnp, jnp.float32), (np, np.float64)):
        sums = EpisodeSums.start((2,), dtype, xp=xp)
        for t in range(4):
            sums = accumulate(sums, reward[t], cost[t], done[t])
        # copy 0: 1 + 2 = 3, cost 0 + 1 = 1; copy 1: 10 + 20 + 30 + 40 = 100, cost 3
        np.testing.assert_array_equal(sums.ret, [3.0, 100.0])
        np.testing.assert_array_equal(sums.cost, [1.0, 3.0])
        np.testing.assert_array_equal(sums.alive, [0.0, 1.0])
        assert sums.ret.dtype == dtype


class CountingEnv:
    """obs = [t]; reward = action + t; cost = 1 on odd t; terminates at t = 2, then restarts."""

    def reset(self, key, params):
        return jnp.zeros(1), jnp.asarray(0, jnp.int32)

    def step(self, key, t, action, params):
        done = t == 2
        ts = TimeStep(
            obs=jnp.where(done, 0.0, t + 1.0)[None],
            reward=action + t.astype(jnp.float32),
            cost=(t % 2).astype(jnp.float32),
            terminated=done,
            truncated=jnp.asarray(False),
            info={},
        )
        return ts, jnp.where(done, 0, t + 1)


def test_rollout_sums_one_episode_and_threads_the_policy_carry():
    env = CountingEnv()
    # constant action 1: rewards 1, 2, 3 until the end at t = 2, then a new episode is ignored
    ret, cost = rollout(env, None, lambda obs, t, c: (1.0, c), jax.random.key(0), 6)
    assert float(ret) == 6.0 and float(cost) == 1.0  # cost at t = 1 only
    # carry: the action is the number of earlier steps (0, 1, 2) plus obs0 + 1 = 1 (init)
    policy = lambda obs, t, c: (c, c + 1.0)  # noqa: E731
    init = lambda obs0: obs0[0] + 1.0  # noqa: E731
    ret, _ = jax.jit(lambda k: rollout(env, None, policy, k, 6, init))(jax.random.key(0))
    assert float(ret) == (1 + 0) + (2 + 1) + (3 + 2)


# --- step -> store -> maybe-learn


def test_maybe_learn_skip_gives_zero_metrics_of_learns_shapes():
    def learn(learner, x, key):
        metrics = {"loss": jnp.sum(x), "vec": x * 2, "count": jnp.asarray(7, jnp.int32)}
        return learner + 1.0, metrics

    x = jnp.arange(3, dtype=jnp.float32)
    f = jax.jit(lambda u: maybe_learn(u, learn, jnp.float32(5.0), x, jax.random.key(0)))
    learner, m = f(jnp.bool_(False))
    assert float(learner) == 5.0
    assert {k: (v.shape, v.dtype) for k, v in m.items()} == {
        "loss": ((), jnp.float32), "vec": ((3,), jnp.float32), "count": ((), jnp.int32)
    }  # fmt: skip
    assert all(not np.any(v) for v in m.values())
    learner, m = f(jnp.bool_(True))
    assert float(learner) == 6.0 and float(m["loss"]) == 3.0 and int(m["count"]) == 7
    np.testing.assert_array_equal(m["vec"], [0.0, 2.0, 4.0])


def test_scan_updates_averages_the_metrics():
    learner, m = scan_updates(
        lambda s, k: (s + 1, {"s": s}), jnp.float32(0.0), jax.random.key(0), 4
    )
    assert float(learner) == 4.0 and float(m["s"]) == (0 + 1 + 2 + 3) / 4


def _ts(reward, cost, done, ep_return, ep_cost):
    info = {"episode_done": jnp.asarray(done), "episode_return": jnp.asarray(ep_return),
            "episode_cost": jnp.asarray(ep_cost)}  # fmt: skip
    done = jnp.asarray(done)
    return TimeStep(jnp.zeros((2, 1)), jnp.asarray(reward), jnp.asarray(cost), done, ~done, info)


def test_act_store_learn_stores_then_learns_from_learn_from():
    ts = _ts([1.0, 3.0], [0.0, 1.0], [True, False], [5.0, 7.0], [2.0, 9.0])

    def step(t, warmup_t=2, learn_from=1):
        def store(action, ts):
            return buffer.at[t].set(action.sum() + ts.reward.sum()), t + 1  # row t, t + 1 filled

        def learn(learner, buffer, filled, scale, key):
            return learner + scale * filled, {"filled": filled.astype(jnp.float32)}

        buffer = jnp.zeros(4)
        act = lambda k, warm: jnp.where(warm, -1.0, 1.0) * jnp.ones((2, 1))  # noqa: E731
        env_step = lambda k, a: (ts, "next-env-state")  # noqa: E731
        keys = tuple(jax.random.split(jax.random.key(0), 3))
        t = jnp.asarray(t, jnp.int32)
        return act_store_learn(
            act, env_step, store, learn, warmup_t, learn_from, t, keys, jnp.float32(0.0), 10.0
        )

    learner, buffer, env_state, _, m = step(0)  # warm (action -1), before learn_from
    assert env_state == "next-env-state" and float(learner) == 0.0
    np.testing.assert_array_equal(buffer, [-2.0 + 4.0, 0, 0, 0])
    assert float(m["updated"]) == 0.0 and float(m["filled"]) == 0.0  # skipped: zeros
    # transition sums: mean reward 2, mean cost 0.5, one episode ended (return 5, cost 2)
    assert {k: float(m[k]) for k in ("reward", "cost", "episodes")} == {
        "reward": 2.0, "cost": 0.5, "episodes": 1.0
    }  # fmt: skip
    assert float(m["episode_return"]) == 5.0 and float(m["episode_cost"]) == 2.0
    learner, buffer, _, _, m = step(2)  # policy action +1; learns on 3 filled rows
    assert float(learner) == 30.0 and float(m["updated"]) == 1.0 and float(m["filled"]) == 3.0
    np.testing.assert_array_equal(buffer, [0, 0, 2.0 + 4.0, 0])
    # the second half alone (the host's) gives the same
    store = lambda a, ts: (jnp.zeros(4), jnp.int32(3))  # noqa: E731
    learn = lambda learner, buffer, filled, key: (learner + filled, {})  # noqa: E731
    learner, _, m = store_and_learn(
        store, learn, 2, jnp.int32(2), 0, jnp.ones((2, 1)), ts, jax.random.key(0)
    )
    assert int(learner) == 3 and float(m["updated"]) == 1.0


def test_chunk_means_mask_learner_metrics_by_updated_steps():
    steps = {  # 3 steps: the first before learning
        "reward": [1.0, 2.0, 6.0],
        "cost": [0.0, 0.5, 1.0],
        "episodes": [0.0, 2.0, 1.0],
        "episode_return": [0.0, 10.0, 5.0],  # sums over the episodes ended in each step
        "episode_cost": [0.0, 1.0, 2.0],
        "updated": [0.0, 1.0, 1.0],
        "loss": [0.0, 2.0, 4.0],  # zeros of the skipped step
    }
    expected = {
        "reward": 3.0, "cost": 0.5, "episodes": 3.0, "episode_return": 5.0, "episode_cost": 1.0,
        "penalty": 10.0, "updates": 8.0, "loss": 3.0,
    }  # fmt: skip
    host = chunk_means(
        {k: np.asarray(v, np.float64) for k, v in steps.items()}, 4, np, penalty=10.0
    )
    assert list(host) == list(expected) and {k: float(v) for k, v in host.items()} == expected
    f = jax.jit(lambda s: chunk_means(s, 4, penalty=jnp.float32(10.0)))
    device = f({k: jnp.asarray(v, jnp.float32) for k, v in steps.items()})
    assert {k: float(v) for k, v in device.items()} == expected
    # no step learned and no episode ended: 0 placeholders, not NaN
    none = {k: np.zeros(3) for k in steps}
    assert all(v == 0 for v in chunk_means(none, 4, np).values())


def test_is_host():
    assert is_host("real:ball-run") and is_host("real:ball-run/downstream")
    assert not is_host("ball-run") and not is_host(make("ball-run/downstream"))

    class Host:
        host = True

    assert is_host(Host())
