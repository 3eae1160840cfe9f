"""Preference VAE: permutation invariance, jit/vmap, and a 2-user probe crowd it must learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.skills import vae

OBS, ACT, P, L = 2, 1, 8, 6
CONFIG = vae.VAEConfig(latent_dim=2, hidden=32, decoder_hidden=(64, 64), total_steps=1000, lr=1e-3)


def probe_sets(key, n_sets_per_user):
    """Two users wanting speeds 0.5 and 4.5 (r = -|v - g|) and sharing a safety rule (-10 per
    step with s_1 > 0.5). Each segment holds a roughly constant speed s_0 ~ U(0, 5) and is unsafe
    with probability 0.3, like Ball-Run's segments."""
    k_v, k_u, k_noise, k_act = jax.random.split(key, 4)
    n = 2 * n_sets_per_user
    speed = jax.random.uniform(k_v, (n, P, 2, 1), minval=0.0, maxval=5.0)
    unsafe = jax.random.bernoulli(k_u, 0.3, (n, P, 2, 1)).astype(jnp.float32)
    noise = 0.1 * jax.random.normal(k_noise, (n, P, 2, L, OBS))
    obs = jnp.stack([jnp.repeat(speed, L, -1), jnp.repeat(unsafe, L, -1)], -1) + noise
    act = jax.random.uniform(k_act, (n, P, 2, L, ACT), minval=-1, maxval=1)
    user = jnp.repeat(jnp.arange(2), n_sets_per_user)
    goal = jnp.where(user == 0, 0.5, 4.5)[:, None, None, None]
    ret = (-jnp.abs(obs[..., 0] - goal) - 10.0 * (obs[..., 1] > 0.5)).sum(-1)  # [n, P, 2]
    y = (ret[..., 0] > ret[..., 1]).astype(jnp.float32)
    feats = jnp.concatenate(
        [obs[:, :, 0], obs[:, :, 1], jnp.broadcast_to(y[:, :, None, None], (n, P, L, 1))], -1
    )
    batch = {
        "feats": feats,
        "obs1": obs[:, :, 0],
        "obs2": obs[:, :, 1],
        "act1": act[:, :, 0],
        "act2": act[:, :, 1],
        "y": y,
    }
    return batch, user


def _one(batch, i):
    return jax.tree.map(lambda a: a[i], batch)


def test_posterior_is_permutation_invariant():
    batch, _ = probe_sets(jax.random.PRNGKey(0), 1)
    state = vae.vae_init(jax.random.PRNGKey(1), _one(batch, 0), CONFIG)
    s = _one(batch, 0)
    perm = jnp.array([3, 1, 7, 0, 2, 6, 5, 4])
    m1, v1 = vae.posterior(state.params, s["feats"], CONFIG)
    m2, v2 = vae.posterior(state.params, s["feats"][perm], CONFIG)
    np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)


def test_update_jit_matches_eager_and_compiles_once():
    batch, _ = probe_sets(jax.random.PRNGKey(0), 4)
    state = vae.vae_init(jax.random.PRNGKey(1), _one(batch, 0), CONFIG)
    traces = []

    def update(state, batch, key):
        traces.append(1)
        return vae.vae_update(state, batch, key, CONFIG)

    jitted = jax.jit(update)
    s_jit, m_jit = jitted(state, batch, jax.random.PRNGKey(2))
    jitted(s_jit, batch, jax.random.PRNGKey(3))
    assert len(traces) == 1
    with jax.disable_jit():
        s_eager, m_eager = vae.vae_update(state, batch, jax.random.PRNGKey(2), CONFIG)
    for name in m_jit:
        np.testing.assert_allclose(m_jit[name], m_eager[name], rtol=1e-5, atol=1e-6)
    # Adam's first step moves each weight by ~lr * sign(grad): compare within that scale
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=2 * CONFIG.lr),
        s_jit.params,
        s_eager.params,
    )


@pytest.mark.slow
def test_probe_crowd_is_learned():
    train, _ = probe_sets(jax.random.PRNGKey(0), 300)
    test, user = probe_sets(jax.random.PRNGKey(1), 50)
    state = vae.vae_init(jax.random.PRNGKey(2), _one(train, 0), CONFIG)
    n = train["y"].shape[0]

    def body(state, key):
        k_idx, k_upd = jax.random.split(key)
        idx = jax.random.randint(k_idx, (32,), 0, n)
        return vae.vae_update(state, jax.tree.map(lambda a: a[idx], train), k_upd, CONFIG)

    state, _ = jax.jit(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, 1000)))(
        state, jax.random.PRNGKey(3)
    )
    accuracy = vae.preference_accuracy(state.params, test, CONFIG)
    assert float(accuracy.mean()) > 0.9
    means, _ = jax.vmap(vae.posterior, (None, 0, None))(state.params, test["feats"], CONFIG)
    # a linear classifier (least squares on [z, 1]) separates the two users' posteriors
    x = np.concatenate([np.asarray(means), np.ones((len(means), 1))], 1)
    w, *_ = np.linalg.lstsq(x, 2.0 * np.asarray(user) - 1.0, rcond=None)
    assert np.mean((x @ w > 0) == (np.asarray(user) == 1)) > 0.95
