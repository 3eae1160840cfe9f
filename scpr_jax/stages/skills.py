"""Preference-learning stages: Safe-VPL skills, Safe-CPL skills, RC/SOPL reward models.

Each trains through the shared loop inside its stage directory (resuming from its last
checkpoint) and, when it finishes, saves what later stages use as versioned artifacts
(`scpr_jax.artifacts`): ``skill.json`` (the frozen skill a method acts through) and
``vae.json`` (the BT-VAE a sweep of the skill's decoder reuses) for `vpl` and `cpl`,
``reward.json`` for `reward-rc` / `reward-sopl`. Later stages load those and never call the
training functions here.
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import ml_collections
import numpy as np

from scpr_jax.agents.iql import policy_action
from scpr_jax.artifacts import save_skill
from scpr_jax.envs import make_task
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.skills.cpl import cpl_action, cpl_skill
from scpr_jax.skills.evaluate import latent_returns
from scpr_jax.skills.reward_models import save_reward
from scpr_jax.skills.train_cpl import train_cpl
from scpr_jax.skills.train_rewards import train_reward_model
from scpr_jax.skills.train_vae import model_config, save_vae, train_vae
from scpr_jax.skills.vpl import train_skills, vpl_skill
from scpr_jax.stages.common import check_finite, load_data, progress_bar, skip, stage_key
from scpr_jax.stages.data import regret_stage


def vpl_skills(run: RunDir, cfg: ml_collections.ConfigDict):
    """Trains (or resumes) the Safe-VPL BT-VAE and IQL skills -> (vae_state, vae_summary, iql)."""
    task = make_task(cfg.env)
    trajs, prefs = load_data(run, cfg, "label")
    out = run.stage("vpl")
    with progress_bar("[vpl] VAE updates", ("accuracy",)) as bar:
        vae_state, vae_summary = train_vae(
            stage_key(cfg, "vae"), trajs, prefs, task, cfg.vae, out / "vae", bar
        )
    with progress_bar("[vpl] IQL updates") as bar:
        iql_state = train_skills(
            stage_key(cfg, "iql"), trajs, task, vae_state.params, model_config(cfg.vae),
            cfg.iql, out / "iql", bar,
        )  # fmt: skip
    return vae_state, vae_summary, iql_state


def cpl_skills(run: RunDir, cfg: ml_collections.ConfigDict):
    """Trains (or resumes) Safe-CPL: BT-VAE on regret labels, then the CPL policy decoder
    with that VAE frozen -> (vae_state, vae_summary, cpl_state, cpl_summary)."""
    task = make_task(cfg.env)
    trajs, prefs = load_data(run, cfg, regret_stage(cfg))
    out = run.stage("cpl")
    with progress_bar("[cpl] VAE updates", ("accuracy",)) as bar:
        vae_state, vae_summary = train_vae(
            stage_key(cfg, "cpl_vae"), trajs, prefs, task, cfg.cpl_vae, out / "vae", bar
        )
    with progress_bar("[cpl] decoder updates", ("accuracy",)) as bar:
        cpl_state, cpl_summary = train_cpl(
            stage_key(cfg, "cpl"), trajs, prefs, task, vae_state.params,
            model_config(cfg.cpl_vae), cfg.cpl, out / "policy", bar,
        )  # fmt: skip
    return vae_state, vae_summary, cpl_state, cpl_summary


def reward_model(run: RunDir, cfg: ml_collections.ConfigDict, kind: str):
    """Trains (or resumes) the pooled RC or SOPL reward -> (state, summary)."""
    stage = f"reward-{kind}"
    trajs, prefs = load_data(run, cfg, "label")
    with progress_bar(f"[{stage}] updates", ("loss",)) as bar:
        state, summary = train_reward_model(
            stage_key(cfg, stage), trajs, prefs, make_task(cfg.env), cfg[kind],
            run.stage(stage), bar,
        )  # fmt: skip
    return state, summary


def _latent_table(name: str, ret: np.ndarray, cost: np.ndarray, unsafe_cost: float) -> None:
    print(
        f"[{name}] mean return / cost of user i's posterior latent (rows) in user u's crowd "
        "environment (columns):"
    )
    for i in range(ret.shape[0]):
        cells = "  ".join(f"{ret[i, u]:8.2f} / {cost[i, u]:6.1f}" for u in range(ret.shape[1]))
        print(f"  latent of user {i}: {cells}")
    print(f"  unsafe half of D_tau: mean episode cost {unsafe_cost:.1f}")


def _finish(run: RunDir, cfg, stage: str, act, latents, summary: dict, t0: float) -> dict:
    """Rolls out every user's mean posterior latent, prints and records the stage summary."""
    ret, cost = latent_returns(
        stage_key(cfg, "eval"), cfg.env, act, jnp.asarray(latents),
        n_episodes=int(cfg.eval_episodes), max_steps=int(cfg.eval_max_steps) or None,
    )  # fmt: skip
    summary.update(
        return_latent_by_user=ret.tolist(),  # [latent of user i, environment of user u]
        cost_latent_by_user=cost.tolist(),
        unsafe_half_episode_cost=run.done("collect")["summary"]["episode_cost_first_half"],
        seconds=time.perf_counter() - t0,
    )
    atomic_write_json(run.stage(stage) / "summary.json", summary)
    _latent_table(stage, ret, cost, summary["unsafe_half_episode_cost"])
    run.mark_done(stage, {"summary": summary})
    return run.done(stage)


def run_vpl(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Safe-VPL skills: BT-VAE on D_pref, then latent-conditioned IQL on D_tau; evaluates
    each crowd user's mean posterior latent in every user's crowd environment."""
    if (done := skip(run, "vpl")) is not None:
        return done
    t0 = time.perf_counter()
    vae_state, vae_summary, iql_state = vpl_skills(run, cfg)
    obs_size = make_task(cfg.env).obs_size
    save_skill(run.stage("vpl"), vpl_skill(iql_state.policy, vae_state.params, obs_size))
    save_vae(run.stage("vpl"), vae_state.params, cfg.vae)
    print(
        "[vpl] VAE held-out preference accuracy per user: "
        f"{[round(a, 3) for a in vae_summary['accuracy_per_user']]}"
    )
    latents = vae_summary["posterior_mean_per_user"]
    act = lambda o: policy_action(iql_state.policy, o)  # noqa: E731
    return _finish(run, cfg, "vpl", act, latents, {"vae": vae_summary}, t0)


def run_cpl(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Safe-CPL skills: BT-VAE on regret labels, then the CPL decoder; evaluated like VPL."""
    if (done := skip(run, "cpl")) is not None:
        return done
    t0 = time.perf_counter()
    vae_state, vae_summary, cpl_state, cpl_summary = cpl_skills(run, cfg)
    obs_size = make_task(cfg.env).obs_size
    save_skill(run.stage("cpl"), cpl_skill(cpl_state.params, vae_state.params, obs_size))
    save_vae(run.stage("cpl"), vae_state.params, cfg.cpl_vae)
    print(
        "[cpl] held-out accuracy per user: VAE "
        f"{[round(a, 3) for a in vae_summary['accuracy_per_user']]}, decoder "
        f"{[round(a, 3) for a in cpl_summary['accuracy_per_user']]}"
    )
    act = lambda x: cpl_action(cpl_state.params, x[..., :obs_size], x[..., obs_size:])  # noqa: E731
    summary = {"vae": vae_summary, "decoder": cpl_summary}
    return _finish(run, cfg, "cpl", act, vae_summary["posterior_mean_per_user"], summary, t0)


def _run_reward(run: RunDir, cfg: ml_collections.ConfigDict, kind: str) -> dict:
    stage = f"reward-{kind}"
    if (done := skip(run, stage)) is not None:
        return done
    t0 = time.perf_counter()
    state, summary = reward_model(run, cfg, kind)
    check_finite(stage, {"reward model": state.params}, f"e.g. {kind}.lr too high: ")
    save_reward(run.stage(stage), state.params, kind)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_json(run.stage(stage) / "summary.json", summary)
    print(
        f"[{stage}] {summary['train_pairs']} pooled training pairs, {summary['updates']} "
        f"updates; held-out pair accuracy {summary['accuracy']:.3f}; mean predicted reward "
        f"on safe rows {summary['reward_safe_rows']:.3f}, on unsafe rows "
        f"{summary['reward_unsafe_rows']:.3f}"
    )
    run.mark_done(stage, {"summary": summary, "config": cfg[kind].to_dict()})
    return run.done(stage)


def run_reward_rc(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """The RC baseline's unimodal BT reward on the pooled crowd."""
    return _run_reward(run, cfg, "rc")


def run_reward_sopl(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """The SOPL baseline's safety-residual reward (task return inside the logits)."""
    return _run_reward(run, cfg, "sopl")
