"""Gradient accumulation: hand-derived gradients, the automatic count, and the VAE/CPL updates
computed over microbatches equal to one pass over the batch (also vmapped over seeds)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.skills import cpl, vae
from scpr_jax.train import accumulate
from scpr_jax.train.accumulate import (
    CPU_CONCURRENT,
    CPU_ROWS,
    concurrent_count,
    microbatch_count,
    microbatch_grad,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def squared_error(w, batch):
    """mean_i (w x_i - y_i)^2 and the batch's mean x as a metric."""
    x, y = batch
    return jnp.mean(jnp.square(w * x - y)), {"mean_x": jnp.mean(x)}


@pytest.mark.parametrize("n, concurrent", [(1, 0), (2, 1), (2, 2), (4, 0), (4, 1), (4, 2)])
def test_gradient_by_hand(n, concurrent):
    # d/dw mean (w x - y)^2 = mean 2 (w x - y) x; w = 1, y = 0: mean 2 x^2 = 2 * 30 / 4 = 15
    batch = (jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.zeros(4))
    grad, metrics = jax.jit(microbatch_grad, static_argnums=(0, 3, 4))(
        squared_error, jnp.float32(1.0), batch, n, concurrent
    )
    np.testing.assert_allclose(grad, 15.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["mean_x"], 2.5, rtol=1e-6)


def test_uneven_slices_are_refused():
    batch = (jnp.ones(6), jnp.zeros(6))
    with pytest.raises(ValueError, match="microbatches=4 must divide"):
        microbatch_grad(squared_error, jnp.float32(1.0), batch, 4)


def test_count():
    assert microbatch_count(2, 16, 1024) == 2  # explicit
    auto = microbatch_count(0, 16, 1024)
    assert auto == (16 * 1024 // CPU_ROWS if jax.default_backend() == "cpu" else 1)
    if jax.default_backend() == "cpu":
        assert microbatch_count(0, 16, 100) == 1  # the whole batch fits
        assert microbatch_count(0, 6, 3000) == 6  # one set per slice at most
        assert microbatch_count(0, 12, 1500) == 6  # 2 sets (3000 rows) per slice
    with pytest.raises(ValueError, match="microbatches=3 must divide the batch size 16"):
        microbatch_count(3, 16, 1024)
    with pytest.raises(ValueError, match="microbatches=-1 must be >= 0"):
        microbatch_count(-1, 16, 1024)


def test_concurrent_count():
    assert concurrent_count(2, 4) == 2  # explicit
    expected = CPU_CONCURRENT if jax.default_backend() == "cpu" else 1
    assert concurrent_count(0, 4 * CPU_CONCURRENT) == expected
    assert concurrent_count(0, 4 * CPU_CONCURRENT + 1) == 1  # does not divide: one per step
    with pytest.raises(ValueError, match="concurrent=3 must be 0 .* divide microbatches=4"):
        concurrent_count(3, 4)
    with pytest.raises(ValueError, match="concurrent=-1 must be 0"):
        concurrent_count(-1, 4)


OBS, ACT, P, L, B = 3, 2, 4, 5, 8


def sets(key):
    """B random preference sets of P pairs of L-step segments."""
    k = jax.random.split(key, 6)
    obs1, obs2 = (jax.random.normal(k[i], (B, P, L, OBS)) for i in (0, 1))
    act1, act2 = (jax.random.uniform(k[i], (B, P, L, ACT), minval=-1) for i in (2, 3))
    y = jax.random.bernoulli(k[4], 0.5, (B, P)).astype(jnp.float32)
    label = jnp.broadcast_to(y[..., None, None], (B, P, L, 1))
    feats = jnp.concatenate([obs1, obs2, label], -1)
    z_mean, z_logvar = jax.random.normal(k[5], (2, B, 2))
    return dict(feats=feats, obs1=obs1, obs2=obs2, act1=act1, act2=act2, y=y,
                z_mean=z_mean, z_logvar=z_logvar - 2.0)  # fmt: skip


def assert_close(a, b):
    """Leafwise closeness, except attention key biases: their exact gradient is 0 (softmax
    ignores a shift of every logit), so float noise is all they get."""
    leaves = jax.tree_util.tree_leaves_with_path(a)
    for (path, x), y in zip(leaves, jax.tree.leaves(b), strict=True):
        name = jax.tree_util.keystr(path)
        if "'key'" not in name or "'bias'" not in name:
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6, err_msg=name)


def vae_update(n):
    config = vae.VAEConfig(latent_dim=2, hidden=8, decoder_hidden=(16, 16), microbatches=n)
    batch = sets(jax.random.key(0))
    state = vae.vae_init(jax.random.key(1), jax.tree.map(lambda x: x[0], batch), config)
    # a large lr: the step is visible, so a wrong gradient would show
    state = state.replace(lr=jnp.float32(0.1))
    # a fresh function each call: traced anew, so it reads CPU_CONCURRENT now
    return jax.jit(lambda s, b, k: vae.vae_update(s, b, k, config))(state, batch, jax.random.key(2))


def test_vae_microbatches_equal_one_pass():
    (s1, m1), (s4, m4) = vae_update(1), vae_update(4)
    assert_close(m1, m4)
    assert_close(s1.opt_state, s4.opt_state)  # Adam's moments hold the gradient itself
    assert_close(s1.params, s4.params)


def test_concurrent_slices_do_not_change_the_update(monkeypatch):
    # the same slices summed in the same order, only scheduled two per scan step
    monkeypatch.setattr(accumulate, "CPU_CONCURRENT", 1)
    one = vae_update(4)
    monkeypatch.setattr(accumulate, "CPU_CONCURRENT", 2)
    two = vae_update(4)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True):
        np.testing.assert_array_equal(a, b)


def cpl_state(key):
    cfg = cpl.cpl_config("small", "ball-run").unlock()
    cfg.hidden = (16, 16)
    return cpl.cpl_init(key, OBS, 2, ACT, cfg)


def test_cpl_microbatches_equal_one_pass_and_vmap():
    batch = {k: v for k, v in sets(jax.random.key(3)).items() if k != "feats"}
    keys = jax.random.split(jax.random.key(4), 2)

    def update(key, n):
        state = cpl_state(key)
        return cpl.cpl_update(state, batch, jax.random.fold_in(key, 1), None, None, n)

    one = [jax.jit(update, static_argnums=1)(k, 1) for k in keys]
    four = [jax.jit(update, static_argnums=1)(k, 4) for k in keys]
    vmapped = jax.jit(jax.vmap(update, (0, None)), static_argnums=1)(keys, 2)
    for i in range(2):
        assert_close(one[i], four[i])
        assert_close(one[i], jax.tree.map(lambda x, i=i: x[i], vmapped))


def test_configs_validate_microbatches():
    from scpr_jax.skills.train_vae import model_config, vae_train_config

    c = vae_train_config("small").unlock()
    c.microbatches = 3  # batch_size 16
    with pytest.raises(ValueError, match="microbatches=3 must be 0 .* divide batch_size=16"):
        model_config(c)
    c.microbatches = 4
    assert dataclasses.replace(model_config(c)).microbatches == 4
    p = cpl.cpl_config("small", "ball-run").unlock()
    p.microbatches = 5
    with pytest.raises(ValueError, match="microbatches=5 invalid"):
        cpl.validate_cpl_config(p)
