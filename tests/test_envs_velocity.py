"""The three Brax velocity tasks: Ant-vel, HalfCheetah-vel and Swimmer-vel.

Each task compiles exactly two functions (the shared probe of conftest.py, single and
vmapped); every other check reads the probe's outputs or calls cheap task methods.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.envs import make
from scpr_jax.envs.velocity import AntVel, HalfCheetahVel, SwimmerVel, VelocityState

VELOCITY_TASKS = ("ant-vel", "halfcheetah-vel", "swimmer-vel")
# per task: (obs_size, action_size, dt, ctrl_coef, healthy_reward)
SPEC = {
    "ant-vel": (27, 8, 0.05, 0.5, 1.0),
    "halfcheetah-vel": (17, 6, 0.05, 0.1, 0.0),
    "swimmer-vel": (8, 2, 0.04, 1e-4, 0.0),
}

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module", params=VELOCITY_TASKS)
def probe(request, probe_runner, fast_compile):
    # float32 rigid-body dynamics batched vs unbatched: tiny reassociation differences
    return probe_runner(request.param, tol=1e-4)


# --- 1, 2, 4, 5, 6, 7: the shared probe (see conftest.py) ----------------------------------


def test_jit_vmap_shapes_and_finite(probe):
    obs_size, action_size, *_ = SPEC[probe.task.name]
    assert (probe.task.obs_size, probe.env.action_size) == (obs_size, action_size)
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


def test_info_is_planar_root_velocity_and_control_cost(probe):
    """info: v = (root xy after - before) / dt, c ||clip(a)||^2, healthy * alive."""
    task, out = probe.task, probe.out
    _, _, dt, ctrl_coef, healthy = SPEC[task.name]
    assert task.dt == pytest.approx(dt)
    info = out["ts"].info
    q_before = probe.prev.inner.phys.brax.pipeline_state.q[1:]
    q_after = out["raw_state1"].inner.phys.brax.pipeline_state.q[1:]
    velocity = (q_after[..., :2] - q_before[..., :2]) / dt
    if task.name == "halfcheetah-vel":  # no y coordinate: q[1] is the root height
        velocity[..., 1] = 0.0
    np.testing.assert_allclose(info["velocity"][1:], velocity, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(out["raw_state1"].inner.phys.velocity, info["velocity"])
    ctrl = ctrl_coef * np.sum(np.clip(probe.actions, -1, 1) ** 2, -1)
    np.testing.assert_allclose(info["ctrl_cost"][1:], ctrl[1:], rtol=1e-5)
    alive = 1.0 - out["raw_state1"].inner.phys.brax.done[1:]
    np.testing.assert_allclose(info["healthy_reward"][1:], healthy * alive)
    # r_new = g . v + healthy - ctrl, recomputed in NumPy from the stored transition
    expected = np.sum(info["goal"] * info["velocity"], -1) + info["healthy_reward"] - ctrl
    np.testing.assert_allclose(out["ts"].reward[1:], expected[1:], rtol=1e-4, atol=1e-4)


# --- 3: speed cost on constructed states ---------------------------------------------------


COST_CASES = {
    "ant-vel": [
        ((2.62, 0.0), 0), ((2.63, 0.0), 1), ((0.0, -2.63), 1),
        ((1.9, 1.9), 1),  # ||v|| = 2.687: unsafe although each component is below 2.6222
        ((1.8, 1.8), 0),  # ||v|| = 2.546
    ],
    "halfcheetah-vel": [
        ((3.2, 0.0), 0), ((3.22, 0.0), 1),
        ((-3.22, 0.0), 1),  # running backward too fast counts as well
        ((-3.2, 0.0), 0), ((3.0, 5.0), 0),  # only |vx| counts
    ],
    "swimmer-vel": [
        ((1.49, 0.0), 0), ((1.51, 0.0), 1), ((0.0, -1.51), 1),
        ((1.2, 0.95), 1),  # ||v|| = 1.531
        ((1.0, 1.1), 0),  # ||v|| = 1.487
    ],
}  # fmt: skip


def test_cost_fires_exactly_above_the_speed_limit(probe):
    brax_state = jax.tree.map(lambda x: x[0, 0], probe.out["state0"].inner.phys.brax)
    for velocity, cost in COST_CASES[probe.task.name]:
        phys = VelocityState(brax=brax_state, velocity=jnp.asarray(velocity, jnp.float32))
        assert probe.task.cost(phys) == cost, (velocity, cost)


# --- 4: user rewards on constructed transitions --------------------------------------------


def _info(velocity, healthy, ctrl):
    return {
        "velocity": jnp.asarray(velocity, jnp.float32),
        "healthy_reward": jnp.float32(healthy),
        "ctrl_cost": jnp.float32(ctrl),
    }


def test_rewards_on_constructed_transitions(probe):
    task = probe.task
    down = task.downstream_goals
    if task.name == "ant-vel":
        info = _info((1.2, -0.4), 1.0, 0.3)  # g . v + 1 - 0.3
        cases = [(task.user_goals[0], 1.9), (task.user_goals[1], 0.3)]
        cases += [(task.user_goals[2], -0.5), (task.user_goals[3], 1.1), (down[5], 1.2656854)]
    elif task.name == "halfcheetah-vel":
        info = _info((2.5, 0.0), 0.0, 0.12)  # g . v - 0.12
        cases = [(task.user_goals[0], 2.38), (task.user_goals[1], -2.62)]
    else:
        info = _info((0.3, 0.4), 0.0, 2e-4)  # g . v - 2e-4
        cases = [(task.user_goals[0], 0.2998), (task.user_goals[3], -0.4002)]
        cases += [(down[10], 0.3998), (down[5], 0.49477)]  # 45 deg: 0.7 / sqrt 2 - 2e-4
    for goal, r in cases:
        assert task.reward(info, jnp.asarray(goal)) == pytest.approx(r, abs=1e-4)
        assert task.user_reward(info, jnp.asarray(goal)) == pytest.approx(r, abs=1e-4)
    assert task.crowd_offset == 0.0


# --- 5: goal sets --------------------------------------------------------------------------


def test_goal_sets_match_the_paper():
    four = [[1, 0], [0, 1], [-1, 0], [0, -1]]
    angles = 2 * np.pi * np.arange(40) / 40
    forty = np.stack([np.cos(angles), np.sin(angles)], -1)
    for cls in (AntVel, SwimmerVel):
        np.testing.assert_allclose(cls.user_goals, four, atol=1e-7)
        np.testing.assert_allclose(cls.downstream_goals, forty, atol=1e-6)
    np.testing.assert_allclose(HalfCheetahVel.user_goals, [[1, 0], [-1, 0]])
    np.testing.assert_allclose(HalfCheetahVel.downstream_goals, [[1, 0], [-1, 0]])
    speed_limits = [cls.speed_limit for cls in (AntVel, HalfCheetahVel, SwimmerVel)]
    assert speed_limits == [2.6222, 3.2096, 1.5]


# --- 7: registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, backend, valid",
    [
        ("swimmer-vel/crowd", "generalized", "mjx"),
        ("ant-vel/downstream", "nope", "generalized, spring, positional"),
        ("halfcheetah-vel/crowd", "mjx", "generalized, spring, positional"),
    ],
)
def test_invalid_backend_raises(name, backend, valid):
    with pytest.raises(ValueError, match=f"backend='{backend}'.*valid: {valid}"):
        make(name, backend=backend)
