"""Online stages: each method's high-level policy by online TD3, then its own report.

PAPER.md 5's online setting: no D_tau for the high-level policy; it interacts with the
downstream environment (a random downstream goal per episode). Oracle learns from
r_new - oracle_cost_weight * cost, Task-Only and the skill methods from r_new alone (each
method's `methods.Method` says which); the skill methods act through the same skill artifacts
as the offline stages. Stage
``online-<method>`` trains ``cfg.downstream.seeds`` vmapped, each seed with its own
environments and replay buffer; ``report-online`` normalises by the online Oracle and
Task-Only.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from scpr_jax import methods
from scpr_jax.downstream.online import check_jax_env, train_online
from scpr_jax.methods import setting
from scpr_jax.runs import RunDir
from scpr_jax.stages.common import progress_bar, skip, stage_key
from scpr_jax.stages.downstream import finish, method_skill, report, rollout_fn

__all__ = ["check_jax_env", "run_online", "run_online_method", "run_online_report"]


def run_online_method(
    run: RunDir, cfg: ml_collections.ConfigDict, name: str, seeds=None, stage: str = ""
) -> dict:
    """Trains and evaluates method ``name``'s online TD3 policy (stage ``online-<name>``);
    ``seeds`` and ``stage`` as in `stages.downstream.run_method`."""
    method = methods.get(name, online=True)
    stage = stage or f"online-{name}"
    if (done := skip(run, stage)) is not None:
        return done
    t0 = time.perf_counter()
    td3 = cfg.td3[method.section]
    skill = method_skill(run, cfg, method)
    seeds = tuple(cfg.downstream.seeds) if seeds is None else seeds
    evaluate_during = rollout_fn(cfg, int(td3.eval_episodes), int(td3.control_interval))

    def evaluate(loop) -> dict:
        k = jax.random.fold_in(stage_key(cfg, "eval"), int(np.max(loop.step)))
        ret, cost = evaluate_during(k, loop.algo.td3, skill)
        return {"return": ret.mean(-1), "cost": cost.mean(-1)}

    weight = float(setting(cfg, method.online_cost_weight)) if method.online_cost_weight else 0.0
    shown = ("eval/return", "eval/cost", "episode_return")
    with progress_bar(f"[{stage}] TD3 env steps", shown) as bar:
        state = train_online(
            stage_key(cfg, "online"), cfg.env, skill, td3, run.stage(stage), seeds=seeds,
            reward=method.online_reward, cost_weight=weight,
            evaluate=evaluate, progress=bar,
        )  # fmt: skip
    ret_cost = rollout_fn(cfg, int(cfg.downstream.eval_episodes), int(td3.control_interval))(
        stage_key(cfg, "eval"), state, skill
    )
    return finish(run, stage, name, seeds, ret_cost, t0, td3.to_dict())


def run_online(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """Every method of ``cfg.online_methods`` trained online -> {method: summary}."""
    return {m: run_online_method(run, cfg, m)["summary"] for m in cfg.online_methods}


def run_online_report(run: RunDir, cfg: ml_collections.ConfigDict) -> dict:
    """The online table (Markdown, JSON), curves and scatter (PNG) into ``report-online``."""
    return report(run, cfg, tuple(cfg.online_methods), "online", "report-online", "online TD3")
