"""Preference losses as pure per-example functions (PAPER.md 2, 3.3-3.5); the offline-RL ones
(expectile, advantage weights) are `scpr_jax.agents.losses`."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bt_logit(r1: jax.Array, r2: jax.Array) -> jax.Array:
    """Bradley-Terry logit of sigma1 > sigma2: sum_t r1_t - sum_t r2_t.  r1, r2: [L] -> []."""
    return jnp.sum(r1, axis=-1) - jnp.sum(r2, axis=-1)


def cpl_loss(lp1: jax.Array, lp2: jax.Array, y: jax.Array, alpha: float, lam: float) -> jax.Array:
    """CPL regret loss: -log sigmoid(adv_pref - lam * adv_other), adv = alpha * sum_t lp_t.

    P(s1 > s2) = exp f1 / (exp f1 + exp(lam f2)), f = alpha * sum_t log pi(a_t | s_t, z)
    (gamma = 1). lp1, lp2: [L] per-step log-likelihoods; y: [] 1 if sigma1 preferred.
    """
    adv1, adv2 = alpha * jnp.sum(lp1, -1), alpha * jnp.sum(lp2, -1)
    logit = jnp.where(y > 0.5, adv1 - lam * adv2, adv2 - lam * adv1)
    return -jax.nn.log_sigmoid(logit)


def gaussian_kl(
    mean_q: jax.Array, logvar_q: jax.Array, mean_p: jax.Array, logvar_p: jax.Array
) -> jax.Array:
    """KL(N(mean_q, exp logvar_q) || N(mean_p, exp logvar_p)) of diagonal Gaussians.  [Z] -> []."""
    var_ratio = jnp.exp(logvar_q - logvar_p)
    mahalanobis = jnp.square(mean_q - mean_p) * jnp.exp(-logvar_p)
    return 0.5 * jnp.sum(var_ratio + mahalanobis - 1.0 - (logvar_q - logvar_p))


def cyclical_cosine(step: jax.Array, total_steps: int, n_cycles: int = 4, ratio: float = 0.5):
    """KL weight schedule: in each of ``n_cycles`` cycles rise 0 -> 1 by a half cosine over
    the first ``ratio`` of the cycle, then hold 1 (Fu et al. 2019).  [] -> []."""
    cycle = total_steps / n_cycles
    tau = jnp.mod(step, cycle) / cycle
    return jnp.where(tau < ratio, 0.5 * (1.0 - jnp.cos(jnp.pi * tau / ratio)), 1.0)
