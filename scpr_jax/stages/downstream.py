"""Downstream stages: each method's high-level policy by TD3+BC on D_tau, then the report.

Every method trains its own vmapped seeds (``cfg.downstream.seeds``) on the same offline data
with its own training reward (PAPER.md 5): Oracle r_new - 10 * cost, Task-Only and the skill
methods r_new, RC(omega) and SOPL their relabelled rewards (each method's `methods.Method`
says which). Skill methods act through the skill artifact their skill stage saved; nothing of
that stage's training runs here. Evaluation rolls out every seed
in the downstream environment, a random downstream goal per episode (PAPER.md 3.6).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scpr_jax import methods
from scpr_jax.acting import is_host
from scpr_jax.agents.td3 import high_level_action
from scpr_jax.artifacts import load_skill
from scpr_jax.bridge.rollout import host_map
from scpr_jax.downstream.offline import act
from scpr_jax.envs import make_task
from scpr_jax.evaluation import downstream_returns_fn, normalised_table, table_markdown
from scpr_jax.methods import Method, setting, term_options
from scpr_jax.report import write_report
from scpr_jax.runs import RunDir, atomic_write_json
from scpr_jax.skill import Skill, execute, identity_skill
from scpr_jax.stages.common import check_finite, load_data, progress_bar, skip, stage_key


def method_skill(run: RunDir, cfg: ml_collections.ConfigDict, method: Method) -> Skill:
    """The frozen executor of ``method``: its skill stage's artifact, or the identity."""
    if method.skill_stage is None:
        task = make_task(cfg.env)
        return identity_skill(task.obs_size, task.action_size)
    return load_skill(run.root / method.skill_stage)  # saved when that stage finished


def method_reward(run: RunDir, cfg: ml_collections.ConfigDict, method: Method, trajs):
    """(reward [N], reward_term [N], omega) of ``method`` on every row of D_tau: it trains on
    reward + omega * reward_term (`downstream.offline.training_reward`)."""
    if method.term is None:  # task-only and the skill methods: r_new only
        return trajs.reward, jnp.zeros_like(trajs.reward), 0.0
    stage_dir = run.root / method.reward_stage if method.reward_stage else None
    omega = float(setting(cfg, method.omega)) if method.omega else 1.0
    return trajs.reward, method.term(trajs, stage_dir, **term_options(cfg, method)), omega


def rollout_fn(cfg: ml_collections.ConfigDict, n_episodes: int, interval: int = 1,
               policy=lambda state: state):  # fmt: skip
    """Jitted ``f(key, algo, skill) -> (return, cost)`` [n_seeds, n_episodes] for vmapped seeds
    (``real:<task>``: host rollouts, a loop over the seeds); pi_h re-chooses its latent every
    ``interval`` steps (the control interval); ``policy(algo)`` is the `TD3State` that acts."""
    max_steps = int(cfg.eval_max_steps) or None
    one_policy = lambda p, o: act(policy(p[0]), p[1], o)  # noqa: E731
    if interval > 1:
        one_policy = (
            lambda p, o: high_level_action(policy(p[0]), policy(p[0]).actor, o),
            lambda p, o, u: execute(p[1], o, u),
        )
    one = downstream_returns_fn(cfg.env, n_episodes, one_policy, max_steps, interval)
    host = is_host(cfg.env)
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
    run: RunDir, cfg: ml_collections.ConfigDict, name: str, seeds=None, stage: str = ""
) -> dict:
    """Trains and evaluates method ``name``'s downstream policy (stage ``down-<name>``).

    ``seeds`` (default ``cfg.downstream.seeds``) may be a `train.Members` sweep; ``stage``
    overrides the stage directory (sweeps write under ``sweep-<stage>/``).
    """
    method = methods.get(name)
    stage = stage or f"down-{name}"
    if (done := skip(run, stage)) is not None:
        return done
    t0 = time.perf_counter()
    td3 = cfg.td3bc[method.section]
    trajs, _ = load_data(run, cfg, label_stage=None)
    skill = method_skill(run, cfg, method)
    reward, reward_term, omega = method_reward(run, cfg, method, trajs)
    check_finite(stage, {"reward term": reward_term})
    data = method.learner.data(trajs, reward, skill, reward_term)
    seeds = tuple(cfg.downstream.seeds) if seeds is None else seeds
    interval, policy = int(td3.control_interval), method.learner.policy
    evaluate_during = rollout_fn(cfg, int(td3.eval_episodes), interval, policy)

    def evaluate(loop) -> dict:
        k = jax.random.fold_in(stage_key(cfg, "eval"), int(np.max(loop.step)))
        ret, cost = evaluate_during(k, loop.algo, skill)
        return {"return": ret.mean(-1), "cost": cost.mean(-1)}

    out = run.stage(stage)
    with progress_bar(f"[{stage}] TD3+BC updates", ("eval/return", "eval/cost")) as bar:
        state = method.learner.train(
            stage_key(cfg, method.stream), data, td3, out, seeds=seeds, evaluate=evaluate,
            eval_every=int(td3.eval_every), progress=bar, omega=omega,
        )  # fmt: skip
    n_final = int(cfg.downstream.eval_episodes)
    ret, cost = rollout_fn(cfg, n_final, interval, policy)(stage_key(cfg, "eval"), state, skill)
    return finish(run, stage, name, seeds, (ret, cost), t0, td3.to_dict())


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
