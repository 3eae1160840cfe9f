"""Data stages: collecting D_tau and labelling the crowd's preference sets.

Every stage writes its artifacts atomically, then DONE.json; a finished stage is skipped
(its recorded summary is returned), so re-running a command resumes a half-finished run.
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np

from scpr_jax.data import collect as collect_lib
from scpr_jax.data import preferences, storage, theory, value
from scpr_jax.envs import make_task
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.stages.common import check_finite, fmt, load_data, progress_bar, skip, stage_key
from scpr_jax.train.loop import Checkpoints


def _crowd_table(summary: dict, task) -> list[str]:
    """Unsafe fraction before/after the penalty switch at the downstream goal nearest each
    crowd user's goal."""
    goals = np.asarray(summary["goals"])
    lines = []
    for z, g in enumerate(np.asarray(task.user_goals)):
        i = int(np.argmin(((goals - g) ** 2).sum(-1)))
        first = summary["unsafe_fraction_by_goal_first_half"][i]
        second = summary["unsafe_fraction_by_goal_second_half"][i]
        lines.append(
            f"  user {z} goal {fmt(g)} (nearest downstream goal "
            f"{fmt(goals[i])}): "
            f"unsafe fraction {first:.3f} before the penalty switch, {second:.3f} after"
        )
    return lines


def run_collect(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Collects D_tau with the goal-conditioned SAC; writes collect/trajectories.h5."""
    if (done := skip(run, "collect")) is not None:
        return done
    out = run.stage("collect")
    env_name = f"{cfg.env}/downstream"  # collect builds it (real:<task>: on the host)
    total = int(cfg.collect.total_steps)
    t0 = time.perf_counter()
    shown = ("episode_return", "cost", "penalty")
    with progress_bar("[collect] transitions", shown, unit="tr") as bar:
        trajs, summary = collect_lib.collect(
            stage_key(cfg, "collect"), env_name, cfg.collect,
            lambda done, metrics: bar(done, total, metrics), workdir=out,
        )  # fmt: skip
    fields = {f: getattr(trajs, f) for f in ("obs", "action", "reward", "cost", "next_obs")}
    check_finite("collect", {**fields, "info": trajs.info},
                 "the collector diverged (e.g. collect.lr too high): ")  # fmt: skip
    storage.save_trajectories(out / "trajectories.h5", trajs, env_name)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", summary)
    print(
        f"[collect] {summary['transitions']} transitions, {summary['episodes']} episodes, "
        f"unsafe fraction {summary['unsafe_fraction']:.3f} "
        f"({summary['seconds']:.0f}s) -> {out / 'trajectories.h5'}"
    )
    for line in _crowd_table(summary, make_task(cfg.env)):
        print(line)
    run.mark_done("collect", {"summary": summary, "config": cfg.collect.to_dict()})
    Checkpoints.remove(out)  # the collector's checkpoint holds D_tau again: no longer needed
    return run.done("collect")


def regret_stage(cfg: ml_collections.ConfigDict) -> str:
    """The stage holding regret labels: "label" when it is already regret, else "label-regret"."""
    return "label" if cfg.label.kind == "regret" else "label-regret"


def run_label(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Labels crowd preference sets (``cfg.label.kind``); writes label/preferences.h5."""
    return _label(run, cfg, "label", cfg.label)


def run_label_regret(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Regret labels for Safe-CPL on the same segments as "label" (same RNG stream)."""
    if regret_stage(cfg) == "label":
        return run_label(run, cfg)
    label_cfg = ml_collections.ConfigDict(cfg.label.to_dict())
    label_cfg.kind = "regret"
    return _label(run, cfg, "label-regret", label_cfg)


def _label(run: RunDir, cfg, stage: str, label_cfg: ml_collections.ConfigDict) -> dict:
    if (done := skip(run, stage)) is not None:
        return done
    out = run.stage(stage)
    env_name = f"{cfg.env}/downstream"
    task = make_task(cfg.env)
    trajs, _ = load_data(run, cfg, label_stage=None)
    t0 = time.perf_counter()
    value_fn = None
    if label_cfg.kind == "regret":
        goals = preferences.labels.crowd_goals(task, label_cfg.n_users)
        data = value.value_data(trajs, task, goals, label_cfg.K)
        print(f"[{stage}] fitting {len(goals)} per-user value functions ({cfg.value.steps} steps)")
        state, _ = value.fit_user_values(stage_key(cfg, "value"), data, cfg.value)
        check_finite(stage, {"value functions": state}, "e.g. value.lr too high: ")
        value_fn = value.user_value_fn(state, data, cfg.value)
    prefs = preferences.make_preferences(stage_key(cfg, "label"), trajs, task, label_cfg, value_fn)
    check_finite(stage, {"labels y": prefs.y})
    summary = preferences.summary(prefs)
    check = theory.consistency_check(
        trajs, prefs, task, prefs.user_goals, label_cfg.K, label_cfg.segment_len
    )
    summary["theorem_4_2"] = check._asdict()
    summary["seconds"] = time.perf_counter() - t0
    storage.save_preferences(
        out / "preferences.h5", prefs, env_name, trajs.size, meta=label_cfg.to_dict()
    )
    atomic_write_json(out / "summary.json", summary)
    print(
        f"[{stage}] {prefs.n_sets} sets x {prefs.n_pairs} pairs x {prefs.segment_len} steps, "
        f"{prefs.n_users} users ({label_cfg.kind} labels, {summary['seconds']:.0f}s) "
        f"-> {out / 'preferences.h5'}"
    )
    for z in range(prefs.n_users):
        print(
            f"  user {z} goal {fmt(prefs.user_goals[z])}: "
            f"{summary['sets_per_user'][z]} sets, label balance "
            f"{summary['label_balance'][z]:.3f}"
        )
    print(
        f"  users disagree on {summary['disagreement']:.3f} of shared pairs; Theorem 4.2: "
        f"K={check.K:g} vs bound {check.bound:.1f}, {check.n_safe_unsafe} (safe, unsafe) pairs, "
        f"{check.consistent_fraction:.3f} labelled safe-first by every user"
    )
    run.mark_done(stage, {"summary": summary, "config": label_cfg.to_dict()})
    return run.done(stage)
