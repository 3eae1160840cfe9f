"""Frozen-skill executors, the offline TD3+BC entry point and bandit probes of pi_h."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import methods
from scpr_jax import skill as hl
from scpr_jax.agents import iql, td3
from scpr_jax.data.types import Trajectories
from scpr_jax.downstream import offline
from scpr_jax.skill import skill_obs
from scpr_jax.skills import cpl
from scpr_jax.skills.vae import VAEParams
from scpr_jax.skills.vpl import vpl_skill

OBS, GOAL, ACT, Z = 3, 1, 2, 2  # goal-free obs, goal features, actions, latent sizes
PRIOR = VAEParams(
    encoder=None,
    decoder=None,
    prior_mean=jnp.array([0.5, -1.0]),
    prior_logvar=jnp.log(jnp.array([0.25, 4.0])),  # std [0.5, 2]
)


def iql_policy(key, hidden=(16,)):
    cfg = iql.iql_config("small").unlock()
    cfg.hidden = hidden
    return jax.jit(lambda k: iql.iql_init(k, OBS + Z, ACT, cfg.lock()).policy)(key)


def cpl_params(key, hidden=(16, 16)):
    cfg = cpl.cpl_config("small", "ball-run").unlock()
    cfg.hidden = hidden
    return jax.jit(lambda k: cpl.cpl_init(k, OBS, Z, ACT, cfg.lock()).params)(key)


def close(a, b):
    """Equality up to float reassociation (vmapped vs unbatched matmuls)."""
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def trajectories(key, n, obs_size, action_size, reward_fn=None, terminal=False):
    """Random transitions; reward_fn(action) -> [n] (zeros if None)."""
    k_s, k_a, k_n = jax.random.split(key, 3)
    obs = jax.random.normal(k_s, (n, obs_size))
    action = jax.random.uniform(k_a, (n, action_size), minval=-1.0, maxval=1.0)
    reward = reward_fn(action) if reward_fn else jnp.zeros(n)
    return Trajectories(
        obs=obs,
        action=action,
        reward=reward,
        cost=jnp.zeros(n),
        next_obs=jax.random.normal(k_n, (n, obs_size)),
        terminated=jnp.full(n, terminal) if terminal else jnp.arange(n) % 5 == 0,
        truncated=jnp.zeros(n, bool),
        info={},
    )


def test_latent_mapping_and_bounds():
    skill = cpl.cpl_skill(cpl_params(jax.random.PRNGKey(0)), PRIOR, OBS)
    u = jnp.array([[1.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(hl.latent(skill, u), [[1.0, 3.0], [-1.0, -1.0]], rtol=1e-6)
    assert hl.u_bound(skill) == 3.0 and hl.latent_size(skill) == Z and hl.action_size(skill) == ACT
    identity = hl.identity_skill(OBS, ACT)
    assert hl.u_bound(identity) == 1.0 and hl.action_size(identity) == ACT
    np.testing.assert_array_equal(hl.execute(identity, jnp.ones((2, OBS + GOAL)), u / 3), u / 3)


def test_vpl_and_cpl_skills_execute_their_policy_on_the_goal_free_obs():
    policy = iql_policy(jax.random.PRNGKey(1))
    decoder = cpl_params(jax.random.PRNGKey(2))
    obs = jax.random.normal(jax.random.PRNGKey(3), (4, 5, OBS + GOAL))  # any leading axes
    u = jax.random.uniform(jax.random.PRNGKey(4), (4, 5, Z), minval=-3, maxval=3)
    z = PRIOR.prior_mean + jnp.array([0.5, 2.0]) * u
    expected = {
        "iql": iql.policy_action(policy, skill_obs(obs[..., :OBS], z)),
        "cpl": cpl.cpl_action(decoder, obs[..., :OBS], z),
    }
    for skill in (vpl_skill(policy, PRIOR, OBS), cpl.cpl_skill(decoder, PRIOR, OBS)):
        a = hl.execute(skill, obs, u)
        assert a.shape == (4, 5, ACT)
        close(a, expected[skill.kind])
        other_goal = obs.at[..., OBS:].set(99.0)  # the skill never sees the goal
        np.testing.assert_array_equal(hl.execute(skill, other_goal, u), a)


def test_skill_constructors_reject_mismatches():
    policy = iql_policy(jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="takes 5 input features; obs_size=4 plus latent size 2"):
        vpl_skill(policy, PRIOR, OBS + 1)
    batched = PRIOR.replace(prior_mean=jnp.zeros((3, Z)), prior_logvar=jnp.zeros((3, Z)))
    with pytest.raises(ValueError, match="unbatched"):
        vpl_skill(policy, batched, OBS)
    seeds = jax.tree.map(lambda x: jnp.stack([x, x]), policy)
    with pytest.raises(ValueError, match="select one seed"):
        vpl_skill(seeds, PRIOR, OBS)
    with pytest.raises(ValueError, match="unknown skill kind 'gpt'"):
        hl.execute(hl.Skill(policy, PRIOR.prior_mean, PRIOR.prior_mean, "gpt", OBS), jnp.ones(4), 0)


def test_offline_data_and_method_checks(tmp_path):
    trajs = trajectories(jax.random.PRNGKey(0), 10, OBS + GOAL, ACT)
    skill = hl.identity_skill(OBS, ACT)
    with pytest.raises(ValueError, match=r"reward has shape \(9,\); the trajectories need \(10,\)"):
        offline.offline_data(trajs, jnp.zeros(9), skill)
    with pytest.raises(ValueError, match="'identity' skill executes 3"):
        offline.offline_data(trajs, jnp.zeros(10), hl.identity_skill(OBS, 3))
    data = offline.offline_data(trajs, jnp.arange(10.0), skill)
    assert data.terminated.dtype == jnp.float32
    cfg = methods.td3bc_config("small", "ball-run", "safe-vpl")
    with pytest.raises(ValueError, match="'safe-vpl' acts through a 'iql' skill; got 'identity'"):
        offline.train_offline(jax.random.PRNGKey(0), data, cfg, tmp_path)
    batch, sk = jax.jit(offline.offline_sampler(64))(jax.random.PRNGKey(1), data)
    assert sk is not None and batch["obs"].shape == (64, OBS + GOAL)
    row = np.asarray(batch["reward"]).astype(int)  # reward = row index
    np.testing.assert_array_equal(batch["next_obs"], np.asarray(trajs.next_obs)[row])
    assert len(np.unique(row)) == 10


def tiny_config(method, **overrides):
    cfg = methods.td3bc_config("small", "ball-run", method).unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk = (16,), 32, 40, 20
    for name, value in overrides.items():
        cfg[name] = value
    return cfg.lock()


@pytest.mark.usefixtures("quick_xla")
def test_seed_vmap_matches_separate_runs(tmp_path):
    policy = iql_policy(jax.random.PRNGKey(1))
    trajs = trajectories(jax.random.PRNGKey(0), 256, OBS + GOAL, ACT, lambda a: a[:, 0])
    data = offline.offline_data(trajs, trajs.reward, vpl_skill(policy, PRIOR, OBS))
    cfg, key = tiny_config("safe-vpl"), jax.random.PRNGKey(7)
    seen = []
    both = offline.train_offline(key, data, cfg, tmp_path / "v", seeds=(0, 1, 2, 3),
                                 progress=lambda s, t, m: seen.append(s))  # fmt: skip
    assert seen == [20, 40] and both.step.shape == (4,)
    alone = [offline.train_offline(key, data, cfg, tmp_path / f"{s}", seeds=s) for s in range(4)]
    both, alone = jax.device_get((both, alone))  # NumPy: no eager JAX ops
    seed0, seed1 = alone[:2]
    for i, one in enumerate(alone):
        jax.tree.map(lambda a, b, i=i: close(a[i], b), both, one)
    assert not np.allclose(jax.tree.leaves(seed0.actor)[-1], jax.tree.leaves(seed1.actor)[-1])

    @jax.jit
    def rollout_actions(seed0, both, obs):
        """The rollout policy pi_l(s, z'(pi_h(s))) of one seed, and vmapped over seeds."""
        expected = hl.execute(data.skill, obs, td3.high_level_action(seed0, seed0.actor, obs))
        per_seed = jax.vmap(offline.act, (0, None, None))(both, data.skill, obs)
        return offline.policy_fn(seed0, data.skill)(obs), expected, per_seed

    a, expected, per_seed = rollout_actions(seed0, both, jnp.ones((3, OBS + GOAL)))
    np.testing.assert_array_equal(a, expected)
    close(per_seed[0], a)
    assert a.shape == (3, ACT)


def regularised_optimum(bc_alpha, mean_action):
    """TD3+BC's fixed point on the bandit r = 1 - (a - 0.5)^2 with a_D of mean `mean_action`:
    d/da [-lambda * Q(a) + E(a - a_D)^2] = 0 gives a = (0.5 lambda + E a_D) / (1 + lambda),
    lambda = bc_alpha / |Q(a)| (solved by iteration)."""
    a = 0.5
    for _ in range(100):
        lam = bc_alpha / (1.0 - (a - 0.5) ** 2)
        a = (0.5 * lam + mean_action) / (1.0 + lam)
    return a


def probe(skill, method, bc_alpha, steps=1500, **overrides):
    """One-state bandit, r = 1 - (a - 0.5)^2 for a 1-D action (1 + keeps mean|Q| away from 0,
    where lambda = bc_alpha / mean|Q| blows up); returns (pi's action, TD3+BC's optimum)."""
    trajs = trajectories(
        jax.random.PRNGKey(0), 4096, 2, 1, lambda a: 1.0 - jnp.square(a[:, 0] - 0.5), True
    )
    trajs = trajs.replace(obs=jnp.ones_like(trajs.obs), next_obs=jnp.ones_like(trajs.obs))
    data = offline.offline_data(trajs, trajs.reward, skill)
    cfg = methods.td3bc_config("small", "ball-run", method).unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk, cfg.lr = (64, 64), 128, steps, steps, 1e-3
    cfg.bc_alpha = bc_alpha
    for name, value in overrides.items():
        cfg[name] = value
    chunk = jax.jit(offline.offline_chunk(cfg.lock()))
    loop, _ = chunk(offline.initial_loop(jax.random.PRNGKey(1), data, cfg), data)
    action = float(offline.act(loop.algo, skill, jnp.ones((1, 2)))[0, 0])
    return action, regularised_optimum(bc_alpha, float(jnp.mean(trajs.action)))


def test_probe_identity_skill_finds_the_td3bc_optimum():
    action, optimum = probe(hl.identity_skill(2, 1), "task-only", bc_alpha=2.5)
    assert abs(optimum - 0.36) < 0.01  # the BC term pulls the best action 0.5 towards E a_D ~ 0
    assert abs(action - optimum) < 0.04, (action, optimum)


def test_probe_through_a_fixed_linear_skill_finds_the_best_action():
    # a = tanh(0 * s + z'), z' = 0.2 + 0.5 * u: the best a = 0.5 needs u ~ 0.70
    net = {"params": {"MLP_0": {"Dense_0": {"kernel": jnp.array([[0.0], [0.0], [1.0]]),
                                            "bias": jnp.zeros(1)}}}}  # fmt: skip
    mlp = {"params": net["params"]["MLP_0"]}  # the decoder's MLP, as `cpl.cpl_skill` keeps it
    skill = hl.Skill(mlp, jnp.array([0.2]), jnp.array([0.5]), kind="cpl", obs_size=2,
                     n_actions=1, activation="leaky_relu")  # fmt: skip
    action, optimum = probe(skill, "safe-cpl", bc_alpha=100.0, beta_reg=0.0)
    assert abs(optimum - 0.5) < 0.01 and abs(action - 0.5) < 0.04, (action, optimum)
