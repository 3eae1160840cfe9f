"""What a downstream method is: one frozen description that stages, sweeps, online training,
config validation and the report read (`scpr_jax.methods.REGISTRY` holds one per method).

A method trains a high-level policy on D_tau (offline, `td3bc.<section>`) and optionally in the
environment (online, `td3.<section>`). It acts through a skill, the artifact a skill stage
saved (``skill_stage``), or through the identity; its training reward is
r' = r_new + omega * term (`downstream.offline.training_reward`), where ``term(trajs, run)``
is its reward term and ``omega`` the config setting holding its weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from scpr_jax.agents.td3_config import td3_config, td3bc_config, validate_td3_config
from scpr_jax.downstream import offline

# config setting -> TD3 state leaf holding it: vmapped in a sweep (tested against the state)
TD3BC_LEAVES = {k: k for k in ("beta_reg", "lr", "gamma", "tau", "bc_weight", "target_noise",
                               "noise_clip")} | {"bc_alpha": "q_scale"}  # fmt: skip
TD3_LEAVES = {k: k for k in ("beta_reg", "lr", "gamma", "tau", "target_noise", "noise_clip",
                             "q_scale", "expl_noise")}  # fmt: skip

# term(trajs, stage_dir, **options) -> [N] reward term of every row; stage_dir: the reward
# stage's directory; options: the method's ``term_settings`` by their last name
Term = Callable[[Any, Path | None], jax.Array]


@dataclass(frozen=True)
class Learner:
    """How a method's offline policy is trained and read: TD3+BC unless a method brings its own.

    ``data(trajs, reward, skill, term)`` builds the on-device dataset, ``train`` is
    `downstream.offline.train_offline`'s signature, ``policy(state)`` the `TD3State` that acts
    (evaluation rolls it out), ``leaves`` the config settings a sweep vmaps, ``validate`` checks
    a config section, ``extend(section, preset, task)`` adds the learner's own settings.
    """

    data: Callable = offline.offline_data
    train: Callable = offline.train_offline
    policy: Callable[[Any], Any] = lambda state: state
    leaves: Mapping[str, str] = field(default_factory=lambda: dict(TD3BC_LEAVES))
    validate: Callable[[ml_collections.ConfigDict], None] = validate_td3_config
    extend: Callable[[ml_collections.ConfigDict, str, str], None] = lambda c, preset, task: None


TD3BC = Learner()


@dataclass(frozen=True)
class Method:
    """One downstream method (see the module docstring)."""

    name: str  # "safe-vpl": the CLI / config name
    needs: tuple[str, ...] = ()  # upstream pipeline stages (`stages.pipeline.ORDER` names)
    skill_stage: str | None = None  # stage directory whose skill artifact it acts through
    skill_kind: str = "identity"  # kind of that skill (`scpr_jax.skill.KINDS`)
    term: Term | None = None  # reward term; None: r_new alone
    reward_stage: str | None = None  # stage directory ``term`` reads (its reward artifact)
    omega: str | None = None  # config setting "section.key" holding the term's weight
    term_settings: tuple[str, ...] = ()  # further settings the term reads (downstream only)
    online: bool = False  # has an online TD3 variant (`scpr online`)
    online_reward: str = "task"  # online learning reward: "task" r_new, "oracle" r_new - w cost
    online_cost_weight: str | None = None  # config setting of that w (online sweep leaf)
    stream: str = "downstream"  # RNG stream of its downstream training (`stages.common`)
    learner: Learner = TD3BC
    metrics: tuple[str, ...] = ("return", "cost")  # what a sweep reports per member

    @property
    def section(self) -> str:
        """Its config section under ``td3bc`` / ``td3``: the name with ``_`` for ``-``."""
        return self.name.replace("-", "_")

    @property
    def latent(self) -> bool:
        """Acts through a latent skill (bc_alpha of the skill methods, a prior penalty)."""
        return self.skill_kind != "identity"

    def offline_config(self, preset: str, task: str) -> ml_collections.ConfigDict:
        """Its `td3bc` section at ``preset`` for ``task``, locked."""
        c = td3bc_config(preset, task, self.skill_kind, self.name).unlock()
        self.learner.extend(c, preset, task)
        return c.lock()

    def online_config(self, preset: str, task: str) -> ml_collections.ConfigDict:
        """Its `td3` section: identity skills get beta_reg 0; small nets on the CPU preset."""
        c = td3_config(preset, task).unlock()
        c.method = self.name  # safe-* act through a latent skill, the baselines through identity
        c.skill_kind = self.skill_kind
        c.reward = self.online_reward  # "task" or "oracle" (r_new - oracle_cost_weight * cost)
        if not self.latent:
            c.beta_reg = 0.0  # no latent prior to stay close to
        if preset == "small":  # Ball-Run Task-Only: 20k env steps in ~40 s on 2 CPU cores (256x256
            c.hidden, c.batch_size = (64, 64), 128  # nets and batch 256 took ~4 min)
        return c.lock()

    def sweep_leaves(self, kind: str) -> dict[str, str]:
        """Config setting -> state leaf of a ``kind`` ("down" / "online") sweep of this method."""
        if kind == "down":
            leaves = dict(self.learner.leaves)
            return leaves | ({self.omega: "omega"} if self.omega else {})
        weight = self.online_cost_weight
        return dict(TD3_LEAVES) | ({weight: "cost_weight"} if weight else {})


def setting(cfg: ml_collections.ConfigDict, key: str) -> Any:
    """The value of the config setting ``"section.key"``."""
    section, name = key.split(".")
    return cfg[section][name]


def term_options(cfg: ml_collections.ConfigDict, method: Method) -> dict[str, Any]:
    """The keyword arguments of ``method.term``: its ``term_settings`` by their last name."""
    return {key.split(".")[-1]: setting(cfg, key) for key in method.term_settings}


def zeros_term(trajs, stage_dir=None) -> jax.Array:
    """No reward term: r' = r_new.  -> [N]."""
    return jnp.zeros_like(trajs.reward)
