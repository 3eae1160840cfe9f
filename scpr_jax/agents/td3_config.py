"""Settings of the high-level policy's TD3+BC (offline) and TD3 (online): presets, checks.

PAPER.md 3.6 and 5 give the paper preset; "small" fits a 2-core CPU.
"""

from __future__ import annotations

import ml_collections

from scpr_jax.envs import TASKS, task_class
from scpr_jax.skill import KINDS

PRESETS = ("small", "paper")


def _check_names(preset: str, env: str, skill_kind: str = "identity") -> None:
    for what, value, valid in (
        ("preset", preset, PRESETS), ("env", env, TASKS), ("skill kind", skill_kind, KINDS)
    ):  # fmt: skip
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _common(c: ml_collections.ConfigDict) -> None:
    c.hidden = (256, 256)  # widths of the actor and of each critic (() = linear)
    c.lr = 3e-4  # Adam learning rate (actor and critic)
    c.gamma = 0.99  # discount
    c.tau = 0.005  # Polyak rate of the target actor and critic
    c.target_noise = 0.2  # std of the target-policy smoothing noise on env actions
    c.noise_clip = 0.5  # clip of that noise
    c.policy_freq = 1  # critic updates per actor (and target) update
    c.eval_every = 20_000  # updates between evaluations
    c.eval_episodes = 200  # episodes per evaluation (a random downstream goal each)
    c.control_interval = 1  # env steps a chosen latent is held in rollouts (paper: every step)


def td3bc_config(
    preset: str, env: str, skill_kind: str = "identity", method: str = ""
) -> ml_collections.ConfigDict:
    """Offline TD3+BC settings of pi_h acting through a ``skill_kind`` skill on ``env``
    (PAPER.md 3.6, 5), locked; ``method`` names the method they are for (messages)."""
    _check_names(preset, env, skill_kind)
    latent = skill_kind != "identity"
    c = ml_collections.ConfigDict()
    c.env = env  # task name
    c.method = method  # the method these settings are for (`scpr_jax.methods`)
    c.skill_kind = skill_kind  # the skill pi_h acts through: identity, iql (VPL), cpl (CPL)
    _common(c)
    c.batch_size = 512  # transitions per update
    paper = task_class(env).paper  # the task's own values (PAPER.md 3.6, 5)
    c.steps = paper.td3bc_steps  # updates
    c.chunk = 1000  # updates per jitted lax.scan chunk
    # lambda = bc_alpha / mean|Q|; the paper gives bc_alpha for the skill methods and for
    # Task-Only; Oracle, RC and SOPL act in the same env-action space and use Task-Only's
    c.bc_alpha = paper.bc_alpha[not latent]
    c.bc_weight = 1.0  # weight of the behaviour-cloning term ||a_pi - a_D||^2
    c.beta_reg = 1.0 if latent else 0.0  # prior penalty (baselines: no prior)
    if preset == "small":  # Ball-Run: 4 methods x 3 vmapped seeds in ~4 min on 2 CPU cores
        # (measured ~50 updates/s per 3-seed batch with a 256x256 IQL skill, ~60 without)
        c.batch_size = 256
        c.steps = 3000
        c.chunk = 500
        c.eval_every = 1000
        c.eval_episodes = 20
    return c.lock()


def td3_config(preset: str, env: str) -> ml_collections.ConfigDict:
    """Online TD3 settings of pi_h over a skill (PAPER.md 3.6); the trainer is a later stage."""
    _check_names(preset, env)
    c = ml_collections.ConfigDict()
    c.env = env  # task name
    _common(c)
    c.batch_size = 256  # transitions per update
    c.steps = task_class(env).paper.online_steps  # environment steps
    c.chunk = 1000  # env steps (and updates) per jitted chunk
    c.q_scale = 200.0  # lambda = q_scale / mean|Q|
    c.bc_weight = 0.0  # no behaviour cloning online
    c.beta_reg = 0.01  # prior penalty (set 0 for an identity skill)
    c.expl_noise = 0.1  # std of the Gaussian exploration noise on env actions
    c.warmup_steps = 10_000  # env steps with random u before learning starts
    c.warmup_u_std = 3.0  # random u ~ warmup_u_std * N(0, I) during warm-up
    c.updates_per_step = 1  # gradient updates per env step
    c.n_envs = 1  # parallel environments
    c.buffer_size = 1_000_000  # replay capacity (transitions)
    if preset == "small":
        c.steps, c.chunk, c.warmup_steps, c.buffer_size = 20_000, 500, 2000, 20_000
        c.eval_every, c.eval_episodes = 5000, 20
    return c.lock()


_RULES = (  # (fields, predicate, what is allowed); fields absent from a config are skipped
    (
        (
            "batch_size",
            "steps",
            "chunk",
            "policy_freq",
            "eval_episodes",
            "n_envs",
            "control_interval",
        ),
        lambda v: v >= 1 and v == int(v),
        "a positive integer",
    ),
    (("eval_every", "warmup_steps"), lambda v: v >= 0 and v == int(v), "an integer >= 0"),
    (("updates_per_step", "buffer_size"), lambda v: v >= 1 and v == int(v), "an integer >= 1"),
    (("lr", "bc_alpha", "q_scale"), lambda v: v > 0, "> 0"),
    (("gamma", "tau"), lambda v: 0 <= v <= 1, "in [0, 1]"),
    (
        ("beta_reg", "bc_weight", "target_noise", "noise_clip", "expl_noise", "warmup_u_std"),
        lambda v: v >= 0,
        ">= 0",
    ),
)


def validate_td3_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first field outside its allowed range."""
    for names, ok, allowed in _RULES:
        for name in names:
            if name in config and not ok(float(config[name])):
                raise ValueError(f"td3 config.{name}={config[name]} must be {allowed}")
    if any(int(w) < 1 for w in config.hidden):  # () is allowed: linear networks
        raise ValueError(f"td3 config.hidden={config.hidden} must be positive widths")
    if config.steps % config.chunk:
        raise ValueError(
            f"td3 config.steps={config.steps} must be a multiple of chunk={config.chunk}"
        )
    if config.env not in TASKS:
        raise ValueError(f"td3 config.env={config.env!r} unknown; valid: {', '.join(TASKS)}")
    if config.get("skill_kind", "identity") not in KINDS:
        raise ValueError(
            f"td3 config.skill_kind={config.skill_kind!r} unknown; valid: {', '.join(KINDS)}"
        )
