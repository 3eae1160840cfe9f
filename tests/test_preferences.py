"""Crowd labels, segments, noise, imbalance, value functions and the Thm 4.2 check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scripted import scripted_trajectories

from scpr_jax.data import labels, preferences, segments, theory, value
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make_task


class LineTask:
    """Hand-checkable task: r_user = g * info["x"]; obs = [t, goal feature]."""

    name = "line"
    obs_size = 1
    goal_size = 1
    goal_obs_size = 1
    user_goals = np.array([[1.0], [-1.0]], np.float32)

    def user_reward(self, info, goal):
        return goal[0] * info["x"]


def line_trajs(n_streams=1, terminated_at=(), truncated_at=(4,), cost_at=(6,), n=10):
    """Rows t = 0..n-1 with x_t = t, obs = [t, 9], next_obs = [t + 1, 9]."""
    t = np.arange(n, dtype=np.float32)
    flag = lambda rows: jnp.asarray(np.isin(np.arange(n), rows))  # noqa: E731
    return Trajectories(
        obs=jnp.stack([t, np.full(n, 9.0, np.float32)], -1),
        action=jnp.zeros((n, 1)),
        reward=jnp.zeros(n),
        cost=flag(cost_at).astype(jnp.float32),
        next_obs=jnp.stack([t + 1, np.full(n, 9.0, np.float32)], -1),
        terminated=flag(terminated_at),
        truncated=flag(truncated_at),
        info={"x": jnp.asarray(t)},
        n_streams=n_streams,
    )


@pytest.fixture(scope="module")
def run_data():
    # 8 streams x 500 steps: two 250-step episodes per stream, ~2/3 unsafe steps
    return scripted_trajectories(jax.random.key(0), "ball-run/downstream", 8, 500)


@pytest.fixture(scope="module")
def run_task():
    return make_task("ball-run")


@pytest.fixture(scope="module")
def run_pairs(run_data):
    # the shapes of make_preferences' test below, so jitted labelling compiles once
    return segments.sample_pairs(jax.random.key(2), run_data, 100, 16, 32)


def test_valid_starts_respect_episodes_and_streams():
    trajs = line_trajs(truncated_at=(4,))
    valid = np.asarray(segments.valid_starts(trajs, 3))
    # episode rows 0-4 and 5-9: a segment may end on row 4 but not cross it
    np.testing.assert_array_equal(np.flatnonzero(valid), [0, 1, 2, 5, 6, 7])
    two_streams = line_trajs(n_streams=2, truncated_at=())
    np.testing.assert_array_equal(
        np.flatnonzero(segments.valid_starts(two_streams, 3)), [0, 1, 2, 5, 6, 7]
    )
    with pytest.raises(ValueError, match="segment_len=6"):
        segments.valid_starts(two_streams, 6)


def test_sample_pairs_only_valid_starts(run_data, run_pairs):
    s1, s2 = run_pairs
    valid = np.asarray(segments.valid_starts(run_data, 32))
    assert s1.shape == s2.shape == (100, 16)
    assert valid[np.asarray(s1)].all() and valid[np.asarray(s2)].all()


def test_partial_return_labels_hand_built():
    trajs, task = line_trajs(), LineTask()
    starts1, starts2 = jnp.array([[0, 5, 1]]), jnp.array([[5, 0, 1]])
    y = labels.crowd_labels(trajs, task, jnp.asarray(task.user_goals), 10.0, starts1, starts2, 3)
    # R_{+1}(0) = 0+1+2 = 3, R_{+1}(5) = 5+6+7 - 10 = 8; R_{-1}(0) = -3, R_{-1}(5) = -28
    np.testing.assert_array_equal(y, [[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])  # tie -> 0
    r = labels.user_rewards(trajs, task, jnp.array([1.0]), 10.0)
    scores = labels.segment_scores(trajs, task, r, jnp.array([0, 5]), 3)
    np.testing.assert_array_equal(scores, [3.0, 8.0])


def test_regret_scores_hand_built():
    trajs, task = line_trajs(terminated_at=(7,), truncated_at=()), LineTask()

    def value_fn(user, obs):  # V_z(s) = (z + 1) * t; obs arrives goal-stripped
        assert obs.shape == (1,)
        return (user + 1.0) * obs[0]

    r = labels.user_rewards(trajs, task, jnp.array([1.0]), 10.0)
    scores = labels.segment_scores(trajs, task, r, jnp.array([0, 5]), 3, value_fn, user=1)
    # start 0: 3 + 2 * (3 - 0); start 5 ends terminated on row 7: 8 + 0 - 2 * 5
    np.testing.assert_allclose(scores, [9.0, -2.0])


def test_regret_equals_partial_for_constant_value(run_data, run_task, run_pairs):
    s1, s2 = run_pairs
    goals = jnp.asarray(labels.crowd_goals(run_task, 3))
    partial = labels.crowd_labels(run_data, run_task, goals, 10.0, s1, s2, 32)
    regret = labels.crowd_labels(run_data, run_task, goals, 10.0, s1, s2, 32, lambda z, s: 3.0)
    np.testing.assert_array_equal(partial, regret)


def test_labels_match_numpy_reference(run_data, run_task, run_pairs):
    s1, s2 = (np.asarray(s) for s in run_pairs)
    goals = labels.crowd_goals(run_task, 3)
    y = np.asarray(labels.crowd_labels(run_data, run_task, jnp.asarray(goals), 10.0, s1, s2, 32))
    vx = np.asarray(run_data.info["vel"][:, 0], np.float64)
    spec = np.asarray(run_data.info["agent_specific"], np.float64)
    cost = np.asarray(run_data.cost, np.float64)
    for z, g in enumerate(goals[:, 0]):
        r = np.exp(-0.5 * np.abs(vx - g)) + 0.1 * spec - 10.0 * cost
        returns = [r[s[..., None] + np.arange(32)].sum(-1) for s in (s1, s2)]
        gap = returns[0] - returns[1]
        clear = np.abs(gap) > 1e-3  # float32 vs float64 may differ on near-ties only
        np.testing.assert_array_equal(y[z][clear], (gap > 0)[clear])


def test_vmap_over_users_equals_loop(run_data, run_task, run_pairs):
    s1, s2 = run_pairs
    goals = jnp.asarray(labels.crowd_goals(run_task, 3))

    def value_fn(user, obs):  # user-dependent, so a wrong user index would show
        return (user - 1.0) * 50.0 * obs[1]

    for fn in (None, value_fn):
        crowd = labels.crowd_labels(run_data, run_task, goals, 10.0, s1, s2, 32, fn)
        loop = [
            labels.user_labels(run_data, run_task, g, 10.0, s1, s2, 32, fn, z)
            for z, g in enumerate(goals)
        ]
        np.testing.assert_array_equal(crowd, np.stack(loop))


def test_flip_noise_rate():
    y = jnp.zeros((4, 250, 100))
    for ratio in (0.0, 0.1, 0.3):
        flipped = float(labels.flip_labels(jax.random.key(5), y, ratio).mean())
        sigma = np.sqrt(ratio * (1 - ratio) / y.size)
        assert abs(flipped - ratio) <= 4 * sigma


def test_minority_ratio_annotation():
    mask = np.asarray(labels.annotation_mask(jax.random.key(6), 4, 1000, 0.1))
    np.testing.assert_array_equal(mask.sum(1), [1000, 100, 100, 100])
    assert not np.array_equal(mask[1], mask[2])  # independent draws per user
    with pytest.raises(ValueError, match="minority_ratio"):
        labels.annotation_mask(jax.random.key(6), 4, 1000, 0.0)


def test_crowd_goals_rules(run_task):
    np.testing.assert_array_equal(labels.crowd_goals(run_task, 2), run_task.user_goals)
    np.testing.assert_allclose(labels.crowd_goals(run_task, 3)[:, 0], [0.1, 2.55, 5.0])
    reach = make_task("ball-reach")
    np.testing.assert_array_equal(labels.crowd_goals(reach, 2), reach.user_goals[:2])
    with pytest.raises(ValueError, match="n_users=5"):
        labels.crowd_goals(reach, 5)

    class Directions:
        name, goal_size = "ant-vel", 2
        user_goals = np.eye(2, dtype=np.float32).repeat(2, 0)

    np.testing.assert_allclose(
        labels.crowd_goals(Directions(), 3),
        [[1, 0], [-0.5, 0.75**0.5], [-0.5, -(0.75**0.5)]],
        atol=1e-6,
    )


def test_label_config_presets_and_validation():
    paper = preferences.label_config("paper", "ball-reach")
    assert (paper.n_sets, paper.n_pairs, paper.segment_len, paper.n_users) == (5000, 32, 16, 4)
    small = preferences.label_config("small", "ball-run")
    assert (small.n_sets, small.n_pairs, small.segment_len, small.K) == (500, 16, 32, 10.0)
    with pytest.raises(ValueError, match="preset"):
        preferences.label_config("huge", "ball-run")
    with small.unlocked():
        small.flip_ratio = 1.5
    with pytest.raises(ValueError, match="flip_ratio=1.5"):
        preferences.validate_label_config(small)


def test_make_preferences_and_summary(run_data, run_task):
    cfg = preferences.label_config("small", "ball-run")
    with cfg.unlocked():
        cfg.n_sets, cfg.minority_ratio, cfg.n_users = 100, 0.2, 3
    prefs = preferences.make_preferences(jax.random.key(7), run_data, run_task, cfg)
    stats = preferences.summary(prefs)
    assert stats["sets_per_user"] == [100, 20, 20]
    assert (stats["n_train_sets"], stats["n_eval_sets"]) == (90, 10)
    assert 0.0 < stats["disagreement"] < 1.0 and all(0 < b < 1 for b in stats["label_balance"])
    z, s = preferences.annotated_sets(prefs, "eval")
    assert np.isin(s, np.asarray(prefs.eval_sets)).all() and (z == 0).sum() == 10
    sigma1, sigma2 = preferences.set_segments(prefs, run_data.obs, run_task, 3)
    assert sigma1.shape == sigma2.shape == (16, 32, run_task.obs_size)
    np.testing.assert_array_equal(sigma1[2, 5], run_data.obs[prefs.starts1[3, 2] + 5, :6])
    feats = preferences.set_features(prefs, run_data.obs[:, :6], 1, 3)
    assert feats.shape == (16, 32, 13)
    np.testing.assert_array_equal(feats[:, 0, -1], prefs.y[1, 3])
    with pytest.raises(ValueError, match="value_fn"):
        with cfg.unlocked():
            cfg.kind = "regret"
        preferences.make_preferences(jax.random.key(7), run_data, run_task, cfg)


def test_summary_hand_built():
    prefs = preferences.PreferenceSets(
        starts1=jnp.zeros((2, 2), jnp.int32),
        starts2=jnp.zeros((2, 2), jnp.int32),
        y=jnp.array([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]]),
        annotated=jnp.array([[True, True], [True, False]]),
        user_goals=jnp.zeros((2, 1)),
        train_sets=jnp.array([0]),
        eval_sets=jnp.array([1]),
        segment_len=3,
    )
    stats = preferences.summary(prefs)
    assert stats["sets_per_user"] == [2, 1]
    assert stats["label_balance"] == [0.75, 1.0]
    assert stats["disagreement"] == 0.5  # only set 0 is shared; pair 1 differs


def test_value_probe_constant_reward():
    # r = 1 forever, gamma = 0.5: V = 1 / (1 - 0.5) = 2 everywhere
    n = 512
    obs = jax.random.normal(jax.random.key(8), (n, 3))
    data = value.ValueData(
        obs,
        jnp.zeros((n, 1)),
        obs[::-1],
        jnp.zeros(n, bool),
        jnp.ones((2, n)),
        jnp.array([1.0, 3.0]),
    )
    cfg = value.value_config("small")
    with cfg.unlocked():
        cfg.hidden, cfg.lr, cfg.batch_size = (32, 32), 1e-3, 64
        cfg.steps = cfg.chunk = 3000  # one compiled chunk
    state, _ = value.fit_user_values(jax.random.key(9), data, cfg, value.ValueHparams(0.5))
    assert state.step.tolist() == [3000, 3000]
    v = jax.vmap(value.user_value_fn(state, data, cfg), in_axes=(None, 0))
    for z, target in ((0, 2.0), (1, 6.0)):  # user 1's reward scale 3 restores its units
        v_z = v(z, obs[:64])
        assert abs(float(v_z.mean()) - target) < 0.03 * target
        np.testing.assert_allclose(v_z, target, rtol=0.1)


def test_theorem_4_2_consistency(run_data, run_task):
    s1, s2 = segments.sample_pairs(jax.random.key(10), run_data, 100, 16, 16)
    goals = run_task.user_goals
    # Ball-Run: r_user in [-0.071, 1], so the bound is at most 2 * 16 * 1
    safe = theory.consistency_check(run_data, (s1, s2), run_task, goals, 100.0, 16)
    assert 2 * 16 * 0.5 < safe.bound <= 2 * 16 * 1.0 and safe.k_exceeds_bound
    assert safe.n_safe_unsafe > 50 and safe.consistent_fraction == 1.0
    unsafe = theory.consistency_check(run_data, (s1, s2), run_task, goals, 0.0, 16)
    assert not unsafe.k_exceeds_bound and unsafe.n_safe_unsafe == safe.n_safe_unsafe
    assert unsafe.consistent_fraction < 1.0
