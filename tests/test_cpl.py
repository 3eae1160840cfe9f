"""Safe-CPL policy decoder: hand-computed loss, frozen VAE, single trace, a two-user probe."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.skills import cpl, vae


def cpl_batch_loss(params, batch: dict, key, vae_params, alpha, lam, vae_config):
    """Mean CPL loss of a batch of sets, one z' per set from the frozen posterior.  -> []."""
    z = cpl.sample_latents(batch, key, vae_params, vae_config)
    return cpl.latent_batch_loss(params, batch, z, alpha, lam)


# compiling dominates these tests (tiny models, few steps): skip most XLA optimisation passes
pytestmark = pytest.mark.usefixtures("fast_compile")

OBS, ACT, Z, H = 2, 1, 1, 8
VAE_CONFIG = vae.VAEConfig(latent_dim=Z, hidden=H, embed_activation=False, decoder_hidden=(8,))


def small_config(**overrides):
    cfg = cpl.cpl_config("small", "ball-circle")
    cfg.hidden = (32, 32, 32)
    for name, value in overrides.items():
        cfg[name] = value
    return cfg


def example_set(p=4, length=8):
    return {
        "feats": jnp.zeros((p, length, 2 * OBS + 1)),
        "obs1": jnp.zeros((p, length, OBS)),
        "act1": jnp.zeros((p, length, ACT)),
    }


@pytest.fixture(scope="module")
def label_vae(fast_compile):
    """A hand-set encoder whose posterior is N(mean_pairs(2y - 1), e^-20): +1 when every pair
    prefers sigma1, -1 when every pair prefers sigma2 (linear embedding, uniform attention)."""
    params = random_vae(jax.random.PRNGKey(0))
    enc = jax.tree.map(jnp.zeros_like, params.encoder)["params"]
    enc["Dense_0"]["kernel"] = enc["Dense_0"]["kernel"].at[-1, 0].set(2.0)  # reads y
    enc["Dense_0"]["bias"] = enc["Dense_0"]["bias"].at[0].set(-1.0)
    for block in ("time_attention", "pair_attention"):  # q = k = 0: uniform mean of values
        enc[block]["value"]["kernel"] = jnp.eye(H)[:, None, :]
        enc[block]["out"]["kernel"] = jnp.eye(H)[None, :, :]
    enc["mean"]["kernel"] = enc["mean"]["kernel"].at[0].set(1.0)
    enc["logvar"]["bias"] = jnp.full((Z,), -30.0)  # clamped to -20
    return params.replace(encoder={"params": enc})


@jax.jit
def random_vae(key):
    return vae.vae_init(key, example_set(), VAE_CONFIG).params


@pytest.fixture(scope="module")
def state0(fast_compile):
    """A fresh decoder (hidden 32x3, alpha 0.2, lambda 0.5, lr 3e-4)."""
    return jax.jit(lambda k: cpl.cpl_init(k, OBS, Z, ACT, small_config()))(jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def probe(fast_compile):
    """128 probe sets (64 per user) and their users."""
    return probe_sets(jax.random.PRNGKey(0), 64)


def constant_policy(state, mu):
    """Decoder with zero weights and last bias atanh(mu): mu_theta(s, z) = mu everywhere."""
    net = jax.tree.map(jnp.zeros_like, state.params.net)
    last = net["params"]["MLP_0"]["Dense_3"]
    last["bias"] = jnp.full_like(last["bias"], np.arctanh(mu))
    return state.replace(params=state.params.replace(net=net))


@jax.jit
def hand_loss(params, batch, vae_params):
    return cpl_batch_loss(params, batch, jax.random.PRNGKey(1), vae_params, 0.2, 0.5, VAE_CONFIG)


def test_loss_matches_hand_computation(state0, label_vae):
    state = constant_policy(state0, 0.5)
    # one set, two pairs of 2-step segments; mu = 0.5 so lp_t = -(a_t - 0.5)^2
    act1 = jnp.array([[0.5, 1.0], [0.0, 0.5]])[None, :, :, None]
    act2 = jnp.array([[-0.5, 0.5], [0.5, 0.5]])[None, :, :, None]
    batch = {
        "feats": jnp.zeros((1, 2, 2, 2 * OBS + 1)),
        "obs1": jnp.ones((1, 2, 2, OBS)),
        "obs2": -jnp.ones((1, 2, 2, OBS)),
        "act1": act1,
        "act2": act2,
        "y": jnp.array([[1.0, 0.0]]),
    }
    # pair 0: lp1 = -0.25, lp2 = -1; sigma1 preferred: logit = 0.2 * (-0.25 + 0.5 * 1) = 0.05
    # pair 1: lp1 = -0.25, lp2 = 0; sigma2 preferred: logit = 0.2 * (0 + 0.5 * 0.25) = 0.025
    expected = np.mean(np.log1p(np.exp(-np.array([0.05, 0.025]))))
    loss, metrics = hand_loss(state.params, batch, label_vae)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # adv1 > adv2 on pair 0 (y = 1: right), adv1 < adv2 on pair 1 (y = 0: right)
    np.testing.assert_allclose(metrics["accuracy"], 1.0)
    np.testing.assert_allclose(metrics["mse_preferred"], np.mean([0.0, 0.25, 0.0, 0.0]))


@partial(jax.jit, static_argnums=(1, 2, 3))
def probe_sets(key, n_per_user, p=4, length=8):
    """User 0 sets: sigma1 preferred with actions 0.5; user 1: sigma2 preferred with -0.5.
    The other segment's actions are the preferred ones plus symmetric noise, so the CPL
    optimum is exactly the user's policy; observations carry no user information."""
    k_obs, k_noise = jax.random.split(key)
    n = 2 * n_per_user
    user = jnp.repeat(jnp.arange(2), n_per_user)
    obs = jax.random.uniform(k_obs, (n, p, 2, length, OBS), minval=-1, maxval=1)
    a_star = jnp.where(user == 0, 0.5, -0.5)[:, None, None, None]
    noise = jax.random.uniform(k_noise, (n, p, length, ACT), minval=-0.5, maxval=0.5)
    pref = jnp.broadcast_to(a_star, noise.shape)
    y = jnp.broadcast_to((user == 0).astype(jnp.float32)[:, None], (n, p))
    first = (user == 0)[:, None, None, None]
    act1, act2 = jnp.where(first, pref, pref + noise), jnp.where(first, pref + noise, pref)
    label = jnp.broadcast_to(y[:, :, None, None], (n, p, length, 1))
    feats = jnp.concatenate([obs[:, :, 0], obs[:, :, 1], label], -1)
    batch = dict(feats=feats, obs1=obs[:, :, 0], obs2=obs[:, :, 1], act1=act1, act2=act2, y=y)
    return batch, user


def _take(batch, idx):
    return jax.tree.map(lambda a: a[idx], batch)


def test_frozen_encoder_reads_the_user(probe, label_vae):
    batch, user = probe
    posterior = jax.jit(jax.vmap(vae.posterior, (None, 0, None)), static_argnums=2)
    mean, logvar = posterior(label_vae, batch["feats"], VAE_CONFIG)
    np.testing.assert_allclose(mean[:, 0], np.where(user == 0, 1.0, -1.0), atol=1e-5)
    np.testing.assert_allclose(logvar, -20.0)


def test_gradients_do_not_reach_the_vae(probe, state0):
    batch = _take(probe[0], np.array([0, 1, 64, 65]))
    vae_params = random_vae(jax.random.PRNGKey(5))
    before = jax.tree.map(np.array, vae_params)
    key = jax.random.PRNGKey(3)

    @jax.jit
    def vae_grads(vae_params):
        def loss(vp):
            return cpl_batch_loss(
                state0.params, batch, key, vp, state0.alpha, state0.lam, VAE_CONFIG
            )[0]

        return jax.grad(loss)(vae_params)

    for g in jax.tree.leaves(vae_grads(vae_params)):
        np.testing.assert_array_equal(g, 0.0)
    new, _ = jax.jit(cpl.cpl_update, static_argnums=4)(state0, batch, key, vae_params, VAE_CONFIG)
    # the state holds only policy parameters and their optimiser state, and they moved
    assert jax.tree.structure(new) == jax.tree.structure(state0)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), new.params.net, state0.params.net)
    assert all(jax.tree.leaves(moved))
    jax.tree.map(np.testing.assert_array_equal, vae_params, before)


def test_precomputed_posteriors_give_the_same_loss(probe, state0):
    batch = _take(probe[0], np.array([0, 1, 64, 65]))
    vae_params = random_vae(jax.random.PRNGKey(5))
    mean, logvar = jax.jit(cpl.set_posteriors, static_argnums=2)(
        vae_params, batch["feats"], VAE_CONFIG
    )
    cached = {k: v for k, v in batch.items() if k != "feats"} | {"z_mean": mean, "z_logvar": logvar}
    loss = jax.jit(cpl_batch_loss, static_argnums=6)
    key = jax.random.PRNGKey(6)
    a = loss(state0.params, batch, key, vae_params, state0.alpha, state0.lam, VAE_CONFIG)
    b = loss(state0.params, cached, key, None, state0.alpha, state0.lam, VAE_CONFIG)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)


def test_update_compiles_once(probe, state0, label_vae):
    batch = _take(probe[0], np.array([0, 1, 64, 65]))
    traces = []

    @jax.jit
    def update(state, batch, key, vae_params):
        traces.append(1)
        return cpl.cpl_update(state, batch, key, vae_params, VAE_CONFIG)

    s1, _ = update(state0, batch, jax.random.PRNGKey(2), label_vae)
    s2, metrics = update(
        s1, _take(probe[0], np.array([2, 3, 66, 67])), jax.random.PRNGKey(3), label_vae
    )
    assert len(traces) == 1
    assert int(s2.step) == 2 and set(metrics) == {"loss", "accuracy", "mse_preferred"}


def test_probe_decoder_learns_each_users_policy(probe, state0, label_vae):
    train, _ = probe
    n = train["y"].shape[0]

    def body(state, key):
        k_idx, k_upd = jax.random.split(key)
        idx = jax.random.randint(k_idx, (32,), 0, n)
        return cpl.cpl_update(state, _take(train, idx), k_upd, label_vae, VAE_CONFIG)

    run = jax.jit(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, 400)))
    # lr is a state leaf: the second, finer phase reuses the compiled program
    state, first = run(state0.replace(lr=jnp.float32(3e-3)), jax.random.PRNGKey(2))
    state, last = run(state.replace(lr=jnp.float32(3e-4)), jax.random.PRNGKey(3))
    assert float(last["loss"].mean()) < float(first["loss"][:10].mean())
    s = jax.random.uniform(jax.random.PRNGKey(4), (256, OBS), minval=-1, maxval=1)
    for z, a_star in [(1.0, 0.5), (-1.0, -0.5)]:
        mu = cpl.cpl_action(state.params, s, jnp.full((Z,), z))
        assert mu.shape == (256, ACT)
        np.testing.assert_allclose(np.mean(mu), a_star, atol=0.03)
        assert float(np.max(np.abs(mu - a_star))) < 0.12
    accuracy = jax.jit(cpl.cpl_accuracy, static_argnums=3)(
        state.params, train, label_vae, VAE_CONFIG
    )
    assert accuracy.shape == (n,) and float(accuracy.mean()) > 0.95


def test_config_presets_and_validation():
    assert cpl.cpl_config("paper", "ball-run").lam == 1.0
    assert cpl.cpl_config("paper", "ball-reach").lam == 1.0
    paper = cpl.cpl_config("paper", "halfcheetah-vel")
    assert (paper.lam, paper.alpha, paper.lr, paper.batch_size) == (0.5, 0.2, 3e-4, 96)
    assert paper.steps == 500_000 and tuple(paper.hidden) == (256, 256, 256)
    with pytest.raises(ValueError, match="preset"):
        cpl.cpl_config("huge", "ball-run")
    with pytest.raises(ValueError, match="task"):
        cpl.cpl_config("small", "cartpole")
    cfg = small_config(alpha=-1.0)
    with pytest.raises(ValueError, match="alpha=-1.0"):
        cpl.cpl_init(jax.random.PRNGKey(0), OBS, Z, ACT, cfg)
