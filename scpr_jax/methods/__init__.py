"""The registry of downstream methods: one module per method, one line each in `REGISTRY`.

Stages, sweeps, online training, config validation and the report iterate `REGISTRY`; a new
method is a module describing itself (`base.Method`) plus its line here (README "Extending").
"""

from __future__ import annotations

import ml_collections

from scpr_jax.methods import oracle, rc, safe_cpl, safe_vpl, sopl, task_only, td3bc_lag
from scpr_jax.methods.base import TD3BC, Learner, Method, setting, term_options

REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        safe_vpl.METHOD,
        safe_cpl.METHOD,
        oracle.METHOD,
        task_only.METHOD,
        rc.METHOD,
        sopl.METHOD,
        td3bc_lag.METHOD,
    )
}


def names(online: bool = False) -> tuple[str, ...]:
    """Every method's name (``online``: those with an online variant), in registry order."""
    return tuple(m.name for m in REGISTRY.values() if m.online or not online)


def get(name: str, online: bool = False) -> Method:
    """The method called ``name``; ValueError listing the valid names."""
    valid = names(online)
    if name not in valid:
        what = "online method" if online else "method"
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")
    return REGISTRY[name]


def td3bc_config(preset: str, env: str, method: str) -> ml_collections.ConfigDict:
    """The offline (`td3bc`) settings of ``method`` on ``env`` at ``preset``, locked."""
    return get(method).offline_config(preset, env)


def online_config(preset: str, env: str, method: str) -> ml_collections.ConfigDict:
    """The online (`td3`) settings of ``method`` (one with an online variant), locked."""
    return get(method, online=True).online_config(preset, env)


def validate_td3_config(config: ml_collections.ConfigDict) -> None:
    """A `td3bc` section's method name, then its learner's checks; ValueError naming the field."""
    if config.method not in REGISTRY:
        raise ValueError(
            f"td3 config.method={config.method!r} unknown; valid: {', '.join(REGISTRY)}"
        )
    REGISTRY[config.method].learner.validate(config)


__all__ = [
    "REGISTRY",
    "TD3BC",
    "Learner",
    "Method",
    "get",
    "names",
    "online_config",
    "setting",
    "term_options",
    "td3bc_config",
    "validate_td3_config",
]
