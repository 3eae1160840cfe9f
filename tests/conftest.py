"""Shared environment probe: one jitted function exercising the whole env API per task.

Compiling a Brax step takes tens of seconds on a CPU, so every environment is driven by ONE
function, `probe`, compiled twice: under ``jit`` for a single copy, and under ``jit(vmap)``
over 64 copies. From one key and state it returns

- a downstream reset with the key AutoReset uses internally, so an auto-reset can be
  compared to it exactly, and an AutoReset downstream step;
- (vmapped version only) references: the same step one wrapper further in (no auto-reset),
  and a crowd-form reset and step from the same state (same physics).

`run_probe` rolls it out for a few short episodes and keeps everything as NumPy arrays with
leading axes [call, copy]; call 0 steps a dummy all-zero state and only its resets count.
The `Probe.check_*` methods hold the assertions shared by all six tasks.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.envs import make

# One XLA compilation cache for the session: the many tests that compare a vmapped run with
# separate runs compile each identical program once instead of once per run.
os.environ["SCPR_XLA_CACHE"] = tempfile.mkdtemp(prefix="scpr-test-xla-")  # also for `scpr`
jax.config.update("jax_compilation_cache_dir", os.environ["SCPR_XLA_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

N_COPIES = 64
N_CALLS = 10  # call 0 resets; calls 1..9 step: episodes truncate at steps 4 and 8
MAX_STEPS = 4
SINGLE_COPIES = (0, 63)  # copies re-run one at a time (different crowd users)
STEP_KEYS = ("ts", "state1", "raw_ts", "raw_state1", "c_ts", "c_state1")


def assert_tree_close(a: Any, b: Any, tol: float, mask: np.ndarray | None = None) -> None:
    """Leafwise equality of two pytrees (floats to ``tol``), optionally on ``mask`` rows."""
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if mask is not None:
            x, y = x[mask], y[mask]
        msg = jax.tree_util.keystr(path)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, equal_nan=True, err_msg=msg)
        else:
            np.testing.assert_array_equal(x, y, err_msg=msg)


def _stack(outs: list) -> Any:
    return jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(outs))


def _take(tree: Any, index: Any) -> Any:
    return jax.tree.map(lambda x: x[index], tree)


def _flat(tree: Any) -> Any:
    """Merges the leading [call, copy] axes so a per-example function can be vmapped."""
    return jax.tree.map(
        lambda x: jnp.asarray(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])), tree
    )


@dataclasses.dataclass
class Probe:
    """A rolled-out probe: batched outputs [call, copy, ...], single-copy reruns, traces."""

    env: Any  # downstream AutoReset stack from `make`
    crowd: Any  # crowd AutoReset stack from `make`
    users: np.ndarray  # [copy] crowd user of each copy
    actions: np.ndarray  # [call, copy, action_size] unclipped actions fed to each call
    prev: Any  # state fed to each call [call, copy]
    out: dict  # probe outputs [call, copy]
    singles: dict  # copy index -> probe outputs of its single-copy rerun [call]
    traces: dict  # "single"/"batched" -> number of traces
    tol: float

    @property
    def task(self):
        return self.env.task

    def _steps(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: x[1:], tree)

    def done(self) -> np.ndarray:
        ts = self.out["ts"]
        return np.logical_or(ts.terminated, ts.truncated)[1:]

    def map_task(self, fn, *trees) -> np.ndarray:
        """``fn`` applied to every [call >= 1, copy] example, reshaped back."""
        flat = jax.vmap(fn)(*[_flat(self._steps(t)) for t in trees])
        return np.asarray(flat).reshape(N_CALLS - 1, N_COPIES, *np.shape(flat)[1:])

    def check_shapes(self) -> None:
        task, out = self.task, self.out
        assert self.env.obs_size == task.obs_size + task.goal_obs_size
        assert self.crowd.obs_size == task.obs_size
        assert out["obs0"].shape == (N_CALLS, N_COPIES, self.env.obs_size)
        assert out["c_obs0"].shape == (N_CALLS, N_COPIES, task.obs_size)
        for ts, obs_size in [(out["ts"], self.env.obs_size), (out["c_ts"], task.obs_size)]:
            assert ts.obs.shape == (N_CALLS, N_COPIES, obs_size)
            assert ts.info["final_obs"].shape == ts.obs.shape
            assert ts.info["goal"].shape == (N_CALLS, N_COPIES, task.goal_size)
            for field in ("reward", "cost"):
                assert getattr(ts, field).shape == (N_CALLS, N_COPIES)
                assert getattr(ts, field).dtype == np.float32
            for field in ("terminated", "truncated"):
                assert getattr(ts, field).shape == (N_CALLS, N_COPIES)
                assert getattr(ts, field).dtype == np.bool_
            keys = {"goal", "final_obs", "episode_return", "episode_cost", "episode_length"}
            assert keys <= set(ts.info)
            for leaf in jax.tree.leaves(self._steps(ts)):
                assert np.all(np.isfinite(leaf))
            assert set(np.unique(ts.cost[1:])) <= {0.0, 1.0}
        assert np.all(np.isfinite(out["obs0"])) and np.all(np.isfinite(out["c_obs0"]))

    def check_matches_single(self) -> None:
        """Copy i of the vmapped rollout equals the single-copy rollout with the same keys."""
        assert self.singles
        for i, single in self.singles.items():
            for key, value in single.items():
                first = 1 if key in STEP_KEYS else 0
                batched_i = _take(self.out[key], (slice(first, None), i))
                assert_tree_close(batched_i, _take(value, slice(first, None)), self.tol)

    def check_traced_once(self) -> None:
        assert self.traces == {"single": 1, "batched": 1}

    def check_auto_reset(self) -> None:
        out, done = self.out, self.done()
        ts, raw = self._steps(out["ts"]), self._steps(out["raw_ts"])
        state1, raw1 = self._steps(out["state1"]), self._steps(out["raw_state1"])
        prev = self._steps(self.prev)
        assert done.any() and not done.all()
        assert not np.any(ts.terminated & ts.truncated)
        # truncation exactly at max_steps unless the episode terminated
        at_limit = prev.inner.t + 1 >= MAX_STEPS
        np.testing.assert_array_equal(ts.truncated, at_limit & ~ts.terminated)
        for field in ("reward", "cost", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(ts, field), getattr(raw, field))
        # final_obs is always the true post-step observation; obs differs only on done steps
        np.testing.assert_allclose(ts.info["final_obs"], raw.obs, atol=self.tol)
        np.testing.assert_array_equal(ts.info["final_obs"][~done], ts.obs[~done])
        np.testing.assert_allclose(ts.obs[~done], raw.obs[~done], atol=self.tol)
        assert_tree_close(state1, raw1, self.tol, mask=~done)
        np.testing.assert_array_equal(state1.inner.t[~done], prev.inner.t[~done] + 1)
        # done: a fresh reset (same key as AutoReset's), counters and statistics zeroed
        assert_tree_close(state1, self._steps(out["state0"]), self.tol, mask=done)
        np.testing.assert_allclose(ts.obs[done], out["obs0"][1:][done], atol=self.tol)
        assert not np.allclose(ts.obs[done], raw.obs[done])
        np.testing.assert_array_equal(state1.inner.t[done], 0)
        np.testing.assert_array_equal(state1.episode_length[done], 0)
        np.testing.assert_array_equal(state1.episode_return[done], 0.0)
        np.testing.assert_array_equal(state1.episode_cost[done], 0.0)
        c_ts, c_state1 = self._steps(out["c_ts"]), self._steps(out["c_state1"])
        assert_tree_close(c_state1, self._steps(out["c_state0"]), self.tol, mask=done)
        np.testing.assert_allclose(c_ts.obs[done], out["c_obs0"][1:][done], atol=self.tol)

    def check_rewards_and_cost(self) -> None:
        """Downstream steps return r_new, crowd steps r_user; cost is the task's indicator."""
        task, out = self.task, self.out
        ts, c_ts = self._steps(out["ts"]), self._steps(out["c_ts"])
        prev_goal = self._steps(self.prev).inner.goal
        np.testing.assert_array_equal(ts.info["goal"], prev_goal)
        np.testing.assert_array_equal(c_ts.info["goal"], prev_goal)
        r_new = self.map_task(task.reward, out["ts"].info, out["ts"].info["goal"])
        r_user = self.map_task(task.user_reward, out["c_ts"].info, out["c_ts"].info["goal"])
        np.testing.assert_allclose(ts.reward, r_new, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_ts.reward, r_user, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_ts.reward, ts.reward + task.crowd_offset, atol=1e-5)
        cost = self.map_task(task.cost, out["raw_state1"].inner.phys)
        np.testing.assert_array_equal(ts.cost, cost)
        np.testing.assert_array_equal(c_ts.cost, cost)

    def check_goals(self) -> None:
        task, out, done = self.task, self.out, self.done()
        drawn = out["state0"].inner.goal.reshape(-1, task.goal_size)
        member = np.isclose(drawn[:, None], task.downstream_goals[None]).all(-1)
        assert member.any(-1).all(), "a downstream reset drew a goal outside the goal set"
        n_distinct = np.unique(member.argmax(-1)).size
        assert n_distinct >= min(len(task.downstream_goals), 30)
        # crowd: params.goals[params.user] at every reset and auto-reset, never resampled
        user_goal = np.broadcast_to(task.user_goals[self.users], out["c_state0"].inner.goal.shape)
        np.testing.assert_array_equal(out["c_state0"].inner.goal, user_goal)
        c_goal1 = self._steps(out["c_state1"]).inner.goal
        prev_goal = self._steps(self.prev).inner.goal
        np.testing.assert_array_equal(c_goal1[done], user_goal[1:][done])
        np.testing.assert_array_equal(c_goal1[~done], prev_goal[~done])
        # downstream: resample_prob = 1 redraws the goal at t == max_steps // 2 only
        state1 = self._steps(out["state1"]).inner
        changed = np.any(state1.goal != prev_goal, -1) & ~done
        assert changed.any()
        assert np.all(state1.t[changed] == MAX_STEPS // 2)
        # goal features in the observation are those of the state the observation shows
        state1 = out["state1"].inner
        features = self.map_task(task.goal_features, state1.goal, state1.phys)
        obs, c_obs = self._steps(out["ts"]).obs, self._steps(out["c_ts"]).obs
        np.testing.assert_allclose(obs[..., task.obs_size :], features, atol=1e-6)
        np.testing.assert_allclose(obs[..., : task.obs_size], c_obs, atol=self.tol)
        np.testing.assert_allclose(out["obs0"][..., : task.obs_size], out["c_obs0"], atol=self.tol)

    def check_episode_stats(self) -> None:
        ts, done = self._steps(self.out["ts"]), self.done()
        ret = np.zeros(N_COPIES, np.float32)
        cost = np.zeros(N_COPIES, np.float32)
        length = np.zeros(N_COPIES, np.int32)
        for t in range(N_CALLS - 1):
            ret, cost, length = ret + ts.reward[t], cost + ts.cost[t], length + 1
            np.testing.assert_allclose(ts.info["episode_return"][t], ret, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ts.info["episode_cost"][t], cost)
            np.testing.assert_array_equal(ts.info["episode_length"][t], length)
            np.testing.assert_array_equal(ts.info["episode_done"][t], done[t])
            ret, cost, length = (np.where(done[t], 0, x) for x in (ret, cost, length))


def run_probe(name: str, tol: float = 1e-5, seed: int = 0, **task_kwargs) -> Probe:
    """Compiles and rolls out the probe of environment ``name`` (see module docstring)."""
    env = make(f"{name}/downstream", **task_kwargs)
    crowd = make(f"{name}/crowd", **task_kwargs)
    params = env.default_params(max_steps=MAX_STEPS).replace(resample_prob=jnp.float32(1.0))
    crowd_params = crowd.default_params(max_steps=MAX_STEPS).replace(resample_prob=jnp.float32(1.0))
    traces = {"single": 0, "batched": 0}

    def probe(key, state, action, user, full):
        k_step, k_reset = jax.random.split(key)  # the split AutoReset.step does
        obs0, state0 = env.reset(k_reset, params)
        ts, state1 = env.step(key, state, action, params)
        out = dict(obs0=obs0, state0=state0, ts=ts, state1=state1)
        if full:  # the references; left out of the single-copy function to halve its compile
            out["raw_ts"], out["raw_state1"] = env.env.step(k_step, state, action, params)
            c_params = crowd_params.replace(user=user)
            out["c_obs0"], out["c_state0"] = crowd.reset(k_reset, c_params)
            out["c_ts"], out["c_state1"] = crowd.step(key, state, action, c_params)
        return out

    def counted(kind, full):
        def fn(*args):
            traces[kind] += 1
            return probe(*args, full=full)

        return fn

    single = jax.jit(counted("single", full=False))
    batched = jax.jit(jax.vmap(counted("batched", full=True)))
    k_keys, k_actions = jax.random.split(jax.random.key(seed))
    keys = jax.random.split(k_keys, (N_CALLS, N_COPIES))
    # beyond [-1, 1] on purpose: SafeEnv clips
    actions = jax.random.uniform(
        k_actions, (N_CALLS, N_COPIES, env.action_size), minval=-1.2, maxval=1.2
    )
    users = jnp.arange(N_COPIES, dtype=jnp.int32) % len(env.task.user_goals)
    shapes = jax.eval_shape(env.reset, keys[0, 0], params)[1]
    dummy = jax.tree.map(lambda s: jnp.zeros((N_COPIES, *s.shape), s.dtype), shapes)

    def roll(step_fn, state, index):
        prev, outs = [], []
        for c in range(N_CALLS):
            out = step_fn(keys[c][index], state, actions[c][index], users[index])
            prev.append(state)
            outs.append(out)
            state = out["state0"] if c == 0 else out["state1"]
        return _stack(prev), _stack(outs)

    # XLA compiles on one core: build the two functions side by side (each in ONE thread, so
    # no function is ever traced twice concurrently)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batched_rollout = pool.submit(roll, batched, dummy, slice(None))
        singles = {i: roll(single, _take(dummy, i), i)[1] for i in SINGLE_COPIES}
        prev, out = batched_rollout.result()
    return Probe(
        env, crowd, np.asarray(users), np.asarray(actions), prev, out, singles, traces, tol
    )


@pytest.fixture
def quick_xla():
    """Skips most XLA optimisation passes for one test (restored afterwards): for tests
    that compile much and run little."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module")
def fast_compile():
    """Skips most XLA optimisation passes in the using module (restored afterwards).

    Compiling dominates these tests (a Brax step: tens of seconds) while each compiled
    function runs only a few steps; skipping the passes halves compile time.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="session")
def probe_runner():
    """`run_probe`, for the per-file ``probe`` fixtures."""
    return run_probe
