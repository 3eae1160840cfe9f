"""The pipeline's stages by name, the upstream stages each method needs, and the check that a
run directory's finished stages were made with the current settings.

Upstream stages run in `ORDER`; which ones a command runs is read off the methods registry
(`Method.needs`). `SECTIONS` says which stage directories each top-level setting feeds; the
downstream stages' dependencies (their own section, their reward weight) come from the
registry too, so a new method needs no line here.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from scpr_jax import methods
from scpr_jax.runs import RunDir
from scpr_jax.stages.data import run_collect, run_label, run_label_regret
from scpr_jax.stages.downstream import run_downstream, run_report
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
SECTIONS = {  # top-level setting -> upstream stage directories whose results depend on it
    "collect": ("collect",),
    "label": ("label", "label-regret"),
    "value": ("label", "label-regret"),
    "vae": ("vpl",),
    "iql": ("vpl",),
    "eval_episodes": ("vpl", "cpl"),
    "eval_max_steps": ("vpl", "cpl"),
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


def run_stage(name: str, run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Runs (or skips, if done) the stage called ``name``; ValueError for an unknown name."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    return STAGES[name](run, cfg)


def stages_for(cfg: ml_collections.ConfigDict, online: bool = False) -> list[str]:
    """The upstream stages ``cfg.methods`` (``online``: ``cfg.online_methods``) need, in order."""
    if online:
        check_jax_env(cfg.env)  # before any upstream work
    names = cfg.online_methods if online else cfg.methods
    needed = {"collect"} | {s for m in names for s in methods.get(m).needs}
    return [s for s in ORDER if s in needed]


def _downstream_stages(key: str) -> tuple[str, ...]:
    """The ``down-<m>`` / ``online-<m>`` directories whose results depend on setting ``key``."""
    top, _, rest = key.partition(".")
    section = rest.partition(".")[0]
    out = []
    for m in methods.REGISTRY.values():
        prefixes = ("down", "online") if m.online else ("down",)
        if top in ("downstream", "eval_max_steps"):
            out += [f"{p}-{m.name}" for p in prefixes]
        elif (top, section) in (("td3bc", m.section), ("td3", m.section)):
            out.append(f"{'down' if top == 'td3bc' else 'online'}-{m.name}")
        elif key == m.omega:  # the weight of its reward term (rc.weight, ...)
            out.append(f"down-{m.name}")
    return tuple(out)


def _stages_of(key: str) -> tuple[str, ...]:
    top = key.partition(".")[0]
    if top in EVERY_STAGE:
        return ("collect",)  # everything downstream of collect depends on it too
    return SECTIONS.get(top, ()) + _downstream_stages(key)


def _finished(run: RunDir, stage: str) -> list[str]:
    """``stage`` if it is done, and the finished programs ``sweep-<s>/<label>`` standing for it."""
    programs = [p for s in SWEEPS.get(stage, (stage,)) for p in run.done_under(f"sweep-{s}")]
    return ([stage] if run.done(stage) is not None else []) + programs


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_settings(run: RunDir, old: dict, cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError if a finished stage or sweep program of ``run`` was made with other
    settings."""
    before, now = _flatten(old), _flatten(cfg.to_dict())
    clashes = [
        f"{k}: {before[k]!r} -> {now[k]!r} (stage {done!r} is done)"
        for k in sorted(set(before) & set(now))  # settings added later keep old behaviour
        if before[k] != now[k]
        for stage in dict.fromkeys(_stages_of(k))
        for done in _finished(run, stage)
    ]
    if clashes:
        raise ValueError(
            f"run directory {run.root} has finished stages made with other settings:\n  "
            + "\n  ".join(clashes)
            + "\nuse a new --workdir, or delete those stage directories (and the later "
            "stages that use them) to redo them"
        )
