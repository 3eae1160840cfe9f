"""Pipeline stages over a run directory (`scpr` commands call these by name)."""

from __future__ import annotations

import ml_collections

from scpr_jax.downstream.online import check_jax_env
from scpr_jax.stages.data import run_collect, run_label, run_label_regret
from scpr_jax.stages.downstream import run_downstream, run_report
from scpr_jax.stages.online import run_online, run_online_report
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


def stages_for(cfg: ml_collections.ConfigDict, online: bool = False) -> list[str]:
    """The upstream stages ``cfg.methods`` (``online``: ``cfg.online_methods``) need, in order."""
    if online:
        check_jax_env(cfg.env)  # before any upstream work
    methods = cfg.online_methods if online else cfg.methods
    needed = {"collect"} | {s for m in methods for s in NEEDS[m]}
    return [s for s in ORDER if s in needed]


SECTION_STAGES = {  # top-level setting -> stage directories whose results depend on it
    "collect": ("collect",),
    "label": ("label", "label-regret"),
    "value": ("label", "label-regret"),
    "vae": ("vpl",),
    "iql": ("vpl",),
    "eval_episodes": ("vpl", "cpl"),
    "eval_max_steps": ("vpl", "cpl", *(f"{p}-{m}" for p in ("down", "online") for m in NEEDS)),
    "cpl_vae": ("cpl",),
    "cpl": ("cpl",),
    "rc": ("reward-rc",),
    "sopl": ("reward-sopl",),
}
EVERY_STAGE = ("env", "preset", "seed")
SWEEPS = {  # stage directory -> the sweep stages whose programs stand for it (else its name)
    "vpl": ("vae", "iql"),
    "reward-rc": ("rc",),
    "reward-sopl": ("sopl",),
}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _stages_of(key: str) -> tuple[str, ...]:
    top, _, rest = key.partition(".")
    if top in EVERY_STAGE:
        return ("collect",)  # everything downstream of collect depends on it too
    if top == "td3bc":
        return (f"down-{rest.partition('.')[0].replace('_', '-')}",)
    if top == "td3":
        return (f"online-{rest.partition('.')[0].replace('_', '-')}",)
    if top == "downstream":
        return tuple(f"{p}-{m}" for p in ("down", "online") for m in NEEDS)
    return SECTION_STAGES.get(top, ())


def _finished(run, stage: str) -> list[str]:
    """``stage`` if it is done, and the finished programs ``sweep-<s>/<label>`` standing for it."""
    programs = [p for s in SWEEPS.get(stage, (stage,)) for p in run.done_under(f"sweep-{s}")]
    return ([stage] if run.done(stage) is not None else []) + programs


def check_settings(run, old: dict, cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError if a finished stage or sweep program of ``run`` was made with other
    settings."""
    before, now = _flatten(old), _flatten(cfg.to_dict())
    clashes = [
        f"{k}: {before[k]!r} -> {now[k]!r} (stage {done!r} is done)"
        for k in sorted(set(before) & set(now))  # settings added later keep old behaviour
        if before[k] != now[k]
        for stage in _stages_of(k)
        for done in _finished(run, stage)
    ]
    if clashes:
        raise ValueError(
            f"run directory {run.root} has finished stages made with other settings:\n  "
            + "\n  ".join(clashes)
            + "\nuse a new --workdir, or delete those stage directories (and the later "
            "stages that use them) to redo them"
        )


def run_stage(name: str, run, cfg: ml_collections.ConfigDict) -> dict:
    """Runs (or skips, if done) the stage called ``name``."""
    return globals()[f"run_{name}"](run, cfg)


__all__ = [
    "run_collect",
    "run_cpl",
    "run_downstream",
    "run_label",
    "run_label_regret",
    "run_online",
    "run_online_report",
    "run_report",
    "run_reward_rc",
    "run_reward_sopl",
    "run_stage",
    "run_vpl",
    "check_settings",
    "stages_for",
]
