"""Pipeline stages over a run directory (`scpr` commands call these by name)."""

from __future__ import annotations

import ml_collections

from scpr_jax.stages.data import run_collect, run_label, run_label_regret
from scpr_jax.stages.skills import run_cpl, run_reward_rc, run_reward_sopl, run_vpl

NEEDS = {  # method -> the stages it needs before its downstream training
    "safe-vpl": ("label", "vpl"),
    "safe-cpl": ("label_regret", "cpl"),
    "rc": ("label", "reward_rc"),
    "sopl": ("label", "reward_sopl"),
    "oracle": (),
    "task-only": (),
}
ORDER = ("collect", "label", "label_regret", "vpl", "cpl", "reward_rc", "reward_sopl")


def stages_for(cfg: ml_collections.ConfigDict) -> list[str]:
    """The upstream stages ``cfg.methods`` need, in pipeline order."""
    needed = {"collect"} | {s for m in cfg.methods for s in NEEDS[m]}
    return [s for s in ORDER if s in needed]


def run_stage(name: str, run, cfg: ml_collections.ConfigDict) -> dict:
    """Runs (or skips, if done) the stage called ``name``."""
    return globals()[f"run_{name}"](run, cfg)


__all__ = [
    "run_collect",
    "run_cpl",
    "run_label",
    "run_label_regret",
    "run_reward_rc",
    "run_reward_sopl",
    "run_stage",
    "run_vpl",
    "stages_for",
]
