"""How each stage sweeps (`stages.sweep`): the data and skill stages' programs, and every
registered method's downstream and online stages.

A skill-stage sweep (`SKILL_PLANS`: collect, vae, iql, cpl, rc, sopl) is one entry here: the
pipeline stages it reads, the summary entries it reports and ``programs(run, cfg) -> (init,
train)``. Each stage's training function takes a `train.Members` as ``seeds``: one vmapped
program per combination of static settings. Which settings are dynamic is read off the
stage's initial state: a setting of the stage's config section is swept as a vmapped axis
exactly when a per-member float leaf of that name exists (`dynamic_settings`). IQL and CPL
train on a frozen VAE: the finished skill stage's artifact (vpl/, cpl/), else one trained with
the same key and settings into ``sweep-<stage>/vae`` (saved as an artifact there too).
A downstream sweep's dynamic settings are its method's `Method.sweep_leaves`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import ml_collections

from scpr_jax import methods
from scpr_jax.acting import is_host
from scpr_jax.agents.iql import iql_init
from scpr_jax.data.collect import collect, collector_init
from scpr_jax.envs import make, make_task
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.skills import batches, cpl, train_cpl, train_rewards, train_vae, vae, vpl
from scpr_jax.skills import reward_models as rm
from scpr_jax.stages.common import load_data, progress_bar, skip, stage_key
from scpr_jax.stages.data import regret_stage
from scpr_jax.stages.downstream import run_method
from scpr_jax.stages.fingerprint import claim
from scpr_jax.stages.online import run_online_method
from scpr_jax.stages.pipeline import ORDER, run_stage
from scpr_jax.train import Members
from scpr_jax.train.sweep import sweepable

Init = Callable[[ml_collections.ConfigDict], Callable[[jax.Array], object]]
Train = Callable[[ml_collections.ConfigDict, Members, object], dict]
Programs = Callable[[RunDir, ml_collections.ConfigDict], tuple[Init, Train]]


@dataclass(frozen=True)
class Plan:
    """How one stage sweeps: its dynamic settings, upstream work, one program, its metrics."""

    dynamic: dict  # config setting (short) -> state leaf it initialises
    upstream: Callable[[ml_collections.ConfigDict], None]  # runs (or skips) what it needs
    train: Callable[[ml_collections.ConfigDict, Members, str], dict]  # -> summary, lists [M]
    metrics: tuple[str, ...]  # summary entries reported per member


@dataclass(frozen=True)
class SkillPlan:
    """A data or skill stage's sweep: pipeline stages it reads, metrics, its programs."""

    upstream: tuple[str, ...]
    metrics: tuple[str, ...]
    programs: Programs


def dynamic_settings(init: Init, section: ml_collections.ConfigDict) -> list[str]:
    """Settings of ``section`` held by a per-member float leaf of the same name in the state
    ``init(section)(key)`` builds (traced abstractly: nothing is allocated)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    leaves = set(sweepable(jax.eval_shape(jax.vmap(init(section)), keys), 2))
    return [k for k in section if k in leaves]


def frozen_vae(run: RunDir, cfg: ml_collections.ConfigDict, stage: str, trajs, prefs):
    """(VAE parameters, their VAEConfig) of the skill stage of ``stage`` ("iql": vpl, "cpl":
    cpl): its saved artifact, else trained once into ``sweep-<stage>/vae`` and saved there."""
    owner, section = ("vpl", "vae") if stage == "iql" else ("cpl", "cpl_vae")
    name = owner if run.done(owner) else f"sweep-{stage}/vae"
    if run.done(name):
        return train_vae.load_vae(run.root / name)
    claim(run, name, cfg)
    config, workdir = cfg[section], run.stage(name)
    with progress_bar(f"[sweep-{stage}] frozen VAE updates") as bar:
        key, task = stage_key(cfg, section), make_task(cfg.env)
        state, summary = train_vae.train_vae(key, trajs, prefs, task, config, workdir, bar)
    train_vae.save_vae(workdir, state.params, config)
    run.mark_done(name, {"summary": summary, "config": config.to_dict()})  # a sweep program
    return state.params, train_vae.model_config(config)


def _collect(run: RunDir, cfg: ml_collections.ConfigDict) -> tuple[Init, Train]:
    if is_host(cfg.env):
        raise ValueError(f"a collect sweep needs a JAX environment, not {cfg.env!r}")
    env = make(f"{cfg.env}/downstream")

    def train(c, members, out):
        total = int(c.total_steps)  # per member
        with progress_bar("[sweep-collect] transitions", ("cost",)) as bar:
            key, progress = stage_key(cfg, "collect"), lambda n, m: bar(n, total, m)
            _, summaries = collect(key, env, c, progress, seeds=members)
        return {k: [s[k] for s in summaries] for k in summaries[0]}

    return (lambda c: lambda k: collector_init(k, env, c)), train


def _vae(run: RunDir, cfg: ml_collections.ConfigDict) -> tuple[Init, Train]:
    task, (trajs, prefs) = make_task(cfg.env), load_data(run, cfg, "label")
    example = batches.set_example(batches.set_data(trajs, prefs, task, "train"), 0)

    def train(c, members, out):
        with progress_bar("[sweep-vae] VAE updates", ("accuracy",)) as bar:
            key = stage_key(cfg, "vae")
            return train_vae.train_vae(key, trajs, prefs, task, c, out, bar, members)[1]

    return (lambda c: lambda k: vae.vae_init(k, example, train_vae.model_config(c))), train


def _reward(kind: str) -> Programs:
    def programs(run: RunDir, cfg: ml_collections.ConfigDict) -> tuple[Init, Train]:
        task, (trajs, prefs) = make_task(cfg.env), load_data(run, cfg, "label")

        def train(c, members, out):
            with progress_bar(f"[sweep-{kind}] updates", ("loss",)) as bar:
                key, fit = stage_key(cfg, f"reward-{kind}"), train_rewards.train_reward_model
                return fit(key, trajs, prefs, task, c, out, bar, members)[1]

        return (lambda c: lambda k: rm.reward_init(k, task.obs_size, task.action_size, c)), train

    return programs


def _cpl(run: RunDir, cfg: ml_collections.ConfigDict) -> tuple[Init, Train]:
    task, (trajs, prefs) = make_task(cfg.env), load_data(run, cfg, regret_stage(cfg))
    vae_params, vae_config = frozen_vae(run, cfg, "cpl", trajs, prefs)

    def train(c, members, out):
        with progress_bar("[sweep-cpl] decoder updates", ("accuracy",)) as bar:
            key, fit = stage_key(cfg, "cpl"), train_cpl.train_cpl
            return fit(key, trajs, prefs, task, vae_params, vae_config, c, out, bar, members)[1]

    sizes = (task.obs_size, vae_config.latent_dim, task.action_size)
    return (lambda c: lambda k: cpl.cpl_init(k, *sizes, c)), train


def _iql(run: RunDir, cfg: ml_collections.ConfigDict) -> tuple[Init, Train]:
    task, (trajs, prefs) = make_task(cfg.env), load_data(run, cfg, "label")
    vae_params, vae_config = frozen_vae(run, cfg, "iql", trajs, prefs)

    def train(c, members, out):
        with progress_bar("[sweep-iql] IQL updates") as bar:
            key = stage_key(cfg, "iql")
            vpl.train_skills(key, trajs, task, vae_params, vae_config, c, out, bar, members)
        last = json.loads((out / "train.jsonl").read_text().splitlines()[-1])
        return {k: v for k, v in last.items() if k != "step"}  # per member [M]

    obs = task.obs_size + vae_config.latent_dim
    return (lambda c: lambda k: iql_init(k, obs, task.action_size, c)), train


COLLECT_METRICS = ("unsafe_fraction", "episode_return_first_half", "episode_cost_first_half",
                   "episode_return_second_half", "episode_cost_second_half")  # fmt: skip
SKILL_PLANS: dict[str, SkillPlan] = {  # sweep stage = its config section
    "collect": SkillPlan((), COLLECT_METRICS, _collect),  # D_tau statistics
    "vae": SkillPlan(("collect", "label"), ("accuracy",), _vae),  # held-out pref. accuracy
    "iql": SkillPlan(("collect", "label"), ("q_loss", "v_loss", "policy_loss"), _iql),
    "cpl": SkillPlan(("collect", "label_regret"), ("accuracy",), _cpl),  # regret accuracy
    "rc": SkillPlan(("collect", "label"), ("accuracy", "bce"), _reward("rc")),
    "sopl": SkillPlan(("collect", "label"), ("accuracy", "bce"), _reward("sopl")),
}


def stage_programs(run: RunDir, cfg: ml_collections.ConfigDict, stage: str) -> tuple[Init, Train]:
    """(init(section) -> init(key), train(section, members, workdir) -> summary) of ``stage``."""
    return SKILL_PLANS[stage].programs(run, cfg)


def skill_plan(run: RunDir, cfg: ml_collections.ConfigDict, stage: str) -> Plan:
    """The sweep `Plan` of a data/skill stage; runs (or skips) its upstream stages first."""
    for name in SKILL_PLANS[stage].upstream:
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

    return Plan(dynamic, lambda cfg_c: None, program, SKILL_PLANS[stage].metrics)


def downstream_plan(run: RunDir, stage: str) -> Plan:
    """The sweep `Plan` of ``down-<method>`` / ``online-<method>``."""
    kind, _, name = stage.partition("-")
    method = methods.get(name, online=kind == "online")
    runner = run_method if kind == "down" else run_online_method

    def upstream(cfg_c):
        for s in ORDER:
            if s == "collect" or s in method.needs:
                run_stage(s, run, cfg_c)

    def train(cfg_c, members, label):
        return runner(run, cfg_c, name, seeds=members, stage=label)["summary"]

    return Plan(method.sweep_leaves(kind), upstream, train, method.metrics)
