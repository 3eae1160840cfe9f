"""The pipeline's config: one locked ConfigDict with a section per stage.

Built-in defaults live here so an installed ``scpr`` runs without the repository; the files
in ``configs/`` return (possibly modified) copies of them for ``--config``.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import re
from contextlib import contextmanager
from pathlib import Path

import ml_collections

from scpr_jax import methods
from scpr_jax.agents.iql import iql_config, validate_iql_config
from scpr_jax.agents.td3_config import validate_td3_config
from scpr_jax.data.collect import collect_config, validate_config
from scpr_jax.data.labels import crowd_goals
from scpr_jax.data.preferences import label_config, validate_label_config
from scpr_jax.data.value import value_config
from scpr_jax.envs import TASKS, make_task
from scpr_jax.envs.registry import REAL
from scpr_jax.errors import SettingsError
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
    if not isinstance(env, str) or env.removeprefix(REAL) not in TASKS:
        raise SettingsError(
            f"unknown env {env!r}; valid: {', '.join(TASKS)}, or real:<task> for the real "
            "simulators (host-side, scpr_jax.bridge)"
        )


@contextmanager
def _section(name: str):
    """Re-raises a section validator's ValueError as a SettingsError naming ``name.<key>``."""
    try:
        yield
    except SettingsError:
        raise
    except (ValueError, TypeError) as err:  # "td3 config.x=-1" -> "td3bc.safe_vpl.x=-1"
        text = re.sub(r"^(?:\w+ )?config(?::\s*|\.)(?=\w+=)", f"{name}.", str(err))
        raise SettingsError(text if text != str(err) else f"{name}: {err}") from None


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Checks every section and the settings that must agree across sections, at start-up;
    raises SettingsError naming the bad setting."""
    _check_env(cfg.env)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**31:
        raise SettingsError(f"seed={cfg.seed!r} must be an integer in [0, 2**31)")
    for field, valid in (("methods", methods.names()), ("online_methods", methods.names(True))):
        chosen = tuple(cfg[field])
        if any(m not in valid for m in chosen) or not chosen or len(set(chosen)) != len(chosen):
            raise SettingsError(
                f"{field}={chosen!r} invalid; give distinct names from {', '.join(valid)}"
            )
    checks = [("collect", validate_config), ("label", validate_label_config),
              ("value", _validate_value), ("vae", model_config), ("iql", validate_iql_config),
              ("cpl_vae", model_config), ("cpl", validate_cpl_config),
              ("rc", validate_reward_config), ("sopl", validate_reward_config)]  # fmt: skip
    for m in methods.REGISTRY.values():
        checks.append((f"td3bc.{m.section}", m.learner.validate))
        if m.online:
            checks.append((f"td3.{m.section}", validate_td3_config))
    for name, check in checks:
        section = cfg
        for part in name.split("."):
            section = section[part]
        with _section(name):
            check(section)
    for kind in ("rc", "sopl"):
        if cfg[kind].kind != kind:
            raise SettingsError(f"{kind}.kind={cfg[kind].kind!r} must be {kind!r}")
    with _section("downstream"):
        _validate_downstream(cfg)
    _validate_across(cfg)


def _validate_value(c: ml_collections.ConfigDict) -> None:
    for field in ("steps", "chunk", "batch_size"):
        if c[field] < 1:
            raise ValueError(f"config.{field}={c[field]!r} must be >= 1")


def _validate_downstream(cfg: ml_collections.ConfigDict) -> None:
    seeds = tuple(cfg.downstream.seeds)
    if not seeds or any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**31
                        for x in seeds):  # fmt: skip
        raise ValueError(f"config.seeds={seeds!r} must be integers in [0, 2**31)")
    if cfg.downstream.eval_episodes < 1:
        raise ValueError(f"config.eval_episodes={cfg.downstream.eval_episodes!r} must be >= 1")
    if cfg.downstream.oracle_cost_weight < 0:
        raise ValueError(
            f"config.oracle_cost_weight={cfg.downstream.oracle_cost_weight!r} must be >= 0"
        )
    if cfg.eval_max_steps != 0 and cfg.eval_max_steps < 2:
        raise SettingsError(f"eval_max_steps={cfg.eval_max_steps!r} must be 0 (default) or >= 2")
    if cfg.eval_episodes < 1:
        raise SettingsError(f"eval_episodes={cfg.eval_episodes!r} must be >= 1")


def _validate_across(cfg: ml_collections.ConfigDict) -> None:
    """Settings of different sections that must agree (checked before any work)."""
    task = make_task(cfg.env.removeprefix(REAL))
    episode = int(cfg.collect.max_steps) or int(task.max_steps)
    per_stream = int(cfg.collect.total_steps) // int(cfg.collect.n_envs)
    if cfg.label.segment_len > min(episode, per_stream):
        raise SettingsError(
            f"label.segment_len={cfg.label.segment_len} exceeds the episode length {episode} "
            f"(collect.max_steps, or the task's) or the {per_stream} steps each of the "
            f"collect.n_envs={cfg.collect.n_envs} streams collects"
        )
    try:
        crowd_goals(task, int(cfg.label.n_users))
    except ValueError as err:
        raise SettingsError(f"label.n_users={cfg.label.n_users}: {err}") from None
    rows = int(cfg.collect.total_steps)
    sized = [("iql", cfg.iql)] + [(f"td3bc.{m.section}", cfg.td3bc[m.section])
                                  for m in methods.REGISTRY.values()]  # fmt: skip
    for name, section in sized:
        if section.batch_size > rows:
            raise SettingsError(
                f"{name}.batch_size={section.batch_size} exceeds D_tau's "
                f"collect.total_steps={rows} transitions"
            )


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


def _closest(name: str, valid, what: str) -> str:
    """``unknown <what> 'x'`` with the closest valid names (or all of them, if few)."""
    valid = sorted(str(v) for v in valid)
    near = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    near += [v for v in valid if v == name.replace("-", "_") and v not in near]
    if near:
        return f"unknown {what} {name!r}; did you mean {', '.join(map(repr, near))}?"
    return f"unknown {what} {name!r}; valid: {', '.join(valid)}"


def _typed(key: str, old, value):
    """``value`` converted to the type of the setting's default ``old``; SettingsError if it
    cannot be (1e3 for an integer setting is 1000; 1.5 or True is refused)."""
    if isinstance(old, bool) or old is None:
        return value
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(old, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"--set {key}={value!r}: {key} must be an integer")
    if isinstance(old, tuple):
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())  # methods=a,b
        if not isinstance(value, tuple):
            raise SettingsError(f"--set {key}={value!r}: {key} must be a tuple, e.g. {old!r}")
    if isinstance(old, float) and (isinstance(value, bool) or not isinstance(value, float)):
        raise SettingsError(f"--set {key}={value!r}: {key} must be a number")
    if isinstance(old, str) and not isinstance(value, str):
        raise SettingsError(f"--set {key}={value!r}: {key} must be a string")
    return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]):
    """Applies ``key.sub=value`` strings (values parsed as Python literals) to ``cfg``;
    SettingsError naming the key, with the closest valid keys, for unknown or mistyped ones."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"override {item!r} must look like key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = raw  # bare strings such as env=ball-circle
        *sections, leaf = key.split(".")
        parent, path = cfg, []
        for part in sections:
            if not isinstance(parent, ml_collections.ConfigDict):
                raise SettingsError(f"override {item!r}: {'.'.join(path)} is a setting, not a "
                                    "section")  # fmt: skip
            if part not in parent:
                where = ".".join(path) or "the config"
                valid = [k for k in parent if isinstance(parent[k], ml_collections.ConfigDict)]
                raise SettingsError(f"override {item!r}: {_closest(part, valid, 'section')} "
                                    f"(sections of {where})")  # fmt: skip
            parent, path = parent[part], [*path, part]
        if not isinstance(parent, ml_collections.ConfigDict):
            raise SettingsError(f"override {item!r}: {'.'.join(path)} is a setting, not a section")
        if leaf not in parent:
            valid = list(parent)
            raise SettingsError(f"override {item!r}: {_closest(leaf, valid, 'setting')}")
        if isinstance(parent[leaf], ml_collections.ConfigDict):
            raise SettingsError(f"override {item!r}: {key} is a section; set one of its keys")
        try:
            parent[leaf] = _typed(key, parent[leaf], value)
        except TypeError as err:  # ml_collections refuses another type
            raise SettingsError(f"--set {key}={value!r}: {err}") from None
    return cfg
