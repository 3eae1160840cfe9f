"""IQL losses by hand, jit/vmap behaviour, a bandit probe, and the Safe-VPL skill pipeline."""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scpr_jax.agents import iql
from scpr_jax.agents import losses as rl_losses
from scpr_jax.data.types import Trajectories
from scpr_jax.envs import make_task
from scpr_jax.skills import vae, vpl
from scpr_jax.train import LoopState, make_chunk, set_leaves, train_loop
from scpr_jax.train.sweep import sweepable

LOG_2PI_HALF = 0.5 * np.log(2 * np.pi)


def small_config(**overrides):
    cfg = iql.iql_config("small").unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk, cfg.lr = (32, 32), 64, 40, 20, 1e-3
    for name, value in overrides.items():
        cfg[name] = value
    return cfg.lock()


def close(a, b):
    """Equality up to float reassociation (vmapped vs unbatched matmuls)."""
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def linear(kernel, bias):
    """Variables of a hidden=() MLP: x @ kernel + bias."""
    return {"params": {"Dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}}


def linear_state(q1, q2, v, policy, **hparams):
    """IQL state with linear networks (hidden=()); q1, q2, v, policy are (kernel, bias)."""
    state = iql.iql_init(jax.random.PRNGKey(0), 1, 1, small_config(hidden=(), **hparams))
    q = {"params": {f"MLP_{j}": linear(*qj)["params"] for j, qj in enumerate((q1, q2))}}
    pi = state.policy.replace(mean=linear(*policy), log_std=jnp.zeros(1))
    return state.replace(q=q, q_target=q, v=linear(*v), policy=pi)


# s = [1, -1], a = [0.5, 1]: Q1 = s + 2a = [2, 1], Q2 = s + a + 0.5 = [2, 0.5],
# V(s) = -s + 2.5 = [1.5, 3.5], so u = min Q - V = [0.5, -3]; V(s' = [2, 0]) = [0.5, 2.5].
HAND_NETS = dict(
    q1=([[1.0], [2.0]], [0.0]),
    q2=([[1.0], [1.0]], [0.5]),
    v=([[-1.0]], [2.5]),
    policy=([[0.0]], [0.0]),  # mean tanh(0) = 0, std 1
)
HAND_BATCH = {
    "obs": jnp.array([[1.0], [-1.0]]),
    "action": jnp.array([[0.5], [1.0]]),
    "reward": jnp.array([1.0, 0.0]),
    "next_obs": jnp.array([[2.0], [0.0]]),
    "terminated": jnp.array([False, True]),
}


def test_losses_hand_computed():
    state = linear_state(**HAND_NETS, gamma=0.9, expectile=0.75, temperature=10.0)
    # y = r + 0.9 * (1 - d) * V(s') = [1 + 0.45, 0]
    y = iql.q_target(HAND_BATCH["reward"], jnp.array([0.0, 1.0]), jnp.array([0.5, 2.5]), 0.9)
    np.testing.assert_allclose(y, [1.45, 0.0], rtol=1e-6)
    # sum_j (Q_j - y)^2: [2 * 0.55^2, 1^2 + 0.5^2] = [0.605, 1.25]
    loss, m = iql.critic_loss(state.q, state, HAND_BATCH)
    np.testing.assert_allclose(loss, (0.605 + 1.25) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["q_target"], 1.45 / 2, rtol=1e-6)
    # expectile 0.75: [0.75 * 0.5^2, 0.25 * 3^2]
    loss, _ = iql.value_loss(state.v, state, HAND_BATCH)
    np.testing.assert_allclose(loss, (0.1875 + 2.25) / 2, rtol=1e-6)
    # log pi(a|s) = -a^2 / 2 - log(2 pi) / 2; weights [min(e^5, 100), e^-30]
    log_pi = np.array([-0.125, -0.5]) - LOG_2PI_HALF
    loss, m = iql.policy_loss(state.policy, state, HAND_BATCH)
    np.testing.assert_allclose(loss, -(100 * log_pi[0] + np.exp(-30) * log_pi[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["weight"], (100 + np.exp(-30)) / 2, rtol=1e-6)
    state = state.replace(temperature=jnp.float32(1.0))  # unclipped: [e^0.5, e^-3]
    loss, _ = iql.policy_loss(state.policy, state, HAND_BATCH)
    expected = -(np.exp(0.5) * log_pi[0] + np.exp(-3) * log_pi[1]) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


@pytest.mark.parametrize("expectile", [0.5, 0.75, 0.9])
def test_value_loss_matches_numpy(expectile):
    rng = np.random.default_rng(0)
    obs_size, act_size, n = 3, 2, 64
    params = dict(
        q1=(rng.normal(size=(5, 1)), rng.normal(size=1)),
        q2=(rng.normal(size=(5, 1)), rng.normal(size=1)),
        v=(rng.normal(size=(3, 1)), rng.normal(size=1)),
    )
    params = jax.tree.map(lambda x: x.astype(np.float32), params)
    state = iql.iql_init(jax.random.PRNGKey(0), obs_size, act_size, small_config(hidden=()))
    q = {"params": {f"MLP_{j}": linear(*params[k])["params"] for j, k in enumerate(("q1", "q2"))}}
    state = state.replace(q_target=q, v=linear(*params["v"]), expectile=jnp.float32(expectile))
    s = rng.normal(size=(n, obs_size)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(n, act_size)).astype(np.float32)
    sa = np.concatenate([s, a], -1)
    q_min = np.minimum(*[(sa @ params[k][0] + params[k][1])[:, 0] for k in ("q1", "q2")])
    u = q_min - (s @ params["v"][0] + params["v"][1])[:, 0]
    reference = np.mean(np.abs(expectile - (u < 0)) * u**2)
    loss, _ = iql.value_loss(state.v, state, {"obs": s, "action": a})
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(rl_losses.expectile_loss(u, expectile)), rtol=1e-5)


def bandit(key, n, obs_size=2):
    """One-step bandit: s ~ N(0, I), a ~ U[-1, 1], r = -(a - 0.5 tanh s_0)^2, terminal."""
    k_s, k_a = jax.random.split(key)
    s = jax.random.normal(k_s, (n, obs_size))
    a = jax.random.uniform(k_a, (n, 1), minval=-1.0, maxval=1.0)
    r = -jnp.square(a[:, 0] - 0.5 * jnp.tanh(s[:, 0]))
    return dict(obs=s, action=a, reward=r, next_obs=s, terminated=jnp.ones(n, bool))


def row_sampler(batch_size):
    def sample(key, data):
        i = jax.random.randint(key, (batch_size,), 0, data["obs"].shape[0])
        return jax.tree.map(lambda x: x[i], data)

    return sample


@pytest.mark.usefixtures("quick_xla")
def test_update_compiles_once_and_matches_eager():
    data = bandit(jax.random.PRNGKey(0), 256)
    state = iql.iql_init(jax.random.PRNGKey(1), 2, 1, small_config())
    traces = []

    def counted(state, batch, key):
        traces.append(1)
        return iql.iql_update(state, batch, key)

    update = jax.jit(counted)
    sample = row_sampler(64)
    s_jit = state
    for k in range(3):
        s_jit, m_jit = update(s_jit, sample(jax.random.PRNGKey(k), data), jax.random.PRNGKey(k))
    assert len(traces) == 1 and int(s_jit.step) == 3
    batch = sample(jax.random.PRNGKey(0), data)
    s_jit, m_jit = update(state, batch, jax.random.PRNGKey(0))
    with jax.disable_jit():
        s_eager, m_eager = iql.iql_update(state, batch, jax.random.PRNGKey(0))
    for name in m_jit:
        np.testing.assert_allclose(m_jit[name], m_eager[name], rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("quick_xla")
def test_hyperparameters_are_a_vmap_axis():
    data = bandit(jax.random.PRNGKey(0), 256)
    state = iql.iql_init(jax.random.PRNGKey(1), 2, 1, small_config())
    states = jax.tree.map(lambda x: jnp.stack([x, x]), state)
    states = states.replace(expectile=jnp.array([0.5, 0.9]))
    new, metrics = jax.vmap(iql.iql_update, (0, None, None))(
        states, row_sampler(64)(jax.random.PRNGKey(2), data), jax.random.PRNGKey(3)
    )
    assert metrics["v_loss"].shape == (2,)
    assert not np.allclose(metrics["v_loss"][0], metrics["v_loss"][1])
    np.testing.assert_allclose(new.gamma, [0.99, 0.99])


@pytest.mark.usefixtures("quick_xla")
def test_lr_is_a_vmap_axis_equal_to_separate_runs():
    """Two members with lr set by `set_leaves` equal two runs initialised with those lrs."""
    data, lrs = bandit(jax.random.PRNGKey(0), 256), (1e-3, 3e-3)
    cfg = small_config(steps=4, chunk=4)  # the policy's cosine decay ends within the run
    states = jax.tree.map(
        lambda x: jnp.stack([x, x]), iql.iql_init(jax.random.PRNGKey(1), 2, 1, cfg)
    )
    assert "lr" in sweepable(states, 2)
    states = set_leaves(states, {"lr": lrs})
    alone = [
        iql.iql_init(jax.random.PRNGKey(1), 2, 1, small_config(steps=4, chunk=4, lr=lr))
        for lr in lrs
    ]
    vmapped, update = jax.jit(jax.vmap(iql.iql_update, (0, None, None))), jax.jit(iql.iql_update)
    for k in range(5):
        batch = row_sampler(64)(jax.random.PRNGKey(k), data)
        states, _ = vmapped(states, batch, jax.random.PRNGKey(k))
        alone = [update(s, batch, jax.random.PRNGKey(k))[0] for s in alone]
    for i, one in enumerate(alone):
        jax.tree.map(close, jax.tree.map(lambda x, i=i: x[i], states), one)
    kernel = states.policy.mean["params"]["Dense_0"]["kernel"]
    assert not np.allclose(kernel[0], kernel[1])  # the lr matters


def test_cosine_factor_is_optax_cosine_decay():
    t = jnp.arange(7)
    c = np.cos(np.pi / 4)  # T = 4: 0.5 (1 + cos(pi t / 4)), then 0 from t = T on
    np.testing.assert_allclose(
        iql.cosine_factor(t, 4), [1, (1 + c) / 2, 0.5, (1 - c) / 2, 0, 0, 0], atol=1e-7
    )
    np.testing.assert_array_equal(iql.cosine_factor(t, 4), optax.cosine_decay_schedule(1.0, 4)(t))


def policy_leaves(state):
    """{kernel, bias, log_std} of a linear (hidden=()) IQL policy."""
    dense = state.policy.mean["params"]["Dense_0"]
    return {"kernel": dense["kernel"], "bias": dense["bias"], "log_std": state.policy.log_std}


def test_policy_step_is_lr_times_cosine_factor():
    """Fresh Adam moments at count 2 of T = 4: the step is lr * 0.5 * k(3) * sign(g), k(t) =
    (1 - b1) / (1 - b1^t) / sqrt((1 - b2) / (1 - b2^t)); at count T the policy stays put."""
    state = linear_state(**HAND_NETS, steps=4, chunk=4, lr=1e-3, temperature=10.0)
    # weights [100, e^-30] (clipped), mu(s) = 0, z = a = [0.5, 1]: dL/dbias = -mean(w a) < 0,
    # dL/dkernel = -mean(w a s) = -25 < 0, dL/dlog_std = -mean(w (z^2 - 1)) = 37.5 > 0
    sign_g = {"kernel": -1.0, "bias": -1.0, "log_std": 1.0}
    k3 = (0.1 / (1 - 0.9**3)) / np.sqrt(0.001 / (1 - 0.999**3))
    for count, factor in ((2, 0.5), (4, 0.0)):
        opt = state.policy_opt._replace(count=jnp.asarray(count, jnp.int32))
        before = state.replace(policy_opt=opt)
        np.testing.assert_allclose(iql.policy_lr(before), 1e-3 * factor, atol=1e-10)
        after, _ = iql.iql_update(before, HAND_BATCH, jax.random.PRNGKey(0))
        old, new = policy_leaves(before), policy_leaves(after)
        for name, sign in sign_g.items():
            step = -1e-3 * factor * k3 * sign
            np.testing.assert_allclose(new[name] - old[name], step, rtol=1e-5, err_msg=name)
        assert int(after.policy_opt.count) == count + 1


def test_probe_bandit_learns_optimal_action():
    data = bandit(jax.random.PRNGKey(0), 20_000)
    cfg = small_config(hidden=(64, 64), batch_size=256, steps=4000, chunk=1000)
    loop = LoopState(
        algo=iql.iql_init(jax.random.PRNGKey(1), 2, 1, cfg),
        key=jax.random.PRNGKey(2),
        step=jnp.asarray(0),
    )
    chunk = jax.jit(make_chunk(iql.iql_update, row_sampler(cfg.batch_size), cfg.chunk))
    for _ in range(cfg.steps // cfg.chunk):
        loop, _ = chunk(loop, data)
    held_out = jnp.clip(jax.random.normal(jax.random.PRNGKey(9), (500, 2)), -1.5, 1.5)
    action = iql.policy_action(loop.algo.policy, held_out)[:, 0]
    error = np.abs(action - 0.5 * np.tanh(held_out[:, 0]))
    assert error.max() < 0.1 and error.mean() < 0.05, (error.max(), error.mean())


@pytest.mark.usefixtures("quick_xla")
def test_seed_vmap_matches_separate_runs(tmp_path):
    data = bandit(jax.random.PRNGKey(0), 512)
    cfg = small_config()
    chunk = make_chunk(iql.iql_update, row_sampler(cfg.batch_size), cfg.chunk)

    def init(seed):
        k_init, k_loop = jax.random.split(jax.random.PRNGKey(seed))
        return LoopState(iql.iql_init(k_init, 2, 1, cfg), k_loop, jnp.asarray(0, jnp.int32))

    seeds = (3, 4, 5, 6)
    both = jax.tree.map(lambda *a: jnp.stack(a), *[init(s) for s in seeds])
    both = train_loop("iql", both, chunk, data, cfg.steps, cfg.chunk, tmp_path / "v", n_seeds=4)
    for i, seed in enumerate(seeds):
        one = train_loop("iql", init(seed), chunk, data, cfg.steps, cfg.chunk, tmp_path / f"{i}")
        seed_i = jax.tree.map(lambda a, i=i: a[i], both.algo)
        jax.tree.map(close, seed_i, one.algo)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="unknown preset"):
        iql.iql_config("huge")
    assert iql.iql_config("paper", "ball-reach").expectile == 0.9
    assert iql.iql_config("paper").hidden == (1024,) * 4
    for name, bad in (("expectile", 1.0), ("batch_size", 0), ("tau", 1.5), ("hidden", (0,))):
        with pytest.raises(ValueError, match=f"config.{name}="):
            iql.validate_iql_config(small_config(**{name: bad}))


# ----- Safe-VPL skill data -----

TASK = make_task("ball-run")  # obs_size 6, goal features 1, action_size 2
VAE_CONFIG = vae.VAEConfig(latent_dim=2, hidden=8, decoder_hidden=(16, 16))
PRIOR_MEAN, PRIOR_STD = np.array([1.0, -2.0]), np.array([0.5, 2.0])


def synthetic_trajs(n=2000):
    """Rows whose s_0 is the row index, s' = s + 1, goal feature 99 (must be stripped)."""
    rng = np.random.default_rng(0)
    s = rng.normal(size=(n, TASK.obs_size)).astype(np.float32)
    s[:, 0] = np.arange(n)
    obs = np.concatenate([s, np.full((n, 1), 99.0, np.float32)], -1)
    return Trajectories(
        obs=jnp.asarray(obs),
        action=jnp.asarray(rng.uniform(-1, 1, (n, TASK.action_size)).astype(np.float32)),
        reward=jnp.zeros(n),
        cost=jnp.zeros(n),
        next_obs=jnp.asarray(obs + np.eye(obs.shape[1], dtype=np.float32)[1]),
        terminated=jnp.asarray(np.arange(n) % 7 == 0),
        truncated=jnp.zeros(n, bool),
        info={},
    )


@functools.cache
def vae_params():
    P, L, obs, act = 2, 3, TASK.obs_size, TASK.action_size
    example = {"feats": jnp.zeros((P, L, 2 * obs + 1)), "obs1": jnp.zeros((P, L, obs))}
    example["act1"] = jnp.zeros((P, L, act))
    init = jax.jit(lambda key: vae.vae_init(key, example, VAE_CONFIG).params)
    params = init(jax.random.PRNGKey(0))
    return params.replace(
        prior_mean=jnp.asarray(PRIOR_MEAN, jnp.float32),
        prior_logvar=jnp.asarray(np.log(PRIOR_STD**2), jnp.float32),
    )


@pytest.mark.usefixtures("quick_xla")
def test_skill_sampler_relabels_with_prior_latents():
    trajs, params = synthetic_trajs(), vae_params()
    data = vpl.skill_data(jax.random.PRNGKey(1), trajs, TASK, params, VAE_CONFIG)
    n = 8192
    batch = jax.jit(vpl.skill_sampler(n, VAE_CONFIG))(jax.random.PRNGKey(2), data)
    o = TASK.obs_size
    assert batch["obs"].shape == batch["next_obs"].shape == (n, o + 2)
    assert batch["action"].shape == (n, TASK.action_size)
    assert batch["reward"].shape == batch["terminated"].shape == (n,)
    row = np.asarray(batch["obs"][:, 0]).astype(int)
    np.testing.assert_array_equal(batch["obs"][:, :o], np.asarray(trajs.obs)[row, :o])
    np.testing.assert_array_equal(batch["action"], np.asarray(trajs.action)[row])
    np.testing.assert_array_equal(batch["terminated"], np.asarray(trajs.terminated)[row])
    np.testing.assert_array_equal(batch["next_obs"][:, :o], np.asarray(trajs.next_obs)[row, :o])
    z = np.asarray(batch["obs"][:, o:])
    np.testing.assert_array_equal(batch["next_obs"][:, o:], z)  # same z' for s and s'
    assert len(np.unique(z, axis=0)) == n  # a fresh draw for every transition
    assert np.all(np.abs(z.mean(0) - PRIOR_MEAN) < 4 * PRIOR_STD / np.sqrt(n)), z.mean(0)
    np.testing.assert_allclose(z.std(0), PRIOR_STD, rtol=0.05)
    r_phi = vae.RewardDecoder(VAE_CONFIG.decoder_hidden).apply(
        params.decoder, batch["obs"][:, :o], z, batch["action"]
    )
    expected = (r_phi - data.r_mean) / data.r_std
    np.testing.assert_allclose(batch["reward"], expected, rtol=1e-5, atol=1e-5)
    # normalised rewards of fresh samples: ~N(0, 1) statistics
    assert abs(float(batch["reward"].mean())) < 0.1 and abs(float(batch["reward"].std()) - 1) < 0.1


@pytest.mark.usefixtures("quick_xla")
def test_reward_normaliser_from_10k_prior_samples():
    trajs, params = synthetic_trajs(), vae_params()
    key = jax.random.PRNGKey(1)
    data = vpl.skill_data(key, trajs, TASK, params, VAE_CONFIG)
    assert float(data.r_std) > 0
    # with the normaliser's own key and size the sampler redraws exactly those 10k samples
    batch = vpl.skill_sampler(vpl.NORM_SAMPLES, VAE_CONFIG)(key, data)
    np.testing.assert_allclose(batch["reward"].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(batch["reward"].std(), 1.0, atol=1e-4)


def test_skill_data_rejects_bad_inputs():
    trajs, params = synthetic_trajs(10), vae_params()
    with pytest.raises(ValueError, match="have 6 features; task 'ball-run' needs 7"):
        bad = trajs.replace(obs=trajs.obs[:, :-1])  # goal already stripped
        vpl.skill_data(jax.random.PRNGKey(0), bad, TASK, params, VAE_CONFIG)
    with pytest.raises(ValueError, match="latent_dim=3"):
        config = vae.VAEConfig(latent_dim=3, hidden=8, decoder_hidden=(16, 16))
        vpl.skill_data(jax.random.PRNGKey(0), trajs, TASK, params, config)


@pytest.mark.usefixtures("quick_xla")
def test_train_skills_resumes_and_vmaps_seeds(tmp_path):
    trajs, params, cfg = synthetic_trajs(500), vae_params(), small_config(hidden=(16,))
    args = (jax.random.PRNGKey(0), trajs, TASK, params, VAE_CONFIG, cfg)
    seen = []
    full = vpl.train_skills(*args, tmp_path / "a", progress=lambda s, t, m: seen.append(s))
    assert seen == [20, 40] and int(full.step) == 40
    action = iql.policy_action(full.policy, jnp.zeros((5, TASK.obs_size + 2)))
    assert action.shape == (5, TASK.action_size) and np.all(np.abs(action) <= 1)
    # lose the last checkpoint ("killed" after update 20): rerunning resumes and matches
    shutil.rmtree(tmp_path / "a" / "ckpt" / "40")
    resumed = vpl.train_skills(*args, tmp_path / "a")
    jax.tree.map(np.testing.assert_array_equal, resumed, full)
    seeds = vpl.train_skills(*args, tmp_path / "b", seeds=(0, 1, 2, 3))
    assert seeds.step.shape == (4,)
    jax.tree.map(lambda a, b: close(a[0], b), seeds, full)  # member 0 is seed 0
    for s in (1, 2, 3):
        alone = vpl.train_skills(*args, tmp_path / f"c{s}", seeds=s)
        jax.tree.map(lambda a, b, s=s: close(a[s], b), seeds, alone)
    assert not np.allclose(
        seeds.v["params"]["Dense_0"]["kernel"][1], full.v["params"]["Dense_0"]["kernel"]
    )
