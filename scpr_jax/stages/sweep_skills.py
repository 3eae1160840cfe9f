"""Sweeps of the data and skill stages: collect, vae, iql, cpl, rc and sopl.

Each stage's training function takes a `train.Members` as ``seeds``: one vmapped program
per combination of static settings. Which settings are dynamic is read off the stage's
initial state: a setting of the stage's config section is swept as a vmapped axis exactly
when a per-member float leaf of that name exists (`dynamic_settings`); every other one
splits the grid. IQL and CPL train on a frozen VAE: the finished skill stage's own (vpl/,
cpl/), else one trained with the same key and settings into ``sweep-<stage>/vae``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import jax
import ml_collections

from scpr_jax.envs import make, make_task
from scpr_jax.envs.registry import REAL
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.stages.common import load_data, progress_bar, skip, stage_key
from scpr_jax.stages.data import regret_stage
from scpr_jax.stages.sweep import Plan
from scpr_jax.train import Members
from scpr_jax.train.sweep import sweepable

UPSTREAM = {  # stage -> pipeline stages it reads
    "collect": (),
    "vae": ("collect", "label"),
    "iql": ("collect", "label"),
    "cpl": ("collect", "label_regret"),
    "rc": ("collect", "label"),
    "sopl": ("collect", "label"),
}
METRICS = {  # stage -> summary entries reported per member
    "collect": ("unsafe_fraction", "episode_return_first_half", "episode_cost_first_half",
                "episode_return_second_half", "episode_cost_second_half"),
    "vae": ("accuracy",),  # held-out preference accuracy
    "iql": ("q_loss", "v_loss", "policy_loss"),  # final chunk's mean losses
    "cpl": ("accuracy",),  # held-out regret-model accuracy
    "rc": ("accuracy", "bce"),  # held-out pooled pair accuracy
    "sopl": ("accuracy", "bce"),
}  # fmt: skip

Init = Callable[[ml_collections.ConfigDict], Callable[[jax.Array], object]]
Train = Callable[[ml_collections.ConfigDict, Members, object], dict]


def dynamic_settings(init: Init, section: ml_collections.ConfigDict) -> list[str]:
    """Settings of ``section`` held by a per-member float leaf of the same name in the state
    ``init(section)(key)`` builds (traced abstractly: nothing is allocated)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    leaves = set(sweepable(jax.eval_shape(jax.vmap(init(section)), keys), 2))
    return [k for k in section if k in leaves]


def frozen_vae(run: RunDir, cfg: ml_collections.ConfigDict, stage: str, trajs, prefs):
    """(VAE state, its VAEConfig) of the skill stage ``stage`` ("iql": vpl, "cpl": cpl)."""
    from scpr_jax.skills.train_vae import model_config, train_vae

    owner, section = ("vpl", "vae") if stage == "iql" else ("cpl", "cpl_vae")
    name = f"{owner}/vae" if run.done(owner) else f"sweep-{stage}/vae"
    workdir, config = run.stage(name), cfg[section]
    with progress_bar(f"[sweep-{stage}] frozen VAE updates", config.steps) as bar:
        key, task = stage_key(cfg, section), make_task(cfg.env)
        state, summary = train_vae(key, trajs, prefs, task, config, workdir, bar)  # or restored
    if name.startswith("sweep-"):  # a sweep program, as such checked by `check_settings`
        run.mark_done(name, {"summary": summary, "config": config.to_dict()})
    return state, model_config(config)


def stage_programs(run: RunDir, cfg: ml_collections.ConfigDict, stage: str) -> tuple[Init, Train]:
    """(init(section) -> init(key), train(section, members, workdir) -> summary) of ``stage``."""
    from scpr_jax.skills import batches, cpl, train_cpl, train_rewards, train_vae, vae, vpl

    task = make_task(cfg.env)
    if stage == "collect":
        from scpr_jax.data.collect import collect, collector_init

        if cfg.env.startswith(REAL):
            raise ValueError(f"a collect sweep needs a JAX environment, not {cfg.env!r}")
        env = make(f"{cfg.env}/downstream")

        def run_collect(c, members, out):
            total = int(c.total_steps)  # per member
            with progress_bar("[sweep-collect] transitions", total, ("cost",)) as bar:
                key, progress = stage_key(cfg, "collect"), lambda n, m: bar(n, total, m)
                _, summaries = collect(key, env, c, progress, seeds=members)
            return {k: [s[k] for s in summaries] for k in summaries[0]}

        return (lambda c: lambda k: collector_init(k, env, c)), run_collect
    trajs, prefs = load_data(run, cfg, regret_stage(cfg) if stage == "cpl" else "label")
    if stage == "vae":
        example = batches.set_example(batches.set_data(trajs, prefs, task, "train"), 0)

        def run_vae(c, members, out):
            with progress_bar("[sweep-vae] VAE updates", c.steps, ("accuracy",)) as bar:
                key = stage_key(cfg, "vae")
                return train_vae.train_vae(key, trajs, prefs, task, c, out, bar, members)[1]

        return (lambda c: lambda k: vae.vae_init(k, example, train_vae.model_config(c))), run_vae
    if stage in ("rc", "sopl"):
        from scpr_jax.skills import reward_models as rm

        def run_reward(c, members, out):
            with progress_bar(f"[sweep-{stage}] updates", 0, ("loss",)) as bar:
                key = stage_key(cfg, f"reward-{stage}")
                fit = train_rewards.train_reward_model
                return fit(key, trajs, prefs, task, c, out, bar, members)[1]

        return (lambda c: lambda k: rm.reward_init(k, task.obs_size, task.action_size, c)), (
            run_reward
        )
    vae_state, vae_config = frozen_vae(run, cfg, stage, trajs, prefs)
    latent = vae_config.latent_dim
    if stage == "cpl":

        def run_cpl(c, members, out):
            with progress_bar("[sweep-cpl] decoder updates", c.steps, ("accuracy",)) as bar:
                key, params = stage_key(cfg, "cpl"), vae_state.params
                fit = train_cpl.train_cpl
                return fit(key, trajs, prefs, task, params, vae_config, c, out, bar, members)[1]

        return (
            lambda c: lambda k: cpl.cpl_init(k, task.obs_size, latent, task.action_size, c)
        ), run_cpl
    from scpr_jax.agents.iql import iql_init

    def run_iql(c, members, out):
        with progress_bar("[sweep-iql] IQL updates", c.steps) as bar:
            key, params = stage_key(cfg, "iql"), vae_state.params
            vpl.train_skills(key, trajs, task, params, vae_config, c, out, bar, members)
        last = json.loads((out / "train.jsonl").read_text().splitlines()[-1])
        return {k: v for k, v in last.items() if k != "step"}  # per member [M]

    obs = task.obs_size + latent
    return (lambda c: lambda k: iql_init(k, obs, task.action_size, c)), run_iql


def skill_plan(run: RunDir, cfg: ml_collections.ConfigDict, stage: str) -> Plan:
    """The sweep `Plan` of a data/skill stage; runs (or skips) its upstream stages first."""
    from scpr_jax.stages import run_stage

    for name in UPSTREAM[stage]:
        run_stage(name, run, cfg)
    init, train = stage_programs(run, cfg, stage)
    dynamic = {k: k for k in dynamic_settings(init, cfg[stage])}

    def program(cfg_c: ml_collections.ConfigDict, members: Members, name: str) -> dict:
        if (done := skip(run, name)) is not None:
            return done["summary"]
        t0 = time.perf_counter()
        out = run.stage(name)
        summary = {
            "seeds": list(members.seeds),
            "hparams": {k: list(v) for k, v in members.hparams.items()},
            **train(cfg_c[stage], members, out),
            "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(out / "summary.json", summary)
        run.mark_done(name, {"summary": summary, "config": cfg_c[stage].to_dict()})
        return run.done(name)["summary"]

    return Plan(dynamic, lambda cfg_c: None, program, METRICS[stage])
