"""Env API, wrappers, registry and the three ball tasks (pure JAX, fast to compile)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.envs import (
    AddGoal,
    AutoReset,
    DropGoal,
    EpisodeStats,
    SafeEnv,
    env_names,
    make,
    make_task,
    strip_goal,
)
from scpr_jax.envs.ball import ACCEL, DRAG, RADIUS, BallState, agent_obs, ball_step
from scpr_jax.envs.ball_reach import LIDAR_RANGE, ReachState, lidar

BALL_TASKS = ("ball-run", "ball-circle", "ball-reach")
A = np.array([0.6, 0.8], np.float32)  # ||A|| = 1, so agent_specific = -0.5

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module", params=BALL_TASKS)
def probe(request, probe_runner, fast_compile):
    return probe_runner(request.param)


# --- 1, 2, 5, 6, 7: the shared probe (see conftest.py) -------------------------------------


def test_jit_vmap_shapes_and_finite(probe):
    probe.check_shapes()


def test_vmap_copy_equals_single_copy(probe):
    probe.check_matches_single()


def test_step_traced_once(probe):
    probe.check_traced_once()


def test_auto_reset_on_truncation(probe):
    probe.check_auto_reset()


def test_step_reward_is_r_new_downstream_and_r_user_crowd(probe):
    probe.check_rewards_and_cost()


def test_goal_draws_and_mid_episode_resample(probe):
    probe.check_goals()


def test_episode_stats_running_sums(probe):
    probe.check_episode_stats()


def _np_reward(name, info, goal):
    """The user-reward formulas of PAPER.md section 4, in NumPy (no crowd offset)."""
    g = goal[..., 0]
    if name == "ball-run":
        return np.exp(-0.5 * np.abs(info["vel"][..., 0] - g)) + 0.1 * info["agent_specific"]
    if name == "ball-circle":
        x, y = info["pos"][..., 0], info["pos"][..., 1]
        v_tan = (info["vel"][..., 0] * y - info["vel"][..., 1] * x) / np.hypot(x, y)
        off_ring = np.abs(np.hypot(x, y) - 7.0)
        return np.exp(-0.5 * np.abs(v_tan - g)) / (1 + off_ring) + 0.01 * info["agent_specific"]
    d_prev = np.linalg.norm(info["prev_pos"] - goal, axis=-1)
    d = np.linalg.norm(info["pos"] - goal, axis=-1)
    return 3 * (d_prev - d) + 0.01 * info["agent_specific"]


def test_rollout_rewards_match_numpy_formula(probe):
    name, ts = probe.task.name, probe.out["ts"]
    agent_specific = -0.5 * np.linalg.norm(np.clip(probe.actions, -1, 1), axis=-1)
    np.testing.assert_allclose(ts.info["agent_specific"][1:], agent_specific[1:], rtol=1e-5)
    expected = _np_reward(name, ts.info, ts.info["goal"])
    np.testing.assert_allclose(ts.reward[1:], expected[1:], rtol=1e-4, atol=1e-5)


# --- 3: cost indicators on constructed states ----------------------------------------------


def _ball(x, y, vx=0.0, vy=0.0):
    return BallState(pos=jnp.array([x, y], jnp.float32), vel=jnp.array([vx, vy], jnp.float32))


@pytest.mark.parametrize(
    "y, cost", [(0.0, 0), (0.49, 0), (0.5, 0), (0.51, 1), (-0.51, 1), (-0.49, 0), (3.0, 1)]
)
def test_ball_run_cost_is_abs_y_above_half(y, cost):
    task = make_task("ball-run")
    assert task.cost(_ball(100.0, y, vx=9.0)) == cost  # x and speed play no part


@pytest.mark.parametrize(
    "x, cost", [(0.0, 0), (5.99, 0), (6.0, 0), (6.01, 1), (-6.01, 1), (-5.99, 0), (9.0, 1)]
)
def test_ball_circle_cost_is_abs_x_above_six(x, cost):
    task = make_task("ball-circle")
    assert task.cost(_ball(x, 9.0, vy=5.0)) == cost  # y and speed play no part


def _reach(agent, near=None):
    """Reach physics with the agent at ``agent`` and puddle 5 at ``near`` (others far)."""
    puddles = np.full((8, 2), 1e3, np.float32)
    if near is not None:
        puddles[5] = near
    return ReachState(ball=_ball(*agent), puddles=jnp.asarray(puddles))


# lidar angle phi is clockwise from +y: a puddle at agent + d (sin phi, cos phi) lands in bin
# floor(phi / 15 deg)
@pytest.mark.parametrize("phi, bin_", [(7.5, 0), (100.0, 6), (200.0, 13), (352.5, 23)])
def test_reach_lidar_bin_and_reading(phi, bin_):
    agent = np.array([1.0, -2.0], np.float32)
    direction = np.array([np.sin(np.deg2rad(phi)), np.cos(np.deg2rad(phi))], np.float32)
    reading = lidar(jnp.asarray(agent), _reach(agent, agent + 1.4 * direction).puddles)
    expected = np.zeros(24, np.float32)
    expected[bin_] = 0.72  # 1 - 1.4 / 5
    np.testing.assert_allclose(reading, expected, atol=1e-5)


def test_reach_lidar_range_and_max_per_bin():
    agent = jnp.zeros(2)
    assert np.all(np.asarray(lidar(agent, _reach((0, 0), (LIDAR_RANGE + 0.1, 0.0)).puddles)) == 0)
    puddles = np.full((8, 2), 1e3, np.float32)
    puddles[0], puddles[1] = (0.0, 2.0), (0.0, 4.0)  # both straight ahead (+y): same bin
    reading = np.asarray(lidar(agent, jnp.asarray(puddles)))
    assert reading.max() == pytest.approx(0.6) and np.count_nonzero(reading) == 1


@pytest.mark.parametrize("d, cost", [(1.0, 1), (1.49, 1), (1.51, 0), (2.0, 0), (6.0, 0)])
def test_ball_reach_cost_is_puddle_closer_than_1_5(d, cost):
    task = make_task("ball-reach")
    agent = np.array([-3.0, 2.0], np.float32)
    direction = np.array([0.6, -0.8], np.float32)
    assert task.cost(_reach(agent, agent + d * direction)) == cost
    assert task.cost(_reach(agent)) == 0


# --- 4: user rewards on constructed transitions ---------------------------------------------


def _info(prev_pos=(0.0, 0.0), pos=(0.0, 0.0), vel=(0.0, 0.0), agent_specific=-0.5):
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return dict(prev_pos=f(prev_pos), pos=f(pos), vel=f(vel), agent_specific=f(agent_specific))


# expected values: exp(-0.5 |vx - g|) + 0.1 * (-0.5)
@pytest.mark.parametrize("g, r", [(0.1, 0.33674102), (5.0, 0.17313016), (4.0, 0.31787944)])
def test_ball_run_reward(g, r):
    task = make_task("ball-run")
    info = _info(vel=(2.0, 0.3))
    assert task.reward(info, jnp.array([g])) == pytest.approx(r, abs=1e-6)
    assert task.user_reward(info, jnp.array([g])) == pytest.approx(r, abs=1e-6)


# expected: exp(-0.5 |v_tan - g|) / (1 + | ||p|| - 7 |) + 0.01 * (-0.5); v_tan clockwise
@pytest.mark.parametrize(
    "pos, vel, g, r",
    [
        ((0.0, 7.0), (3.0, 0.0), 6.0, 0.21813016),  # on the ring, clockwise at 3
        ((0.0, 9.0), (3.0, 0.0), 0.1, 0.07319010),  # 2 off the ring
        ((7.0, 0.0), (0.0, 3.0), 6.0, 0.00610900),  # counter-clockwise: v_tan = -3
    ],
)
def test_ball_circle_reward(pos, vel, g, r):
    task = make_task("ball-circle")
    info = _info(pos=pos, vel=vel)
    assert task.reward(info, jnp.array([g])) == pytest.approx(r, abs=1e-6)
    assert task.user_reward(info, jnp.array([g])) == pytest.approx(r, abs=1e-6)


# expected: 3 (d_prev - d) + 0.01 * (-0.5); crowd users get a further -0.5
@pytest.mark.parametrize(
    "goal, r_new, r_user",
    [((8.0, 8.0), 4.23764069, 3.73764069), ((-8.0, -8.0), -4.24764069, -4.74764069)],
)
def test_ball_reach_reward_and_crowd_offset(goal, r_new, r_user):
    task = make_task("ball-reach")
    info = _info(prev_pos=(0.0, 0.0), pos=(1.0, 1.0))
    assert task.reward(info, jnp.array(goal)) == pytest.approx(r_new, abs=1e-5)
    assert task.user_reward(info, jnp.array(goal)) == pytest.approx(r_user, abs=1e-5)


@pytest.mark.parametrize(
    "name, offset", [("ball-run", 0.0), ("ball-circle", 0.0), ("ball-reach", -0.5)]
)
def test_safe_env_step_reward_by_form(name, offset):
    task = make_task(name)
    key = jax.random.key(3)
    steps = {}
    for form in ("crowd", "downstream"):
        env = SafeEnv(task, form)
        params = env.default_params(user=1)
        _, state = env.reset(jax.random.key(0), params)
        state = state.replace(goal=jnp.asarray(task.user_goals[1]))
        steps[form] = env.step(key, state, jnp.asarray(A), params)[0]
    crowd, down = steps["crowd"], steps["downstream"]
    goal = jnp.asarray(task.user_goals[1])
    assert down.reward == pytest.approx(float(task.reward(down.info, goal)), abs=1e-6)
    assert crowd.reward == pytest.approx(float(task.user_reward(crowd.info, goal)), abs=1e-6)
    assert crowd.reward - down.reward == pytest.approx(offset, abs=1e-6)


# --- 5: goal sets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, users, downstream",
    [
        ("ball-run", [0.1, 5.0], np.arange(50) / 10),
        ("ball-circle", [0.1, 6.0], np.arange(60) / 10),
    ],
)
def test_speed_goal_sets(name, users, downstream):
    task = make_task(name)
    np.testing.assert_allclose(task.user_goals[:, 0], users, atol=1e-6)
    np.testing.assert_allclose(task.downstream_goals[:, 0], downstream, atol=1e-6)
    assert task.downstream_goals.shape == (len(downstream), 1)


def test_reach_goal_sets_are_the_four_corners():
    task = make_task("ball-reach")
    corners = {(-8.0, -8.0), (-8.0, 8.0), (8.0, -8.0), (8.0, 8.0)}
    assert set(map(tuple, task.user_goals.tolist())) == corners
    assert set(map(tuple, task.downstream_goals.tolist())) == corners
    assert len(task.user_goals) == len(task.downstream_goals) == 4


@functools.cache
def _many_resets(name):
    """4096 downstream resets of ``name`` (one vmapped compile, shared by two tests)."""
    env = make(f"{name}/downstream")
    keys = jax.random.split(jax.random.key(1), 4096)
    obs, state = jax.jit(jax.vmap(env.reset, (0, None)))(keys, env.default_params())
    return env.task, np.asarray(obs), jax.device_get(state.inner)


@pytest.mark.parametrize("name", BALL_TASKS)
def test_many_downstream_resets_draw_every_goal_from_the_set(name):
    task, obs, inner = _many_resets(name)
    member = np.isclose(inner.goal[:, None], task.downstream_goals[None]).all(-1)
    assert member.any(-1).all()
    assert np.unique(member.argmax(-1)).size == len(task.downstream_goals)
    if name != "ball-reach":  # Run and Circle append the goal itself
        np.testing.assert_array_equal(obs[:, -1:], inner.goal)


@pytest.mark.parametrize("name", BALL_TASKS)
def test_crowd_goal_is_params_goals_at_user(name):
    env = make(f"{name}/crowd")
    task, reset = env.task, jax.jit(env.reset)
    for user in range(len(task.user_goals)):
        params = env.default_params(user=user)
        np.testing.assert_array_equal(params.goals, task.user_goals)
        _, state = reset(jax.random.key(user), params)
        np.testing.assert_array_equal(state.inner.goal, task.user_goals[user])
    custom = jnp.arange(3 * task.goal_size, dtype=jnp.float32).reshape(3, task.goal_size)
    params = env.default_params().replace(goals=custom, user=jnp.int32(2))
    _, state = jax.jit(env.reset)(jax.random.key(0), params)
    np.testing.assert_array_equal(state.inner.goal, custom[2])


def test_downstream_goal_fixed_without_resample():
    env = make("ball-run/downstream")
    params = env.default_params(max_steps=20)
    assert params.resample_prob == 0.0

    def body(state, key):
        ts, next_state = env.step(key, state, jnp.asarray(A), params)
        return next_state, (state.inner.goal, next_state.inner.goal, ts.truncated)

    _, state = env.reset(jax.random.key(0), params)
    keys = jax.random.split(jax.random.key(1), 19)
    _, (before, after, truncated) = jax.jit(lambda s: jax.lax.scan(body, s, keys))(state)
    assert not np.any(truncated)
    np.testing.assert_array_equal(before, after)


# --- 2: Ball-Reach termination and auto-reset ------------------------------------------------


def test_reach_terminates_at_goal_and_auto_resets():
    env = make("ball-reach/downstream")
    params = env.default_params()

    @jax.jit
    def step_and_references(key, state):
        k_step, k_reset = jax.random.split(key)  # the split AutoReset.step does
        raw_ts, _ = env.env.step(k_step, state, jnp.asarray(A), params)
        return env.step(key, state, jnp.asarray(A), params), raw_ts, env.reset(k_reset, params)

    _, state = env.reset(jax.random.key(0), params)
    for t in (3, 79):  # mid-episode, and on the last step (terminal wins over truncation)
        inner = state.inner.replace(
            phys=state.inner.phys.replace(ball=_ball(7.2, 7.2)),
            goal=jnp.array([8.0, 8.0]),
            t=jnp.int32(t),
        )
        start = state.replace(inner=inner, episode_return=2.0, episode_length=jnp.int32(t))
        (ts, new), raw_ts, (obs_reset, state_reset) = step_and_references(jax.random.key(t), start)
        assert bool(ts.terminated) and not bool(ts.truncated) and bool(ts.info["episode_done"])
        np.testing.assert_allclose(ts.info["final_obs"], raw_ts.obs, atol=1e-6)
        np.testing.assert_allclose(ts.obs, obs_reset, atol=1e-6)
        assert not np.allclose(ts.obs, ts.info["final_obs"])
        assert ts.info["episode_length"] == t + 1
        assert ts.info["episode_return"] == pytest.approx(2.0 + float(ts.reward), abs=1e-5)
        assert new.inner.t == 0 and new.episode_length == 0 and new.episode_return == 0.0
        np.testing.assert_allclose(new.inner.phys.ball.pos, state_reset.inner.phys.ball.pos)


def test_reach_goal_radius():
    near = _reach((7.2, 7.2))  # 1.13 from the corner (8, 8)
    goal = jnp.array([8.0, 8.0])
    assert bool(make_task("ball-reach").terminated(near, goal))  # Bullet's 1.3 goal zone
    assert not bool(make_task("ball-reach", goal_radius=1.0).terminated(near, goal))
    assert not bool(make_task("ball-reach").terminated(near, -goal))


def test_reach_reset_spawns_in_the_room_and_starts_safe():
    task, obs, inner = _many_resets("ball-reach")
    pos, puddles = inner.phys.ball.pos, inner.phys.puddles
    assert np.all(np.abs(pos) <= 7) and np.all(np.abs(puddles) <= 7)
    np.testing.assert_array_equal(inner.phys.ball.vel, 0.0)
    # puddles > 2 from the agent (placement may fall back in ~1e-4 of resets; see
    # test_puddles.py), so the first lidar reads < 0.6 and the start is safe
    assert np.mean(np.linalg.norm(puddles - pos[:, None], axis=-1).min(-1) > 2) > 0.99
    assert np.mean(obs[:, 7:31].max(-1) < 0.6) > 0.99
    np.testing.assert_allclose(obs[:, 31:], (inner.goal - pos) / 20, atol=1e-6)


# --- 6: one trace per environment ----------------------------------------------------------


@pytest.mark.parametrize("name", BALL_TASKS)
def test_jit_step_compiles_once(name):
    env = make(f"{name}/downstream")
    params = env.default_params(max_steps=3)
    traces = []

    def step(key, state, action, params):
        traces.append(1)
        return env.step(key, state, action, params)

    step = jax.jit(step)
    _, state = env.reset(jax.random.key(0), params)
    for i in range(7):  # crosses two auto-resets
        action = jax.random.uniform(jax.random.key(100 + i), (2,), minval=-2, maxval=2)
        _, state = step(jax.random.key(i), state, action, params)
    assert len(traces) == 1


# --- 7: wrappers and registry --------------------------------------------------------------


def test_episode_stats_totals_equal_sums_over_an_episode():
    env = make("ball-run/crowd")
    params = env.default_params(max_steps=30)
    action = jnp.array([1.0, 1.0])  # drifts out of the corridor: some unsafe steps

    def body(state, key):
        ts, state = env.step(key, state, action, params)
        return state, ts

    _, state = env.reset(jax.random.key(0), params)
    keys = jax.random.split(jax.random.key(1), 30)
    _, ts = jax.jit(lambda s: jax.lax.scan(body, s, keys))(state)
    done = np.asarray(ts.info["episode_done"])
    assert done[-1] and not done[:-1].any()
    assert 0 < ts.cost.sum() < 30
    assert ts.info["episode_return"][-1] == pytest.approx(float(ts.reward.sum()), rel=1e-5)
    assert ts.info["episode_cost"][-1] == float(ts.cost.sum())
    assert ts.info["episode_length"][-1] == 30


def test_drop_goal_strips_goal_features():
    base = make("ball-circle/downstream")
    env = DropGoal(base)
    assert env.obs_size == 8 and base.obs_size == 9
    params = env.default_params(max_steps=2)

    @jax.jit
    def both(key, state):
        return env.step(key, state, jnp.asarray(A), params), base.step(key, state, A, params)

    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs, base.reset(jax.random.key(0), params)[0][:8])
    for i in range(2):  # the second step truncates: final_obs differs from obs
        (ts, state), (full_ts, _) = both(jax.random.key(i), state)
        assert ts.obs.shape == ts.info["final_obs"].shape == (8,)
        np.testing.assert_array_equal(ts.obs, full_ts.obs[:8])
        np.testing.assert_array_equal(ts.info["final_obs"], full_ts.info["final_obs"][:8])
    assert bool(ts.truncated) and not np.allclose(ts.obs, ts.info["final_obs"])
    np.testing.assert_array_equal(strip_goal(jnp.ones((4, 5, 9)), env.task), jnp.ones((4, 5, 8)))


def test_add_goal_appends_goal_features():
    task = make_task("ball-reach")
    base = SafeEnv(task, "downstream")
    env = AddGoal(base)
    assert env.obs_size == task.obs_size + 2
    params = env.default_params()
    obs, state = env.reset(jax.random.key(0), params)
    base_obs, _ = base.reset(jax.random.key(0), params)
    expected = (np.asarray(state.goal) - np.asarray(state.phys.ball.pos)) / 20.0
    np.testing.assert_allclose(obs, np.concatenate([base_obs, expected]), atol=1e-6)
    features = task.goal_features(jnp.array([8.0, 8.0]), _reach((1.0, -2.0)))
    np.testing.assert_allclose(features, [0.35, 0.5], atol=1e-6)
    with pytest.raises(TypeError):
        AddGoal(make("ball-reach/downstream"))


@pytest.mark.parametrize("name", ["ball-run", "ball-circle"])
def test_speed_goal_features_are_the_goal(name):
    task = make_task(name)
    np.testing.assert_allclose(task.goal_features(jnp.array([2.3]), _ball(1, 1)), [2.3], rtol=1e-6)


def test_make_builds_the_documented_stack():
    names = env_names()
    assert len(names) == 12 and "ball-run/crowd" in names and "swimmer-vel/downstream" in names
    crowd, down = make("ball-run/crowd"), make("ball-run/downstream")
    assert isinstance(crowd, AutoReset) and isinstance(crowd.env, EpisodeStats)
    assert isinstance(crowd.env.env, SafeEnv) and crowd.form == "crowd"
    assert isinstance(down.env.env, AddGoal) and down.form == "downstream"
    assert down.name == "ball-run/downstream" and down.action_size == 2
    assert (crowd.obs_size, down.obs_size) == (6, 7)


@pytest.mark.parametrize(
    "name", ["nope/crowd", "ball-run/nope", "ball-run", "", "ball-run/crowd/x"]
)
def test_make_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="valid names") as err:
        make(name)
    for valid in env_names():
        assert valid in str(err.value)


def test_bad_task_form_user_and_max_steps_raise():
    with pytest.raises(ValueError, match="'nope'.*ball-run"):
        make_task("nope")
    task = make_task("ball-run")
    with pytest.raises(ValueError, match="'bad'.*crowd, downstream"):
        SafeEnv(task, "bad")
    env = make("ball-run/crowd")
    for user in (2, -1):
        with pytest.raises(ValueError, match=f"user={user}"):
            env.default_params(user=user)
    with pytest.raises(ValueError, match="user=4"):
        make("ball-reach/downstream").default_params(user=4)
    with pytest.raises(ValueError, match="max_steps=1"):
        env.default_params(max_steps=1)


# --- 8: ball physics -----------------------------------------------------------------------


@pytest.mark.parametrize("dt", [4 / 120, 6 / 60, 0.5])
def test_ball_step_is_exact_solution(dt):
    pos0, vel0 = np.array([0.3, -0.4]), np.array([1.0, -2.0])
    action = np.array([0.7, -0.2])
    n = 20000
    pos, vel, h = pos0.copy(), vel0.copy(), dt / n
    for _ in range(n):
        pos, vel = pos + h * vel, vel + h * (ACCEL * action - DRAG * vel)
    out = ball_step(_ball(*pos0, *vel0), jnp.asarray(action, jnp.float32), dt)
    np.testing.assert_allclose(out.vel, vel, atol=1e-3)
    np.testing.assert_allclose(out.pos, pos, atol=1e-3)


def test_ball_terminal_velocity_and_walls():
    assert ACCEL == pytest.approx(3.5 / (1.4 * 0.3)) and DRAG == 0.5
    out = ball_step(_ball(0, 0, 1.0, 5.0), jnp.array([1.0, -0.5]), 60.0)
    np.testing.assert_allclose(out.vel, [16.666667, -8.333333], rtol=1e-5)  # ACCEL a / DRAG
    hit = ball_step(_ball(9.4, 0.0, 5.0, 1.0), jnp.array([1.0, 0.0]), 0.1, wall=10.0)
    assert hit.pos[0] == pytest.approx(10.0 - RADIUS) and hit.vel[0] == 0.0
    assert hit.vel[1] > 0  # the free axis keeps moving


def test_agent_obs_layout():
    # [0.1 x, 0.1 y, 0.2 vx, 0.2 vy, 0.1 wx, 0.1 wy, 0.1 wz] with w = (-vy, vx, 0) / 0.5
    obs = agent_obs(_ball(1.0, 2.0, 3.0, -4.0))
    np.testing.assert_allclose(obs, [0.1, 0.2, 0.6, -0.8, 0.8, 0.6, 0.0], atol=1e-6)
    run_obs = make_task("ball-run").observe(_ball(1.0, 2.0, 3.0, -4.0))
    np.testing.assert_allclose(run_obs, obs[1:], atol=1e-6)  # x dropped
    circle_obs = make_task("ball-circle").observe(_ball(0.0, 9.0))
    assert circle_obs.shape == (8,) and circle_obs[-1] == pytest.approx(0.2)  # (9 - 7) / 10
