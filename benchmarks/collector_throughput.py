"""Collector throughput: environment steps/s and SAC updates/s of `scpr_jax.data.collect`.

Runs the collector's own jitted chunk (``make_chunk``) for a configuration: chunk 0 compiles
(and runs), chunks 1..R are timed during warm-up (uniform random actions, no updates: env
stepping plus buffer writes), chunks R+1..2R are timed with ``updates_per_step`` SAC updates
per vectorised step. Reported: env-only steps/s, collector transitions/s and updates/s with
updates on, and the updates/s left after subtracting the env-only time.

    python benchmarks/collector_throughput.py                          # ball-run + halfcheetah
    python benchmarks/collector_throughput.py --runs ball-run:small --repeats 5

Writes ``results/collector_throughput.json`` and ``.md`` next to this file (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
from machine import load_average, new_report, report_header

from scpr_jax.data.collect import collect_config, collector_init, make_chunk
from scpr_jax.envs import make
from scpr_jax.runs import atomic_write_text

# (task, preset) -> (vectorised steps per chunk, overrides of the preset). Chunk lengths keep
# one timed call around a second on this CPU; HalfCheetah (Brax) steps cost ~1000x a ball step.
RUNS = {
    ("ball-run", "small"): (250, {}),
    ("ball-run", "paper"): (8, {}),
    ("halfcheetah-vel", "small"): (20, {}),
}
DEFAULT_RUNS = "ball-run:small,ball-run:paper,halfcheetah-vel:small"


def bench_config(preset: str, chunk: int, repeats: int, overrides: dict):
    """Preset with warm-up covering chunks 0..repeats, capacity for 2 * repeats + 1 chunks."""
    config = collect_config(preset)
    config.update(overrides)
    n_envs = config.n_envs
    config.chunk_steps = chunk
    config.total_steps = n_envs * chunk * (2 * repeats + 1)
    # first update at vectorised step (repeats + 1) * chunk: the first step of chunk R + 1
    config.warmup_steps = n_envs * (repeats + 1) * chunk + 1
    return config


def measure(task: str, preset: str, repeats: int, seed: int) -> dict:
    """Compile time, env-only steps/s and with-updates transitions/s and updates/s."""
    chunk, overrides = RUNS[(task, preset)]
    config = bench_config(preset, chunk, repeats, overrides)
    t0 = time.perf_counter()
    env = make(f"{task}/downstream")
    state = jax.block_until_ready(collector_init(jax.random.key(seed), env, config))
    setup_s = time.perf_counter() - t0
    run = jax.jit(make_chunk(env, config, chunk), donate_argnums=0)

    def timed(state):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(run(state))
        return state, metrics, time.perf_counter() - start

    state, _, compile_s = timed(state)
    env_s, update_s = [], []
    for _ in range(repeats):
        state, metrics, seconds = timed(state)
        assert float(metrics["updates"]) == 0, "env-only chunk ran updates"
        env_s.append(seconds)
    for _ in range(repeats):
        state, metrics, seconds = timed(state)
        assert float(metrics["updates"]) == chunk * config.updates_per_step
        update_s.append(seconds)
    env_med, upd_med = statistics.median(env_s), statistics.median(update_s)
    transitions, updates = chunk * config.n_envs, chunk * config.updates_per_step
    return {
        "env": env.name,
        "preset": preset,
        "n_envs": config.n_envs,
        "updates_per_step": config.updates_per_step,
        "hidden": list(config.hidden),
        "batch_size": config.batch_size,
        "chunk_steps": chunk,
        "repeats": repeats,
        "setup_s": round(setup_s, 2),
        "compile_s": round(compile_s, 2),
        "env_only_call_s": [round(s, 4) for s in env_s],
        "with_updates_call_s": [round(s, 4) for s in update_s],
        "env_steps_per_s": round(transitions / env_med, 1),
        "transitions_per_s": round(transitions / upd_med, 1),
        "updates_per_s": round(updates / upd_med, 1),
        "updates_per_s_excluding_env": round(updates / max(upd_med - env_med, 1e-9), 1),
    }


def to_markdown(report: dict) -> str:
    """Machine, command, then one row per (environment, preset)."""
    lines = [
        *report_header("Collector throughput (SAC data collection, PAPER.md 3.1)", report),
        "Env steps/s: warm-up chunks (random actions, buffer writes, no updates). Transitions/s",
        "and updates/s: chunks with `updates_per_step` SAC updates per vectorised step. The",
        "last column charges only the extra time over the env-only chunk to the updates.",
        "Compile = first call (compilation plus one chunk). Medians over the timed calls.",
        "",
        "| environment | preset | envs | updates/step | hidden | batch | compile (s) "
        "| env steps/s | transitions/s | updates/s | updates/s (excl. env) |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['env']} | {r['preset']} | {r['n_envs']} | {r['updates_per_step']} "
            f"| {'x'.join(map(str, r['hidden']))} | {r['batch_size']} | {r['compile_s']:.1f} "
            f"| {r['env_steps_per_s']:,.0f} | {r['transitions_per_s']:,.0f} "
            f"| {r['updates_per_s']:,.0f} | {r['updates_per_s_excluding_env']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    valid = ", ".join(f"{t}:{p}" for t, p in RUNS)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help=f"comma-separated from: {valid}")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per phase")
    parser.add_argument("--seed", type=int, default=0)
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    parser.add_argument("--out", default=default_out, help="directory for the results files")
    args = parser.parse_args(argv)
    args.runs = [tuple(r.split(":", 1)) for r in args.runs.split(",") if r]
    for run in args.runs:
        if run not in RUNS:
            parser.error(f"unknown run {':'.join(run)!r}; valid: {valid}")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    report = new_report("collector_throughput") | {
        "results": [],
    }
    start = time.perf_counter()
    for task, preset in args.runs:
        result = measure(task, preset, args.repeats, args.seed)
        report["results"].append(result)
        print(
            f"{result['env']:26s} {preset:6s} compile={result['compile_s']:6.1f}s "
            f"env steps/s={result['env_steps_per_s']:11,.0f} "
            f"transitions/s={result['transitions_per_s']:9,.0f} "
            f"updates/s={result['updates_per_s']:7,.0f} "
            f"[{time.perf_counter() - start:5.0f}s elapsed]",
            flush=True,
        )
    report["load_average"]["after"] = load_average()
    report["total_s"] = round(time.perf_counter() - start, 1)
    atomic_write_text(
        os.path.join(args.out, "collector_throughput.json"), json.dumps(report, indent=2)
    )
    atomic_write_text(os.path.join(args.out, "collector_throughput.md"), to_markdown(report))
    print(f"wrote {args.out}/collector_throughput.{{json,md}} in {report['total_s']} s")


if __name__ == "__main__":
    main(sys.argv[1:])
