"""The pipeline's stages by name, the upstream stages each method needs, and the check that a
run directory's finished stages were made with the current settings.

Upstream stages run in `ORDER`; which ones a command runs is read off the methods registry
(`Method.needs`). Which settings each stage directory depends on is `stages.fingerprint`'s
(`SECTIONS` and the registry); every stage records them before it starts (`claim`).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from scpr_jax import methods
from scpr_jax.errors import SettingsError
from scpr_jax.runs import RunDir
from scpr_jax.stages.data import run_collect, run_label, run_label_regret
from scpr_jax.stages.downstream import run_downstream, run_report
from scpr_jax.stages.fingerprint import STANDS_FOR, _stages_of, claim, directory_of, flatten
from scpr_jax.stages.online import check_jax_env, run_online, run_online_report
from scpr_jax.stages.skills import run_cpl, run_reward_rc, run_reward_sopl, run_vpl

Stage = Callable[[RunDir, ml_collections.ConfigDict], dict]
STAGES: dict[str, Stage] = {  # name -> stage function (a command runs them by these names)
    "collect": run_collect,
    "label": run_label,
    "label_regret": run_label_regret,
    "vpl": run_vpl,
    "cpl": run_cpl,
    "reward_rc": run_reward_rc,
    "reward_sopl": run_reward_sopl,
    "downstream": run_downstream,
    "report": run_report,
    "online": run_online,
    "online_report": run_online_report,
}
ORDER = ("collect", "label", "label_regret", "vpl", "cpl", "reward_rc", "reward_sopl")


def run_stage(name: str, run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Runs (or skips, if done) the stage called ``name``; ValueError for an unknown name."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    for stage_dir in stage_dirs(name, cfg):  # settings checked and recorded before any work
        claim(run, stage_dir, cfg)
    return STAGES[name](run, cfg)


def stage_dirs(name: str, cfg: ml_collections.ConfigDict) -> list[str]:
    """The stage directories stage ``name`` writes."""
    if name in ("downstream", "online"):
        chosen = cfg.methods if name == "downstream" else cfg.online_methods
        return [f"{'down' if name == 'downstream' else 'online'}-{m}" for m in chosen]
    return [] if name.endswith("report") else [directory_of(name, cfg)]


def stages_for(cfg: ml_collections.ConfigDict, online: bool = False) -> list[str]:
    """The upstream stages ``cfg.methods`` (``online``: ``cfg.online_methods``) need, in order."""
    if online:
        check_jax_env(cfg.env)  # before any upstream work
    names = cfg.online_methods if online else cfg.methods
    needed = {"collect"} | {s for m in names for s in methods.get(m).needs}
    return [s for s in ORDER if s in needed]


def _finished(run: RunDir, stage: str) -> list[str]:
    """``stage`` if it is done, and the finished programs ``sweep-<s>/<label>`` standing for it."""
    sweeps = [s for s, d in STANDS_FOR.items() if d == stage] or [stage]
    programs = [p for s in sweeps for p in run.done_under(f"sweep-{s}")]
    return ([stage] if run.done(stage) is not None else []) + programs


def check_settings(run: RunDir, old: dict, cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError if a finished stage or sweep program of ``run`` was made with other
    settings."""
    before, now = flatten(old), flatten(cfg.to_dict())
    clashes = [
        f"{k}: {before[k]!r} -> {now[k]!r} (stage {done!r} is done)"
        for k in sorted(set(before) & set(now))  # settings added later keep old behaviour
        if before[k] != now[k]
        for stage in dict.fromkeys(_stages_of(k))
        for done in _finished(run, stage)
    ]
    if clashes:
        raise SettingsError(
            f"run directory {run.root} has finished stages made with other settings:\n  "
            + "\n  ".join(clashes)
            + "\nuse a new --workdir, or delete those stage directories (and the later "
            "stages that use them) to redo them"
        )
