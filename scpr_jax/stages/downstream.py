"""Downstream stages: each method's high-level policy by TD3+BC on D_tau, then the report.

Every method trains its own vmapped seeds (``cfg.downstream.seeds``) on the same offline data
with its own training reward (PAPER.md 5): Oracle r_new - 10 * cost, Task-Only and the skill
methods r_new, RC(omega) and SOPL their relabelled rewards. Skill methods act through their
frozen skill (restored from the skill stage's checkpoints). Evaluation rolls out every seed
in the downstream environment, a random downstream goal per episode (PAPER.md 3.6).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scpr_jax.envs import make_task
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.stages.common import load_data, progress_bar, skip, stage_key


def method_key(method: str) -> str:
    """Config section of a method's TD3+BC settings: ``td3bc.<method with _>``."""
    return method.replace("-", "_")


OMEGA = {  # method -> the config setting its state's omega holds (the weight of its reward term)
    "oracle": "downstream.oracle_cost_weight",
    "rc": "rc.weight",
    "sopl": "sopl.weight",
}


def method_reward(run: RunDir, cfg: ml_collections.ConfigDict, method: str, trajs):
    """(reward [N], reward_term [N], omega) of ``method`` on every row of D_tau: it trains on
    reward + omega * reward_term (`downstream.offline.training_reward`)."""
    from scpr_jax.skills import reward_models as rm
    from scpr_jax.stages.skills import reward_model

    if method not in OMEGA:  # task-only and the skill methods: r_new only
        return trajs.reward, jnp.zeros_like(trajs.reward), 0.0
    section, name = OMEGA[method].split(".")
    omega = float(cfg[section][name])
    if method == "oracle":
        return trajs.reward, -trajs.cost, omega
    state, _ = reward_model(run, cfg, method)  # restored from its checkpoint
    stats = rm.reward_stats(state.params, trajs)
    term = rm.rc_term if method == "rc" else rm.sopl_term
    return trajs.reward, term(trajs, state.params, stats), omega


def method_skill(run: RunDir, cfg: ml_collections.ConfigDict, method: str):
    """The frozen executor of ``method``: its skill, or the identity for baselines."""
    from scpr_jax.downstream import highlevel
    from scpr_jax.stages.skills import cpl_skills, vpl_skills

    task = make_task(cfg.env)
    if method == "safe-vpl":
        vae_state, _, iql_state = vpl_skills(run, cfg)
        return highlevel.vpl_skill(iql_state.policy, vae_state.params, task.obs_size)
    if method == "safe-cpl":
        vae_state, _, cpl_state, _ = cpl_skills(run, cfg)
        return highlevel.cpl_skill(cpl_state.params, vae_state.params, task.obs_size)
    return highlevel.identity_skill(task.obs_size, task.action_size)


def rollout_fn(cfg: ml_collections.ConfigDict, n_episodes: int, interval: int = 1):
    """Jitted ``f(key, algo, skill) -> (return, cost)`` [n_seeds, n_episodes] for vmapped seeds
    (``real:<task>``: host rollouts, a loop over the seeds); pi_h re-chooses its latent every
    ``interval`` steps (the control interval)."""
    from scpr_jax.agents.td3 import high_level_action
    from scpr_jax.bridge.rollout import host_map
    from scpr_jax.downstream.highlevel import execute
    from scpr_jax.downstream.offline import act
    from scpr_jax.envs.registry import REAL
    from scpr_jax.evaluation import downstream_returns_fn

    max_steps = int(cfg.eval_max_steps) or None
    policy = lambda p, o: act(p[0], p[1], o)  # noqa: E731
    if interval > 1:
        policy = (
            lambda p, o: high_level_action(p[0], p[0].actor, o),
            lambda p, o, u: execute(p[1], o, u),
        )
    one = downstream_returns_fn(cfg.env, n_episodes, policy, max_steps, interval)
    host = cfg.env.startswith(REAL)
    seed_map = host_map if host else jax.vmap

    def f(key, algo, skill):
        keys = jax.random.split(key, jax.tree.leaves(algo)[0].shape[0])
        return seed_map(lambda k, a: one(k, (a, skill)))(keys, algo)

    return f if host else jax.jit(f)


def _curves(workdir) -> dict:
    """Evaluation curves of a training run from its eval.jsonl (per-seed values)."""
    rows = [json.loads(line) for line in (workdir / "eval.jsonl").read_text().splitlines()]
    return {
        "step": [r["step"] for r in rows],
        "return": np.asarray([r["return"] for r in rows]).T.tolist(),  # [n_seeds, T]
        "cost": np.asarray([r["cost"] for r in rows]).T.tolist(),
    }


def run_method(
    run: RunDir, cfg: ml_collections.ConfigDict, method: str, seeds=None, stage: str = ""
) -> dict:
    """Trains and evaluates ``method``'s downstream policy (stage ``down-<method>``).

    ``seeds`` (default ``cfg.downstream.seeds``) may be a `train.Members` sweep; ``stage``
    overrides the stage directory (sweeps write under ``sweep-<stage>/``).
    """
    from scpr_jax.downstream.offline import offline_data, train_offline

    stage = stage or f"down-{method}"
    if (done := skip(run, stage)) is not None:
        return done
    t0 = time.perf_counter()
    td3 = cfg.td3bc[method_key(method)]
    trajs, _ = load_data(run, cfg, label_stage=None)
    skill = method_skill(run, cfg, method)
    reward, reward_term, omega = method_reward(run, cfg, method, trajs)
    data = offline_data(trajs, reward, skill, reward_term)
    seeds = tuple(cfg.downstream.seeds) if seeds is None else seeds
    key = stage_key(cfg, "downstream")
    evaluate_during = rollout_fn(cfg, int(td3.eval_episodes), int(td3.control_interval))

    def evaluate(loop) -> dict:
        k = jax.random.fold_in(stage_key(cfg, "eval"), int(np.max(loop.step)))
        ret, cost = evaluate_during(k, loop.algo, skill)
        return {"return": ret.mean(-1), "cost": cost.mean(-1)}

    out = run.stage(stage)
    with progress_bar(f"[{stage}] TD3+BC updates", td3.steps, ("eval/return", "eval/cost")) as bar:
        state = train_offline(
            key, data, td3, out, seeds=seeds, evaluate=evaluate,
            eval_every=int(td3.eval_every), progress=bar, omega=omega,
        )  # fmt: skip
    n_final = int(cfg.downstream.eval_episodes)
    ret, cost = rollout_fn(cfg, n_final, int(td3.control_interval))(
        stage_key(cfg, "eval"), state, skill
    )
    return finish(run, stage, method, seeds, (ret, cost), t0, td3.to_dict())


def finish(run: RunDir, stage: str, method: str, seeds, ret_cost, t0: float, config: dict):
    """Writes the final evaluation (``ret_cost`` [n_seeds, episodes] each) and marks done."""
    ret, cost = ret_cost
    summary = {
        "method": method,
        "seeds": list(seeds),
        "hparams": {k: list(v) for k, v in getattr(seeds, "hparams", {}).items()},
        "return": np.asarray(ret.mean(-1)).tolist(),  # per seed, mean over episodes
        "cost": np.asarray(cost.mean(-1)).tolist(),
        "episodes": int(ret.shape[-1]),
        "curves": _curves(run.stage(stage)),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(run.stage(stage) / "summary.json", summary)
    print(
        f"[{stage}] {len(seeds)} seeds, {summary['episodes']} episodes each: return "
        f"{np.mean(summary['return']):.2f}, cost {np.mean(summary['cost']):.2f} "
        f"(per seed: {[round(r, 1) for r in summary['return']]}, "
        f"{[round(c, 1) for c in summary['cost']]})"
    )
    run.mark_done(stage, {"summary": summary, "config": config})
    return run.done(stage)


def run_downstream(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Every configured method's downstream policy -> {method: summary}."""
    return {m: run_method(run, cfg, m)["summary"] for m in cfg.methods}


def run_report(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """The offline table (Markdown, JSON), curves and scatter (PNG) of every method."""
    return report(run, cfg, tuple(cfg.methods), "down", "report", "offline TD3+BC")


def report(run: RunDir, cfg, methods: tuple, prefix: str, out: str, setting: str) -> dict:
    """Table, curves and scatter of the finished ``<prefix>-<method>`` stages into ``out``."""
    from scpr_jax.evaluation import normalised_table, table_markdown
    from scpr_jax.report import write_report

    missing = [m for m in methods if run.done(f"{prefix}-{m}") is None]
    if missing:
        raise ValueError(
            f"methods {missing} have no finished {prefix}-<method> stage in {run.root}; "
            "run the stages before the report (e.g. `scpr run`) with the same settings first"
        )
    results = {m: run.done(f"{prefix}-{m}")["summary"] for m in methods}
    raw = {m: {"return": s["return"], "cost": s["cost"]} for m, s in results.items()}
    table = normalised_table(raw)
    curves = {m: s["curves"] for m, s in results.items()}
    title = f"{cfg.env} ({cfg.preset} preset, seed {cfg.seed}, {setting})"
    paths = write_report(run.stage(out), table, curves, cfg.to_dict(), title)
    print(f"[{out}] {title}: -> {run.stage(out)}")
    print(table_markdown(table))
    return {"table": table, "paths": {k: str(v) for k, v in paths.items()}}
