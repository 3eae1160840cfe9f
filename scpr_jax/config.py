"""The pipeline's config: one locked ConfigDict with a section per stage.

Built-in defaults live here so an installed ``scpr`` runs without the repository; the files
in ``configs/`` return (possibly modified) copies of them for ``--config``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import ml_collections

from scpr_jax import methods
from scpr_jax.agents.iql import iql_config, validate_iql_config
from scpr_jax.agents.td3_config import validate_td3_config
from scpr_jax.data.collect import collect_config, validate_config
from scpr_jax.data.preferences import label_config, validate_label_config
from scpr_jax.data.value import value_config
from scpr_jax.envs import TASKS
from scpr_jax.envs.registry import REAL
from scpr_jax.skills.cpl import cpl_config, validate_cpl_config
from scpr_jax.skills.reward_models import reward_config, validate_reward_config
from scpr_jax.skills.train_vae import model_config, vae_train_config

PRESETS = ("small", "paper")
DEFAULT_METHODS = ("safe-vpl", "oracle", "task-only", "rc")  # PAPER.md 6's main comparison
DEFAULT_ONLINE = ("safe-vpl", "oracle", "task-only")  # PAPER.md 5's online setting


def pipeline_config(env: str = "ball-run", preset: str = "small") -> ml_collections.ConfigDict:
    """Defaults of every stage for task ``env`` at ``preset`` ("small": CPU, "paper");
    ``real:<task>`` runs on the real simulator with ``<task>``'s settings."""
    _check_env(env)
    task = env.removeprefix(REAL)  # the per-task presets are those of the JAX-native twin
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    cfg = ml_collections.ConfigDict()
    cfg.env = env  # task name (see `scpr envs`), or real:<task> (host-side real simulator)
    cfg.preset = preset  # "small" (2-core CPU) or "paper" (PAPER.md settings, accelerators)
    cfg.seed = 0  # root seed; every stage folds in its own stream
    cfg.methods = DEFAULT_METHODS  # downstream methods compared (`scpr_jax.methods.REGISTRY`)
    cfg.collect = collect_config(preset)  # D_tau collection (goal-conditioned SAC)
    cfg.label = label_config(preset, task)  # crowd preference sets D_pref
    cfg.value = value_config(preset)  # per-user value functions (regret labels only)
    cfg.vae = vae_train_config(preset)  # preference VAE (encoder, prior, BT decoder)
    cfg.iql = iql_config(preset, task)  # latent-conditioned IQL skills (Safe-VPL)
    cfg.cpl_vae = vae_train_config(preset)  # Safe-CPL's BT-VAE on regret labels
    if preset == "paper":
        cfg.cpl_vae.batch_size = 128  # PAPER.md 3.3: batch 128 sets for the CPL run
    cfg.cpl = cpl_config(preset, task)  # Safe-CPL policy decoder (CPL loss)
    cfg.rc = reward_config(preset, "rc")  # RC(omega) baseline reward; rc.weight is omega
    cfg.sopl = reward_config(preset, "sopl")  # SOPL baseline reward (privileged)
    cfg.eval_episodes = 20  # episodes per (latent, user) in the skill evaluation
    cfg.eval_max_steps = 0  # episode length of every evaluation rollout; 0: the task's default
    cfg.td3bc = ml_collections.ConfigDict(
        {m.section: m.offline_config(preset, task) for m in methods.REGISTRY.values()}
    )  # offline TD3+BC of each method's high-level policy (td3bc.safe_vpl.beta_reg, ...)
    cfg.online_methods = DEFAULT_ONLINE  # methods of `scpr online` (those with m.online)
    cfg.td3 = ml_collections.ConfigDict(
        {m.section: m.online_config(preset, task) for m in methods.REGISTRY.values() if m.online}
    )  # online TD3 of each method's high-level policy (td3.oracle.steps, ...)
    cfg.downstream = ml_collections.ConfigDict()
    cfg.downstream.seeds = (0, 1, 2)  # downstream seeds trained vmapped per method
    cfg.downstream.eval_episodes = 100 if preset == "small" else 200  # final evaluation
    cfg.downstream.oracle_cost_weight = 10.0  # Oracle's reward r_new - weight * cost
    return cfg.lock()


def _check_env(env: str) -> None:
    if env.removeprefix(REAL) not in TASKS:
        raise ValueError(
            f"unknown env {env!r}; valid: {', '.join(TASKS)}, or real:<task> for the real "
            "simulators (host-side, scpr_jax.bridge)"
        )


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks every section at start-up; raises ValueError naming the bad setting."""
    _check_env(cfg.env)
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed!r} must be a non-negative integer")
    for field, valid in (("methods", methods.names()), ("online_methods", methods.names(True))):
        chosen = tuple(cfg[field])
        if any(m not in valid for m in chosen) or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(
                f"{field}={chosen!r} invalid; give distinct names from {', '.join(valid)}"
            )
    validate_config(cfg.collect)
    validate_label_config(cfg.label)
    for field in ("steps", "chunk", "batch_size"):
        if cfg.value[field] < 1:
            raise ValueError(f"value config: {field}={cfg.value[field]!r} must be >= 1")
    model_config(cfg.vae)
    validate_iql_config(cfg.iql)
    model_config(cfg.cpl_vae)
    validate_cpl_config(cfg.cpl)
    for kind in ("rc", "sopl"):
        validate_reward_config(cfg[kind])
        if cfg[kind].kind != kind:
            raise ValueError(f"{kind}.kind={cfg[kind].kind!r} must be {kind!r}")
    for m in methods.REGISTRY.values():
        m.learner.validate(cfg.td3bc[m.section])
        if m.online:
            validate_td3_config(cfg.td3[m.section])
    seeds = tuple(cfg.downstream.seeds)
    if not seeds or any(not isinstance(x, int) or x < 0 for x in seeds):
        raise ValueError(f"downstream.seeds={seeds!r} must be non-negative integers")
    if cfg.downstream.eval_episodes < 1:
        raise ValueError(f"downstream.eval_episodes={cfg.downstream.eval_episodes!r} must be >= 1")
    if cfg.downstream.oracle_cost_weight < 0:
        raise ValueError(
            f"downstream.oracle_cost_weight={cfg.downstream.oracle_cost_weight!r} must be >= 0"
        )
    if cfg.eval_max_steps != 0 and cfg.eval_max_steps < 2:
        raise ValueError(f"eval_max_steps={cfg.eval_max_steps!r} must be 0 (default) or >= 2")
    if cfg.eval_episodes < 1:
        raise ValueError(f"eval_episodes={cfg.eval_episodes!r} must be >= 1")


def load_config(path: str | None, env: str = "ball-run", preset: str = "small"):
    """``get_config()`` of a Python config file (``file.py`` or ``file.py:arg``), else defaults."""
    if not path:
        return pipeline_config(env, preset)
    file, _, arg = path.partition(":")
    if not Path(file).is_file():
        raise ValueError(f"config file {file!r} does not exist")
    spec = importlib.util.spec_from_file_location("scpr_user_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {file!r} has no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]):
    """Applies ``key.sub=value`` strings (values parsed as Python literals) to ``cfg``."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # bare strings such as env=ball-circle
        node, *path = key.split(".")
        parent, leaf = cfg, key
        for part in [node, *path][:-1]:
            if part not in parent:
                raise ValueError(f"override {item!r}: unknown section {part!r}")
            parent = parent[part]
        leaf = key.split(".")[-1]
        if leaf not in parent:
            raise ValueError(f"override {item!r}: unknown setting {key!r}")
        old = parent[leaf]
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(old, tuple) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())  # methods=a,b
        parent[leaf] = value
    return cfg
