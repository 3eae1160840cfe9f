"""The methods registry, skill artifacts, and the TD3+BC-Lagrangian baseline added through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import artifacts, methods
from scpr_jax import skill as sk
from scpr_jax.config import pipeline_config, validate
from scpr_jax.data.types import Trajectories
from scpr_jax.methods import td3bc_lag as lag
from scpr_jax.skills import cpl
from scpr_jax.skills.vae import VAEParams
from scpr_jax.stages import pipeline, sweep
from scpr_jax.train import Members
from scpr_jax.train.sweep import sweepable

OBS, GOAL, ACT, Z = 3, 1, 2, 2
PRIOR = VAEParams(None, None, jnp.array([0.5, -1.0]), jnp.log(jnp.array([0.25, 4.0])))


def test_every_method_has_its_sections_stages_and_sweeps():
    cfg = pipeline_config()
    for m in methods.REGISTRY.values():
        assert m.section in cfg.td3bc and (m.section in cfg.td3) == m.online
        assert cfg.td3bc[m.section].method == m.name
        assert cfg.td3bc[m.section].skill_kind == m.skill_kind
        assert set(m.needs) <= set(pipeline.ORDER)
        assert f"down-{m.name}" in sweep.stage_names()
        assert (f"online-{m.name}" in sweep.stage_names()) == m.online
        if m.omega:  # its reward weight is a real setting and part of its down- stage
            section, name = m.omega.split(".")
            assert name in cfg[section]
            assert f"down-{m.name}" in pipeline._stages_of(m.omega)
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: safe-vpl, safe-cpl"):
        methods.get("nope")
    with pytest.raises(ValueError, match="unknown online method 'rc'"):
        methods.get("rc", online=True)


def test_a_method_registered_from_outside_joins_config_stages_and_sweeps(monkeypatch):
    toy = methods.Method(name="toy-method", needs=("label", "reward_rc"))
    monkeypatch.setitem(methods.REGISTRY, toy.name, toy)
    cfg = pipeline_config().unlock()
    cfg.methods = ("oracle", "toy-method")
    validate(cfg)
    assert cfg.td3bc.toy_method.skill_kind == "identity"
    assert pipeline.stages_for(cfg) == ["collect", "label", "reward_rc"]
    assert "down-toy-method" in sweep.stage_names()
    assert sweep.section_of("down-toy-method") == "td3bc.toy_method"
    assert pipeline._stages_of("td3bc.toy_method.lr") == ("down-toy-method",)


def test_skill_artifact_round_trip_is_exact(tmp_path):
    params = jax.jit(lambda k: cpl.cpl_init(k, OBS, Z, ACT, cpl_cfg()).params)(jax.random.key(2))
    skill = cpl.cpl_skill(params, PRIOR, OBS)
    artifacts.save_skill(tmp_path, skill)
    loaded = artifacts.load_skill(tmp_path)
    assert (loaded.kind, loaded.obs_size, loaded.hidden) == ("cpl", OBS, skill.hidden)
    assert (loaded.n_actions, loaded.activation) == (ACT, "leaky_relu")
    for a, b in zip(jax.tree.leaves(skill), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    obs = jax.random.normal(jax.random.key(3), (5, OBS + GOAL))
    u = jax.random.uniform(jax.random.key(4), (5, Z), minval=-3, maxval=3)
    np.testing.assert_array_equal(sk.execute(loaded, obs, u), sk.execute(skill, obs, u))
    z = PRIOR.prior_mean + jnp.array([0.5, 2.0]) * u  # the decoder's own action, bit for bit
    np.testing.assert_array_equal(
        sk.execute(skill, obs, u), cpl.cpl_action(params, obs[:, :OBS], z)
    )


def cpl_cfg():
    cfg = cpl.cpl_config("small", "ball-run").unlock()
    cfg.hidden = (8,)
    return cfg.lock()


def test_damaged_missing_or_foreign_artifacts_are_refused(tmp_path):
    skill = sk.identity_skill(OBS, ACT)
    artifacts.save_skill(tmp_path, skill)
    with pytest.raises(artifacts.ArtifactError, match="holds a 'skill', not a 'reward model'"):
        artifacts.load(tmp_path, "skill", "reward model")
    data = bytearray((tmp_path / "skill.msgpack").read_bytes())
    data[-1] ^= 1
    (tmp_path / "skill.msgpack").write_bytes(bytes(data))
    with pytest.raises(artifacts.ArtifactError, match="skill.msgpack is damaged"):
        artifacts.load_skill(tmp_path)
    with pytest.raises(artifacts.ArtifactError, match="nothing.json does not exist"):
        artifacts.load_skill(tmp_path, "nothing")


def test_lagrange_multiplier_rises_above_the_limit_and_falls_below():
    # kappa = 10 (1 - 0.9^2) / (0.1 * 2) = 9.5
    np.testing.assert_allclose(lag.cost_threshold(10.0, 0.9, 2), 9.5, rtol=1e-6)
    kappa, lr = 9.5, 0.1
    np.testing.assert_allclose(lag.lagrange_step(1.0, lr, jnp.array([12.0, 14.0]), kappa), 1.35)
    np.testing.assert_allclose(lag.lagrange_step(1.0, lr, jnp.array([5.0, 5.0]), kappa), 0.55)
    assert float(lag.lagrange_step(0.2, lr, jnp.array([0.0]), kappa)) == 0.0  # projected to >= 0


def lag_config(**overrides):
    cfg = methods.td3bc_config("small", "ball-run", "td3bc-lag").unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk = (16,), 64, 200, 100
    for name, value in overrides.items():
        cfg[name] = value
    return cfg.lock()


def lag_trajs(cost_rate):
    """Random transitions; cost 1 on a ``cost_rate`` fraction of rows."""
    k_s, k_a, k_n, k_c = jax.random.split(jax.random.key(0), 4)
    n = 512
    return Trajectories(
        obs=jax.random.normal(k_s, (n, OBS + GOAL)),
        action=jax.random.uniform(k_a, (n, ACT), minval=-1.0, maxval=1.0),
        reward=jnp.ones(n),
        cost=(jax.random.uniform(k_c, (n,)) < cost_rate).astype(jnp.float32),
        next_obs=jax.random.normal(k_n, (n, OBS + GOAL)),
        terminated=jnp.zeros(n, bool),
        truncated=jnp.zeros(n, bool),
        info={},
    )


@pytest.mark.usefixtures("quick_xla")
def test_lagrangian_learner_moves_mu_with_the_cost_and_sweeps_the_limit(tmp_path):
    """Always-unsafe data: Q_c grows past a tiny budget, so mu rises; a huge budget drives it to
    0. The cost limit is a state leaf: one vmapped program over two limits."""
    skill = sk.identity_skill(OBS, ACT)
    cfg = lag_config(lambda_lr=0.5, gamma=0.5, episode_len=10)
    data = lag.lag_data(lag_trajs(1.0), jnp.ones(512), skill)
    members = Members((0, 0), {"cost_limit": (0.0, 1000.0)})
    state = lag.train(jax.random.key(1), data, cfg, tmp_path, seeds=members)
    assert "cost_limit" in sweepable(state, 2)
    np.testing.assert_array_equal(state.cost_limit, [0.0, 1000.0])
    mu = np.asarray(state.lagrange)
    assert mu[0] > float(cfg.lambda_init) + 1.0 and mu[1] == 0.0, mu
    assert methods.get("td3bc-lag").learner.policy(state) is state.td3
    with pytest.raises(ValueError, match="td3bc config.cost_limit=-1.0 must be >= 0"):
        lag.validate(lag_config(cost_limit=-1.0))
