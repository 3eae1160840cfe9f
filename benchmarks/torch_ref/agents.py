"""IQL, TD3(+BC) through a frozen skill, and SAC in PyTorch, mirroring `scpr_jax.agents`.

Batches are dicts of tensors: obs [B, O], action [B, A], reward [B], next_obs [B, O],
terminated [B] (float). Every ``update`` takes the Gaussian noise it needs as optional
arguments (drawn from the learner's generator when absent) so the tests can feed the noise
of the JAX update. Where a JAX loss evaluates the same frozen network on the same inputs
twice (IQL's target critics in the value and the policy loss), XLA computes it once; the
references compute it once too. Actor losses back-propagate into the actor's parameters
only (``backward(inputs=...)``), as ``jax.grad`` with respect to the actor does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nets import MLP, TwinQ, frozen_copy, soft_update

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, inputs=None) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    opt.step()


class IQL(nn.Module):
    """Twin Q with Polyak targets, V by expectile regression, AWR Gaussian policy."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: Sequence[int],
        lr: float,
        total_steps: int,
        gamma: float,
        expectile: float,
        temperature: float,
        max_weight: float,
        tau: float,
    ):
        super().__init__()
        self.q = TwinQ(obs_size, action_size, hidden)
        self.q_target = frozen_copy(self.q)
        self.v = MLP(obs_size, hidden, 1)
        self.policy_mean = MLP(obs_size, hidden, action_size)
        self.log_std = nn.Parameter(torch.zeros(action_size))
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=lr)
        policy = [*self.policy_mean.parameters(), self.log_std]
        self.policy_opt = torch.optim.Adam(policy, lr=lr)
        # the JAX policy's optax.cosine_decay_schedule(lr, total_steps), stepped per update
        self.policy_lr = torch.optim.lr_scheduler.CosineAnnealingLR(self.policy_opt, total_steps)
        self.gamma, self.expectile, self.temperature = gamma, expectile, temperature
        self.max_weight, self.tau = max_weight, tau

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log N(a; tanh mu(s), std^2) summed over action dimensions.  -> [B]."""
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (action - torch.tanh(self.policy_mean(obs))) * torch.exp(-log_std)
        return torch.sum(-0.5 * torch.square(z) - log_std - HALF_LOG_2PI, dim=-1)

    def value_loss(self, batch: dict, q: torch.Tensor) -> torch.Tensor:
        """mean |tau - 1(u < 0)| u^2, u = min_j Q'_j(s, a) - V(s); q: that target minimum."""
        diff = q - self.v(batch["obs"])[..., 0]
        weight = torch.where(diff < 0, 1.0 - self.expectile, self.expectile)
        return torch.mean(weight * torch.square(diff))

    def policy_loss(self, batch: dict, q: torch.Tensor) -> torch.Tensor:
        """-mean min(exp(beta (min_j Q'_j - V)), w_max) log pi(a|s) with the updated V."""
        with torch.no_grad():
            adv = q - self.v(batch["obs"])[..., 0]
            weight = torch.exp(self.temperature * adv).clamp(max=self.max_weight)
        return -torch.mean(weight * self.log_prob(batch["obs"], batch["action"]))

    def critic_loss(self, batch: dict) -> torch.Tensor:
        """mean sum_j (Q_j(s, a) - r - gamma (1 - terminated) V(s'))^2."""
        with torch.no_grad():
            next_v = self.v(batch["next_obs"])[..., 0]
            y = batch["reward"] + self.gamma * (1.0 - batch["terminated"]) * next_v
        q = self.q(batch["obs"], batch["action"])
        return torch.mean(torch.sum(torch.square(q - y), dim=0))

    def update(self, batch: dict) -> dict:
        """V, then the policy (new V), then Q (new V), then the targets (the JAX order)."""
        with torch.no_grad():
            q = self.q_target(batch["obs"], batch["action"]).min(dim=0).values
        v_loss = self.value_loss(batch, q)
        _step(self.v_opt, v_loss)
        policy_loss = self.policy_loss(batch, q)
        _step(self.policy_opt, policy_loss)
        self.policy_lr.step()
        q_loss = self.critic_loss(batch)
        _step(self.q_opt, q_loss)
        soft_update(self.q_target, self.q, self.tau)
        return {"v_loss": v_loss, "policy_loss": policy_loss, "q_loss": q_loss}


class VPLSkill(nn.Module):
    """Frozen Safe-VPL skill: a = tanh(mu([s_without_goal, prior_mean + prior_std * u]))."""

    def __init__(
        self,
        obs_size: int,
        latent_size: int,
        action_size: int,
        hidden: Sequence[int],
        prior_mean: torch.Tensor,
        prior_std: torch.Tensor,
    ):
        super().__init__()
        self.mean = MLP(obs_size + latent_size, hidden, action_size).requires_grad_(False)
        self.register_buffer("prior_mean", prior_mean.float())
        self.register_buffer("prior_std", prior_std.float())
        self.obs_size = obs_size

    def forward(self, obs_full: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        z = self.prior_mean + self.prior_std * u
        return torch.tanh(self.mean(torch.cat([obs_full[..., : self.obs_size], z], dim=-1)))


class Actor(nn.Module):
    """pi_h: s [..., O] -> u = u_bound * tanh(MLP(s)) [..., Z]."""

    def __init__(self, obs_size: int, latent_size: int, hidden: Sequence[int], u_bound: float):
        super().__init__()
        self.net, self.u_bound = MLP(obs_size, hidden, latent_size), u_bound

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.u_bound * torch.tanh(self.net(obs))


class TD3(nn.Module):
    """TD3 (bc_weight 0, online) / TD3+BC (offline) of pi_h acting through a frozen skill."""

    def __init__(
        self,
        obs_size: int,
        latent_size: int,
        action_size: int,
        hidden: Sequence[int],
        skill: VPLSkill,
        u_bound: float,
        lr: float,
        gamma: float,
        tau: float,
        beta_reg: float,
        q_scale: float,
        bc_weight: float,
        target_noise: float,
        noise_clip: float,
        policy_freq: int,
        gen: torch.Generator,
    ):
        super().__init__()
        self.actor = Actor(obs_size, latent_size, hidden, u_bound)
        self.critic = TwinQ(obs_size, action_size, hidden)
        self.target_actor, self.target_critic = frozen_copy(self.actor), frozen_copy(self.critic)
        self.skill = skill
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.gamma, self.tau, self.beta_reg, self.q_scale = gamma, tau, beta_reg, q_scale
        self.bc_weight, self.target_noise, self.noise_clip = bc_weight, target_noise, noise_clip
        self.policy_freq, self.gen, self.step = policy_freq, gen, 0

    def critic_loss(self, batch: dict, eps: torch.Tensor) -> torch.Tensor:
        """mean sum_j (Q_j(s, a_D) - y)^2, y from the targets at the smoothed a'; eps [B, A]."""
        with torch.no_grad():
            next_obs = batch["next_obs"]
            a = self.skill(next_obs, self.target_actor(next_obs))
            noise = (self.target_noise * eps).clamp(-self.noise_clip, self.noise_clip)
            next_q = self.target_critic(next_obs, (a + noise).clamp(-1.0, 1.0))
            y = batch["reward"] + self.gamma * (1.0 - batch["terminated"]) * next_q.min(0).values
        q = self.critic(batch["obs"], batch["action"])
        return torch.mean(torch.sum(torch.square(q - y), dim=0))

    def actor_loss(self, batch: dict) -> torch.Tensor:
        """-lambda mean Q1(s, a_pi) + bc_weight mean ||a_pi - a_D||^2 + beta_reg mean ||u||^2."""
        u = self.actor(batch["obs"])
        a_pi = self.skill(batch["obs"], u)
        q1 = self.critic.q1(torch.cat([batch["obs"], a_pi], dim=-1))[..., 0]
        lam = self.q_scale / q1.abs().mean().detach().clamp(min=1e-6)
        bc = torch.sum(torch.square(a_pi - batch["action"]), dim=-1).mean()
        u_sq = torch.sum(torch.square(u), dim=-1).mean()
        return -lam * q1.mean() + self.bc_weight * bc + self.beta_reg * u_sq

    def update(self, batch: dict, eps: torch.Tensor | None = None) -> dict:
        """Critic step, then every policy_freq steps the actor step and both targets."""
        if eps is None:
            eps = torch.randn(batch["action"].shape, generator=self.gen)
        critic_loss = self.critic_loss(batch, eps)
        _step(self.critic_opt, critic_loss)
        metrics = {"critic_loss": critic_loss}
        if self.step % self.policy_freq == 0:
            actor_loss = self.actor_loss(batch)
            _step(self.actor_opt, actor_loss, inputs=list(self.actor.parameters()))
            soft_update(self.target_actor, self.actor, self.tau)
            soft_update(self.target_critic, self.critic, self.tau)
            metrics["actor_loss"] = actor_loss
        self.step += 1
        return metrics


class SAC(nn.Module):
    """Tanh-Gaussian actor, twin critics with Polyak targets, automatic temperature."""

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        hidden: Sequence[int],
        lr: float,
        gamma: float,
        tau: float,
        init_alpha: float,
        gen: torch.Generator,
    ):
        super().__init__()
        self.actor = MLP(obs_size, hidden, 2 * action_size)
        self.critic = TwinQ(obs_size, action_size, hidden)
        self.target_critic = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.gamma, self.tau, self.target_entropy = gamma, tau, -float(action_size)
        self.gen = gen

    def sample(self, obs: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a = tanh(mean + std * eps) and log pi(a|s).  -> [B, A], [B]."""
        mean, raw = self.actor(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
        u = mean + torch.exp(log_std) * eps
        log_normal = -0.5 * torch.square(eps) - log_std - HALF_LOG_2PI
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), torch.sum(log_normal - log_det, dim=-1)

    def critic_loss(self, batch: dict, eps_next: torch.Tensor) -> torch.Tensor:
        """mean sum_j 0.5 (Q_j(s, a) - y)^2, y = r + gamma (1 - d)(min Q'(s', a') - alpha lp')."""
        with torch.no_grad():
            next_action, next_log_prob = self.sample(batch["next_obs"], eps_next)
            next_q = self.target_critic(batch["next_obs"], next_action).min(0).values
            soft_value = next_q - torch.exp(self.log_alpha) * next_log_prob
            y = batch["reward"] + self.gamma * (1.0 - batch["terminated"]) * soft_value
        q = self.critic(batch["obs"], batch["action"])
        return 0.5 * torch.mean(torch.sum(torch.square(q - y), dim=0))

    def actor_loss(self, batch: dict, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [alpha log pi(a|s) - min_j Q_j(s, a)], entropy -mean log pi)."""
        action, log_prob = self.sample(batch["obs"], eps)
        q = self.critic(batch["obs"], action).min(0).values
        loss = torch.mean(torch.exp(self.log_alpha).detach() * log_prob - q)
        return loss, -log_prob.mean().detach()

    def update(self, batch: dict, eps_next=None, eps=None) -> dict:
        """Critics, actor, temperature, then the target critics (the JAX order)."""
        shape = batch["action"].shape
        eps_next = torch.randn(shape, generator=self.gen) if eps_next is None else eps_next
        eps = torch.randn(shape, generator=self.gen) if eps is None else eps
        critic_loss = self.critic_loss(batch, eps_next)
        _step(self.critic_opt, critic_loss)
        actor_loss, entropy = self.actor_loss(batch, eps)
        _step(self.actor_opt, actor_loss, inputs=list(self.actor.parameters()))
        alpha_loss = torch.exp(self.log_alpha) * (entropy - self.target_entropy)
        _step(self.alpha_opt, alpha_loss)
        soft_update(self.target_critic, self.critic, self.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha_loss": alpha_loss}
