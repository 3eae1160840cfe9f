"""Preference and offline-RL losses against hand-derived numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scpr_jax.agents import losses as rl_losses
from scpr_jax.skills import losses


def bt_loss(r1: jax.Array, r2: jax.Array, y: jax.Array) -> jax.Array:
    """BCE of the BT probability sigmoid(bt_logit) against y (the decoders' per-pair loss).
    [L], [L], [] -> []."""
    return optax.sigmoid_binary_cross_entropy(losses.bt_logit(r1, r2), y)


def test_bt_loss_hand_computed():
    r1, r2 = jnp.array([1.0, 0.5]), jnp.array([0.25, 0.25])  # logit = 1.5 - 0.5 = 1.0
    p = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(bt_loss(r1, r2, jnp.array(1.0)), -np.log(p), rtol=1e-6)
    np.testing.assert_allclose(bt_loss(r1, r2, jnp.array(0.0)), -np.log(1 - p), rtol=1e-6)


def test_bt_loss_is_stable_for_huge_logits():
    big = jnp.array([1e4])
    assert np.isfinite(bt_loss(big, -big, jnp.array(0.0)))
    np.testing.assert_allclose(bt_loss(big, -big, jnp.array(1.0)), 0.0, atol=1e-6)


def test_cpl_loss_hand_computed():
    lp1, lp2 = jnp.array([-1.0, -1.0]), jnp.array([-3.0, -1.0])  # sums -2, -4
    alpha, lam = 0.2, 0.5
    # sigma1 preferred: logit = 0.2*-2 - 0.5*0.2*-4 = -0.4 + 0.4 = 0
    np.testing.assert_allclose(losses.cpl_loss(lp1, lp2, 1.0, alpha, lam), np.log(2), rtol=1e-6)
    # sigma2 preferred: logit = 0.2*-4 - 0.5*0.2*-2 = -0.8 + 0.2 = -0.6
    expected = np.log1p(np.exp(0.6))
    np.testing.assert_allclose(losses.cpl_loss(lp1, lp2, 0.0, alpha, lam), expected, rtol=1e-6)


def test_gaussian_kl_hand_computed():
    zero = jnp.zeros(2)
    assert float(losses.gaussian_kl(zero, zero, zero, zero)) == 0.0
    # q = N(1, e^0), p = N(0, 1) per dim: 0.5 * (1 + 1 - 1 - 0) = 0.5, two dims -> 1.0
    np.testing.assert_allclose(losses.gaussian_kl(jnp.ones(2), zero, zero, zero), 1.0)
    # q = N(0, e^2), p = N(0, 1): 0.5 * (e^2 - 1 - 2)
    np.testing.assert_allclose(
        losses.gaussian_kl(zero[:1], jnp.array([2.0]), zero[:1], zero[:1]),
        0.5 * (np.exp(2) - 3),
        rtol=1e-6,
    )


def test_cyclical_cosine_schedule():
    total = 400  # 4 cycles of 100 steps, rise over the first 50
    values = [float(losses.cyclical_cosine(jnp.asarray(s), total)) for s in (0, 25, 50, 99, 100)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 1.0, 0.0], atol=1e-6)


def test_expectile_loss_matches_numpy():
    rng = np.random.default_rng(0)
    u = rng.normal(size=100).astype(np.float32)
    for tau in (0.5, 0.75, 0.9):
        ref = np.abs(tau - (u < 0).astype(np.float32)) * u**2
        np.testing.assert_allclose(rl_losses.expectile_loss(jnp.asarray(u), tau), ref, rtol=1e-6)


def test_awr_weight_clipped():
    w = rl_losses.awr_weight(jnp.array([0.0, 0.1, 1.0]), temperature=10.0)
    np.testing.assert_allclose(w, [1.0, np.e, 100.0], rtol=1e-6)
