"""The bridge to the real simulators: all six tasks, shapes, parity, seeding, compat patches.

One downstream `BridgedEnv` with 2 copies per task is built once (module fixture); the
Ball-Reach crowd form gets its own. Reference values come from the simulators themselves
(their native reward, cost and state) and from our JAX-native twins of the ball tasks.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.bridge import bridged_names, make
from scpr_jax.bridge.compat import (
    import_safety_gymnasium,
    ndarray_defaults_as_factories,
    swimmer_xml,
)
from scpr_jax.envs import make as make_native

TASKS = ("ball-run", "ball-circle", "ball-reach", "ant-vel", "halfcheetah-vel", "swimmer-vel")
BALL_TASKS = TASKS[:3]
VELOCITY_TASKS = TASKS[3:]
N = 2
# the simulators' own spaces: (observation, action) shapes
SIM_SPACES = {
    "ball-run": ((7,), (2,)),  # Ball obs; we drop x
    "ball-circle": ((8,), (2,)),  # Ball obs + ring distance
    "ball-reach": ((33,), (2,)),  # Ball obs + 24 lidar + 2 features of Bullet's own goal
    "ant-vel": ((27,), (8,)),
    "halfcheetah-vel": ((17,), (6,)),
    "swimmer-vel": ((8,), (2,)),
}
# our JAX-native task sizes (tests/test_envs_*.py): (obs_size, goal_obs_size, action_size)
NATIVE_SIZES = {
    "ball-run": (6, 1, 2),
    "ball-circle": (8, 1, 2),
    "ball-reach": (31, 2, 2),
    "ant-vel": (27, 2, 8),
    "halfcheetah-vel": (17, 2, 6),
    "swimmer-vel": (8, 2, 2),
}
SPEED_LIMIT = {"ant-vel": 2.6222, "halfcheetah-vel": 3.2096, "swimmer-vel": 1.5}

# the bridge's jitted rules run a few steps each: compile time dominates (conftest.py)
pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def envs():
    built = {task: make(f"real:{task}/downstream", n_envs=N) for task in TASKS}
    yield built
    for env in built.values():
        env.close()


def _rollout(env, key, n_steps, params, actions=None):
    """Steps ``env`` from ``reset(key)``; returns (reset obs, [TimeStep] as NumPy)."""
    obs = np.asarray(env.reset(key, params))
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_steps):
        a = rng.uniform(-1, 1, (N, env.action_size)) if actions is None else actions[i]
        out.append(jax.device_get(env.step(jax.random.fold_in(key, i), a, params)))
    return obs, out


# --- the compat patches ------------------------------------------------------------------


def test_safety_gymnasium_imports_and_dataclasses_unchanged():
    original = dataclasses._get_field
    sg = import_safety_gymnasium()
    assert dataclasses._get_field is original
    assert hasattr(sg, "make")
    from safety_gymnasium.assets.geoms.apples import Apples

    a, b = Apples(), Apples()  # ndarray defaults became per-instance copies
    assert a.color is not b.color and np.array_equal(a.color, b.color)
    with pytest.raises(ValueError, match="mutable default"):  # the stdlib rule is back

        @dataclasses.dataclass
        class Bad:
            x: np.ndarray = np.zeros(2)


def test_ndarray_defaults_patch_is_scoped_and_restored():
    original = dataclasses._get_field
    ns = {"__module__": "safety_gymnasium.fake", "__annotations__": {"c": np.ndarray}}
    with ndarray_defaults_as_factories():
        cls = dataclasses.dataclass(type("Geom", (), {**ns, "c": np.arange(3.0)}))
        with pytest.raises(ValueError, match="mutable default"):  # other modules: untouched
            other = {**ns, "__module__": "mypkg", "c": np.arange(3.0)}
            dataclasses.dataclass(type("Other", (), other))
    assert dataclasses._get_field is original
    x, y = cls(), cls()
    x.c[0] = 5.0
    np.testing.assert_array_equal(y.c, [0.0, 1.0, 2.0])
    with pytest.raises(RuntimeError), ndarray_defaults_as_factories():
        raise RuntimeError("restored even on error")
    assert dataclasses._get_field is original


def test_swimmer_xml_fix():
    xml = '<mujoco><option collision="predefined" density="4000" timestep="0.01"/></mujoco>'
    fixed = swimmer_xml(xml)
    assert "collision" not in fixed
    assert '<option density="4000" timestep="0.01"><flag contact="disable"/></option>' in fixed
    with pytest.raises(ValueError, match="predefined"):
        swimmer_xml("<mujoco><option timestep='0.01'/></mujoco>")


# --- all six simulators -----------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_steps_and_shapes(envs, task):
    env = envs[task]
    obs_size, goal_obs_size, action_size = NATIVE_SIZES[task]
    assert (env.sim_obs_shape, env.sim_action_shape) == SIM_SPACES[task]
    assert (env.task.obs_size, env.task.goal_obs_size, env.action_size) == NATIVE_SIZES[task]
    assert env.obs_size == obs_size + goal_obs_size
    obs, steps = _rollout(env, jax.random.PRNGKey(0), 3, env.default_params())
    assert obs.shape == (N, env.obs_size) and obs.dtype == np.float32
    for ts in steps:
        assert ts.obs.shape == ts.info["final_obs"].shape == (N, env.obs_size)
        assert ts.reward.shape == ts.cost.shape == (N,) and ts.reward.dtype == np.float32
        assert ts.terminated.dtype == ts.truncated.dtype == np.bool_
        assert ts.info["goal"].shape == (N, env.task.goal_size)
        assert set(np.unique(ts.cost)) <= {0.0, 1.0}
        for field in ("episode_return", "episode_cost", "episode_length", "episode_done"):
            assert ts.info[field].shape == (N,)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(ts))
    # the relabelling contract: r_new recomputed from the stored info
    r = jax.vmap(env.task.reward)(steps[-1].info, steps[-1].info["goal"])
    np.testing.assert_allclose(steps[-1].reward, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", BALL_TASKS)
def test_ball_resets_match_native_twin(envs, task):
    env, key = envs[task], jax.random.PRNGKey(3)
    params = env.default_params()
    native = make_native(f"{task}/downstream")
    obs, steps = _rollout(env, key, 1, params)
    native_obs, _ = jax.jit(jax.vmap(native.reset, (0, None)))(jax.random.split(key, N), params)
    np.testing.assert_allclose(obs, native_obs, atol=1e-6)


# --- parity with the simulators' own signals --------------------------------------------


@pytest.mark.parametrize("task", VELOCITY_TASKS)
def test_velocity_rewards_and_cost_match_simulator(envs, task):
    """User rewards recomputed from info equal the simulator's own reward (forward user);
    our cost equals the paper's threshold on the simulator's velocity and, where the two
    rules coincide, the simulator's own cost. Copy 0 is kicked to an unsafe speed."""
    env, key = envs[task], jax.random.PRNGKey(1)
    params = env.default_params(max_steps=20)
    env.reset(key, params)
    rng = np.random.default_rng(1)
    sim_xy, steps, sim_reward, sim_cost = [], [], [], []
    for i in range(12):
        if i in (3, 8):  # kick copy 0 forward (step 3) / backward (step 8)
            sim = env.envs[0]
            qvel = sim.data.qvel.copy()
            qvel[0] = 8.0 if i == 3 else -8.0
            sim.set_state(sim.data.qpos.copy(), qvel)
        before = np.array([_sim_xy(s) for s in env.envs])
        action = rng.uniform(-1, 1, (N, env.action_size))
        ts = jax.device_get(env.step(jax.random.fold_in(key, i), action, params))
        sim_xy.append((np.array([_sim_xy(s) for s in env.envs]) - before) / env.envs[0].dt)
        steps.append(ts)
        sim_reward.append(env.sim_signals["reward"])
        sim_cost.append(env.sim_signals["cost"])
    sim_reward, sim_cost = np.concatenate(sim_reward), np.concatenate(sim_cost)
    info = jax.tree.map(lambda *x: np.concatenate(x), *[ts.info for ts in steps])
    cost = np.concatenate([ts.cost for ts in steps])
    velocity = np.concatenate(sim_xy)
    if task == "halfcheetah-vel":
        velocity[:, 1] = 0.0
    np.testing.assert_allclose(info["velocity"], velocity, rtol=1e-5, atol=1e-4)
    forward = jax.vmap(env.task.user_reward, (0, None))(info, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(forward, sim_reward, rtol=1e-5, atol=1e-5)
    if task != "halfcheetah-vel":  # the y-direction user: v_y + healthy - ctrl
        up = jax.vmap(env.task.user_reward, (0, None))(info, jnp.array([0.0, 1.0]))
        expected = velocity[:, 1] + info["healthy_reward"] - info["ctrl_cost"]
        np.testing.assert_allclose(up, expected, rtol=1e-4, atol=1e-4)
    speed = np.linalg.norm(velocity, axis=-1)  # HalfCheetah: |v_x| (v_y = 0)
    np.testing.assert_array_equal(cost, (speed > SPEED_LIMIT[task]).astype(np.float32))
    assert cost.sum() >= 2  # the kicks were unsafe
    if task == "ant-vel":  # same rule as Safety-Gymnasium's
        np.testing.assert_array_equal(cost, sim_cost)
    if task == "halfcheetah-vel":  # Safety-Gymnasium only limits forward speed
        np.testing.assert_array_equal(cost * (velocity[:, 0] > 0), sim_cost)
        assert np.any((cost == 1) & (velocity[:, 0] < 0))


def _sim_xy(sim) -> np.ndarray:
    """The planar root position each velocity simulator differentiates."""
    if hasattr(sim, "_use_contact_forces"):  # Ant: torso centre of mass
        return sim.get_body_com("torso")[:2].copy()
    return sim.data.qpos[:2].copy()


def test_reach_crowd_lidar_cost_and_user_reward():
    """Driving at the nearest puddle: cost is 1 exactly when the simulator's lidar > 0.7."""
    env = make("real:ball-reach/crowd", n_envs=N)
    params = env.default_params(user=2)
    env.reset(jax.random.PRNGKey(5), params)
    costs, lidar_unsafe = [], []
    for i in range(40):
        action = []
        for sim in env.envs:
            pos = sim.agent.get_position()[:2]
            puddles = np.array([ob.get_position()[:2] for ob in sim.obstacles])
            target = puddles[np.argmin(np.linalg.norm(puddles - pos, axis=-1))]
            action.append(np.clip(target - pos, -1, 1))
        ts = jax.device_get(env.step(jax.random.PRNGKey(i), np.array(action), params))
        assert ts.obs.shape == (N, 31)
        costs.append(ts.cost)
        lidar_unsafe.append(ts.info["final_obs"][:, 7:31].max(-1) > 0.7)
        r_user = jax.vmap(env.task.user_reward, (0, None))(ts.info, env.task.user_goals[2])
        np.testing.assert_allclose(ts.reward, r_user, atol=1e-6)
    env.close()
    np.testing.assert_array_equal(np.array(costs) > 0, np.array(lidar_unsafe))
    assert np.sum(costs) > 0


# --- seeding, auto-reset, goals ---------------------------------------------------------


@pytest.mark.parametrize("task", ["ball-reach", "swimmer-vel"])
def test_same_key_same_trajectory_and_final_obs(envs, task):
    env, key = envs[task], jax.random.PRNGKey(11)
    params = env.default_params(max_steps=4)
    obs_a, run_a = _rollout(env, key, 6, params)
    obs_b, run_b = _rollout(env, key, 6, params)
    np.testing.assert_array_equal(obs_a, obs_b)
    for a, b in zip(run_a, run_b, strict=True):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    obs_c, _ = _rollout(env, jax.random.PRNGKey(12), 0, params)
    assert not np.allclose(obs_a, obs_c)
    # truncation at step 4: obs is the next episode's first, final_obs the last one
    for t, ts in enumerate(run_a, start=1):
        done = t == 4
        np.testing.assert_array_equal(ts.truncated, [done] * N)
        np.testing.assert_array_equal(ts.info["episode_done"], [done] * N)
        np.testing.assert_array_equal(ts.info["episode_length"], [t if t <= 4 else t - 4] * N)
        assert np.array_equal(ts.obs, ts.info["final_obs"]) != done
    returns = sum(ts.reward for ts in run_a[:4])
    np.testing.assert_allclose(run_a[3].info["episode_return"], returns, rtol=1e-5)
    if task == "ball-reach":  # the auto-reset is the native reset under AutoReset's key
        k_reset = jax.vmap(jax.random.split)(jax.random.split(jax.random.fold_in(key, 3), N))
        native = make_native(f"{task}/downstream")
        native_obs, _ = jax.jit(jax.vmap(native.reset, (0, None)))(k_reset[:, 1], params)
        np.testing.assert_allclose(run_a[3].obs, native_obs, atol=1e-6)


def test_goal_switch_at_half_episode(envs):
    env = envs["ball-run"]
    params = env.default_params(max_steps=6).replace(resample_prob=jnp.float32(1.0))
    _, steps = _rollout(env, jax.random.PRNGKey(2), 5, params)
    goals = np.array([ts.info["goal"][:, 0] for ts in steps])  # goal active at each step
    obs_goal = np.array([ts.obs[:, -1] for ts in steps])  # goal shown after each step
    np.testing.assert_array_equal(goals[:3], np.broadcast_to(goals[0], (3, N)))
    np.testing.assert_array_equal(obs_goal[2], goals[3])  # switched after step 3
    assert np.any(goals[3] != goals[0])


# --- bad input --------------------------------------------------------------------------


def test_bad_names_and_actions(envs):
    assert len(bridged_names()) == 12
    for name in ("ball-run/crowd", "real:ball-run", "real:nope/crowd", "real:ball-run/x"):
        with pytest.raises(ValueError, match="valid names"):
            make(name)
    with pytest.raises(ValueError, match="n_envs=0"):
        make("real:ball-run/crowd", n_envs=0)
    fresh = make("real:ball-run/crowd")
    with pytest.raises(ValueError, match="before step"):
        fresh.step(jax.random.PRNGKey(0), np.zeros((1, 2)), fresh.default_params())
    fresh.close()
    env = envs["ball-run"]
    params = env.default_params()
    env.reset(jax.random.PRNGKey(0), params)
    with pytest.raises(ValueError, match=r"needs \(2, 2\)"):
        env.step(jax.random.PRNGKey(0), np.zeros((2, 3)), params)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(jax.random.PRNGKey(0), np.full((2, 2), np.nan), params)
