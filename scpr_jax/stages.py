"""Pipeline stages over a run directory: each writes its artifacts atomically, then DONE.json.

A stage that finished is skipped (its recorded summary is returned), so re-running a command
on a half-finished run directory resumes at the first unfinished stage.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from scpr_jax.data import collect as collect_lib
from scpr_jax.data import preferences, storage, theory, value
from scpr_jax.envs import make, make_task
from scpr_jax.runs import RunDir, atomic_write_json

STREAMS = {
    "collect": 1,
    "label": 2,
    "value": 3,
    "vae": 4,
    "iql": 5,
    "eval": 6,
}  # fold_in ids of each stage's RNG stream


def _key(cfg, stage: str) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), STREAMS[stage])


def _skip(run: RunDir, stage: str) -> dict | None:
    done = run.done(stage)
    if done is not None:
        print(f"[{stage}] already done in {run.stage(stage)}: skipped")
    return done


def _fmt(goal) -> str:
    return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(goal)) + "]"


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
            f"  user {z} goal {_fmt(g)} (nearest downstream goal "
            f"{_fmt(goals[i])}): "
            f"unsafe fraction {first:.3f} before the penalty switch, {second:.3f} after"
        )
    return lines


def run_collect(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Collects D_tau with the goal-conditioned SAC; writes collect/trajectories.h5."""
    if (done := _skip(run, "collect")) is not None:
        return done
    out = run.stage("collect")
    env = make(f"{cfg.env}/downstream")
    total = int(cfg.collect.total_steps)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="[collect] transitions", unit="tr", mininterval=2) as bar:

        def progress(done, metrics):
            bar.update(done - bar.n)
            shown = ("episode_return", "cost", "penalty")
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in shown})

        trajs, summary = collect_lib.collect(_key(cfg, "collect"), env, cfg.collect, progress)
    storage.save_trajectories(out / "trajectories.h5", trajs, env.name)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "summary.json", summary)
    print(
        f"[collect] {summary['transitions']} transitions, {summary['episodes']} episodes, "
        f"unsafe fraction {summary['unsafe_fraction']:.3f} "
        f"({summary['seconds']:.0f}s) -> {out / 'trajectories.h5'}"
    )
    for line in _crowd_table(summary, env.task):
        print(line)
    run.mark_done("collect", {"summary": summary, "config": cfg.collect.to_dict()})
    return run.done("collect")


def run_label(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Labels crowd preference sets on D_tau; writes label/preferences.h5 and a summary."""
    if (done := _skip(run, "label")) is not None:
        return done
    out = run.stage("label")
    env_name = f"{cfg.env}/downstream"
    task = make_task(cfg.env)
    trajs = storage.load_trajectories(run.stage("collect") / "trajectories.h5", env=env_name)
    t0 = time.perf_counter()
    value_fn = None
    if cfg.label.kind == "regret":
        goals = preferences.labels.crowd_goals(task, cfg.label.n_users)
        data = value.value_data(trajs, task, goals, cfg.label.K)
        print(f"[label] fitting {len(goals)} per-user value functions ({cfg.value.steps} steps)")
        state, _ = value.fit_user_values(_key(cfg, "value"), data, cfg.value)
        value_fn = value.user_value_fn(state, data, cfg.value)
    prefs = preferences.make_preferences(_key(cfg, "label"), trajs, task, cfg.label, value_fn)
    summary = preferences.summary(prefs)
    check = theory.consistency_check(
        trajs, prefs, task, prefs.user_goals, cfg.label.K, cfg.label.segment_len
    )
    summary["theorem_4_2"] = check._asdict()
    summary["seconds"] = time.perf_counter() - t0
    storage.save_preferences(
        out / "preferences.h5", prefs, env_name, trajs.size, meta=cfg.label.to_dict()
    )
    atomic_write_json(out / "summary.json", summary)
    print(
        f"[label] {prefs.n_sets} sets x {prefs.n_pairs} pairs x {prefs.segment_len} steps, "
        f"{prefs.n_users} users ({cfg.label.kind} labels, {summary['seconds']:.0f}s) "
        f"-> {out / 'preferences.h5'}"
    )
    for z in range(prefs.n_users):
        print(
            f"  user {z} goal {_fmt(prefs.user_goals[z])}: "
            f"{summary['sets_per_user'][z]} sets, label balance "
            f"{summary['label_balance'][z]:.3f}"
        )
    print(
        f"  users disagree on {summary['disagreement']:.3f} of shared pairs; Theorem 4.2: "
        f"K={check.K:g} vs bound {check.bound:.1f}, {check.n_safe_unsafe} (safe, unsafe) pairs, "
        f"{check.consistent_fraction:.3f} labelled safe-first by every user"
    )
    run.mark_done("label", {"summary": summary, "config": cfg.label.to_dict()})
    return run.done("label")


def run_skills(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Safe-VPL skills: BT-VAE on D_pref, then latent-conditioned IQL on D_tau; evaluates
    each crowd user's mean posterior latent in every user's crowd environment."""
    if (done := _skip(run, "skills")) is not None:
        return done
    from scpr_jax.agents.iql import policy_action
    from scpr_jax.skills.evaluate import latent_returns
    from scpr_jax.skills.train_vae import model_config, train_vae
    from scpr_jax.skills.vpl import train_skills

    out = run.stage("skills")
    task = make_task(cfg.env)
    env_name = f"{cfg.env}/downstream"
    trajs = storage.load_trajectories(run.stage("collect") / "trajectories.h5", env=env_name)
    prefs, _ = storage.load_preferences(
        run.stage("label") / "preferences.h5", env=env_name, trajs=trajs
    )
    t0 = time.perf_counter()
    with tqdm(total=int(cfg.vae.steps), desc="[skills] VAE updates", mininterval=2) as bar:
        vae_state, vae_summary = train_vae(
            _key(cfg, "vae"), trajs, prefs, task, cfg.vae, out / "vae",
            progress=lambda step, total, m: bar.update(step - bar.n),
        )  # fmt: skip
    print(
        f"[skills] VAE held-out preference accuracy per user: "
        f"{[round(a, 3) for a in vae_summary['accuracy_per_user']]}"
    )
    with tqdm(total=int(cfg.iql.steps), desc="[skills] IQL updates", mininterval=2) as bar:
        iql_state = train_skills(
            _key(cfg, "iql"), trajs, task, vae_state.params, model_config(cfg.vae), cfg.iql,
            out / "iql", progress=lambda step, total, m: bar.update(step - bar.n),
        )  # fmt: skip
    latents = jnp.asarray(vae_summary["posterior_mean_per_user"])
    ret, cost = latent_returns(
        _key(cfg, "eval"), cfg.env, lambda o: policy_action(iql_state.policy, o), latents,
        n_episodes=int(cfg.eval_episodes),
    )  # fmt: skip
    collect_summary = run.done("collect")["summary"]
    summary = {
        "vae": vae_summary,
        "return_latent_by_user": ret.tolist(),  # [latent of user i, environment of user u]
        "cost_latent_by_user": cost.tolist(),
        "unsafe_half_episode_cost": collect_summary["episode_cost_first_half"],
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(out / "summary.json", summary)
    print(
        "[skills] mean return / cost of user i's posterior latent (rows) in user u's crowd "
        "environment (columns):"
    )
    for i in range(ret.shape[0]):
        cells = "  ".join(f"{ret[i, u]:8.2f} / {cost[i, u]:6.1f}" for u in range(ret.shape[1]))
        print(f"  latent of user {i}: {cells}")
    print(f"  unsafe half of D_tau: mean episode cost {summary['unsafe_half_episode_cost']:.1f}")
    run.mark_done("skills", {"summary": summary})
    return run.done("skills")
