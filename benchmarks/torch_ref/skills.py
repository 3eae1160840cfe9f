"""Preference-VAE and CPL steps in PyTorch, mirroring `scpr_jax.skills.vae` and `.cpl`.

Batches are those of `data.sample_sets`: a leading set axis B on every tensor,
feats [B, P, L, 2 O + 1], obs1/obs2 [B, P, L, O], act1/act2 [B, P, L, A], y [B, P]
(CPL: z_mean/z_logvar [B, Z] instead of feats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nets import MLP, leaky_relu

LOGVAR_MIN, LOGVAR_MAX = -20.0, 4.0


class SetEncoder(nn.Module):
    """Linear -> attention over time -> mean -> attention over pairs -> mean -> Gaussian."""

    def __init__(self, in_size: int, hidden: int, latent_dim: int, embed_activation: bool):
        super().__init__()
        self.embed = nn.Linear(in_size, hidden)
        self.embed_activation = embed_activation
        self.time_attention = nn.MultiheadAttention(hidden, 1, batch_first=True)
        self.pair_attention = nn.MultiheadAttention(hidden, 1, batch_first=True)
        self.mean = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B, P, L, D] -> posterior mean and log-variance, each [B, Z]."""
        b, p, length, _ = feats.shape
        h = self.embed(feats)
        if self.embed_activation:
            h = leaky_relu(h)
        h = h.reshape(b * p, length, -1)
        h = self.time_attention(h, h, h, need_weights=False)[0].mean(dim=1).reshape(b, p, -1)
        h = self.pair_attention(h, h, h, need_weights=False)[0].mean(dim=1)  # [B, H]
        return self.mean(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)


def with_latent(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """[x, z] with one z [B, Z] per set broadcast over x [B, P, L, F] -> [B, P, L, F + Z]."""
    return torch.cat([x, z[:, None, None, :].expand(*x.shape[:-1], z.shape[-1])], dim=-1)


def cyclical_cosine(step: int, total_steps: int, n_cycles: int, ratio: float = 0.5) -> float:
    """KL weight: per cycle a half cosine 0 -> 1 over the first ``ratio``, then 1."""
    cycle = total_steps / n_cycles
    tau = math.fmod(step, cycle) / cycle
    return 0.5 * (1.0 - math.cos(math.pi * tau / ratio)) if tau < ratio else 1.0


class VAE(nn.Module):
    """BT-VAE: set encoder, learned prior and reward decoder r([s, z', a]), one Adam."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        latent_dim: int,
        hidden: int,
        decoder_hidden: Sequence[int],
        embed_activation: bool,
        lr: float,
        kl_weight: float,
        total_steps: int,
        n_cycles: int,
        gen: torch.Generator,
    ):
        super().__init__()
        self.encoder = SetEncoder(2 * obs_size + 1, hidden, latent_dim, embed_activation)
        in_size = obs_size + latent_dim + action_size
        self.decoder = MLP(in_size, decoder_hidden, 1, activation=leaky_relu)
        self.prior_mean = nn.Parameter(torch.zeros(latent_dim))
        self.prior_logvar = nn.Parameter(torch.zeros(latent_dim))
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.kl_weight, self.total_steps, self.n_cycles = kl_weight, total_steps, n_cycles
        self.gen, self.step = gen, 0

    def reward(self, obs: torch.Tensor, z: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """r_phi([s, z', a]) of every step.  [B, P, L, O], [B, Z], [B, P, L, A] -> [B, P, L]."""
        return self.decoder(torch.cat([with_latent(obs, z), act], dim=-1))[..., 0]

    def loss(self, batch: dict, eps: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
        """mean_sets [mean_pairs BCE(BT logit, y) + beta * kl_weight * KL(q || p)].  eps [B, Z]."""
        mean, logvar = self.encoder(batch["feats"])
        z = mean + torch.exp(0.5 * logvar) * eps
        r1 = self.reward(batch["obs1"], z, batch["act1"]).sum(-1)  # [B, P]
        r2 = self.reward(batch["obs2"], z, batch["act2"]).sum(-1)
        nll = F.binary_cross_entropy_with_logits(r1 - r2, batch["y"])
        diff = logvar - self.prior_logvar
        mahalanobis = torch.square(mean - self.prior_mean) * torch.exp(-self.prior_logvar)
        kl = 0.5 * torch.sum(torch.exp(diff) + mahalanobis - 1.0 - diff, dim=-1).mean()
        loss = nll + beta * self.kl_weight * kl
        return loss, {"loss": loss, "nll": nll, "kl": kl}

    def update(self, batch: dict, eps: torch.Tensor | None = None) -> dict:
        """One Adam step on a batch of sets; eps [B, Z] (drawn here when None)."""
        if eps is None:
            shape = (batch["y"].shape[0], self.prior_mean.shape[0])
            eps = torch.randn(shape, generator=self.gen)
        beta = cyclical_cosine(self.step, self.total_steps, self.n_cycles)
        loss, metrics = self.loss(batch, eps, beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return metrics


class CPL(nn.Module):
    """Policy decoder mu_theta([s, z']) (LeakyReLU MLP, tanh mean) trained by the CPL loss."""

    def __init__(
        self,
        obs_size: int,
        latent_dim: int,
        action_size: int,
        hidden: Sequence[int],
        alpha: float,
        lam: float,
        lr: float,
        gen: torch.Generator,
    ):
        super().__init__()
        self.net = MLP(obs_size + latent_dim, hidden, action_size, activation=leaky_relu)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.alpha, self.lam, self.gen = alpha, lam, gen

    def log_lik(self, obs: torch.Tensor, z: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """lp_t = -||mu_theta(s_t, z') - a_t||^2.  [B, P, L, O], [B, Z] -> [B, P, L]."""
        mu = torch.tanh(self.net(with_latent(obs, z)))
        return -torch.sum(torch.square(mu - act), dim=-1)

    def loss(self, batch: dict, eps: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """mean -log sigmoid(adv_pref - lam * adv_other), adv = alpha * sum_t lp_t."""
        z = batch["z_mean"] + torch.exp(0.5 * batch["z_logvar"]) * eps
        adv1 = self.alpha * self.log_lik(batch["obs1"], z, batch["act1"]).sum(-1)  # [B, P]
        adv2 = self.alpha * self.log_lik(batch["obs2"], z, batch["act2"]).sum(-1)
        logit = torch.where(batch["y"] > 0.5, adv1 - self.lam * adv2, adv2 - self.lam * adv1)
        loss = -F.logsigmoid(logit).mean()
        return loss, {"loss": loss}

    def update(self, batch: dict, eps: torch.Tensor | None = None) -> dict:
        """One Adam step on theta; z' ~ q(z' | S) from the batch's frozen posteriors."""
        if eps is None:
            eps = torch.randn(batch["z_mean"].shape, generator=self.gen)
        loss, metrics = self.loss(batch, eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return metrics
