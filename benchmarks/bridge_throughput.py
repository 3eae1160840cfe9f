"""Bridged environment throughput: the real simulators behind `scpr_jax.bridge`, random actions.

For every real simulator (``real:<task>/downstream``) and number of copies, measures the
setup (building the copies), the first reset + step (compiling the bridge's jitted task
rules) and the steady-state environment steps/s of ``BridgedEnv.step`` (copies * steps /
median seconds of ``--repeats`` timed runs, each of about ``--seconds`` seconds). The bare
simulator (one copy's own ``step``, no bridge) is timed too, so the bridge's per-step
overhead shows, and the JAX-native figures of the same tasks are read from
``results/env_throughput.json`` (``benchmarks/env_throughput.py``).

    python benchmarks/bridge_throughput.py                     # six envs, copies 1,8
    python benchmarks/bridge_throughput.py --envs ball-run --copies 1,4,16 --seconds 0.5

Writes ``results/bridge_throughput.json`` and ``results/bridge_throughput.md`` next to this
file (or under ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np
from machine import load_average, new_report, report_header

from scpr_jax.bridge import make
from scpr_jax.bridge.registry import bridged_names
from scpr_jax.runs import atomic_write_json, atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))


def timed_steps(env, params, key: jax.Array, actions: np.ndarray) -> float:
    """Seconds for ``len(actions)`` bridged steps (results fetched to the host)."""
    keys = list(jax.random.split(key, len(actions)))
    start = time.perf_counter()
    for k, a in zip(keys, actions, strict=True):
        ts = env.step(k, a, params)
    jax.block_until_ready(ts)
    return time.perf_counter() - start


def bare_simulator(sim, action_size: int, seconds: float, rng: np.random.Generator) -> float:
    """Steps/s of one simulator copy's own ``step`` (reset when its episode ends)."""
    sim.reset()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = sim.step(rng.uniform(-1, 1, action_size).astype(np.float32))
        terminated = out[2] if len(out) == 5 else out[3]  # Bullet: 5 values, S-Gymnasium: 6
        if terminated or out[-2]:
            sim.reset()
        n += 1
    return n / (time.perf_counter() - start)


def measure(task: str, copies: int, seconds: float, repeats: int, seed: int) -> dict:
    """Setup, first-step and steady-state figures of ``copies`` copies of ``task``."""
    start = time.perf_counter()
    env = make(f"real:{task}/downstream", n_envs=copies)
    setup_s = time.perf_counter() - start
    params = env.default_params()
    rng = np.random.default_rng(seed)
    key = jax.random.fold_in(jax.random.key(seed), copies)
    start = time.perf_counter()
    env.reset(key, params)
    first = rng.uniform(-1, 1, (1, copies, env.action_size)).astype(np.float32)
    timed_steps(env, params, key, first)
    first_s = time.perf_counter() - start
    # calibrate the number of steps per timed run to about `seconds`
    probe = timed_steps(env, params, key, rng.uniform(-1, 1, (10, copies, env.action_size)))
    n_steps = max(10, int(seconds / (probe / 10)))
    runs = []
    for r in range(repeats):
        actions = rng.uniform(-1, 1, (n_steps, copies, env.action_size)).astype(np.float32)
        runs.append(timed_steps(env, params, jax.random.fold_in(key, r), actions))
    median_s = statistics.median(runs)
    bare = bare_simulator(env.envs[0], env.action_size, seconds, rng) if copies == 1 else None
    env.close()
    step_ms = 1e3 * median_s / n_steps
    return {
        "env": f"real:{task}/downstream",
        "simulator": env.sim.sim_id,
        "copies": copies,
        "setup_s": round(setup_s, 3),
        "first_step_s": round(first_s, 3),
        "steps_per_run": n_steps,
        "run_s": [round(s, 4) for s in runs],
        "vector_step_ms": round(step_ms, 3),
        "steps_per_s": round(copies * n_steps / median_s, 1),
        "bare_simulator_steps_per_s": None if bare is None else round(bare, 1),
        "bridge_overhead_ms": None if bare is None else round(step_ms - 1e3 / bare, 3),
    }


def native_figures(path: str) -> dict:
    """JAX-native steps/s per task from env_throughput.json: {task: {copies: steps/s}}."""
    if not os.path.exists(path):
        return {"source": None, "tasks": {}}
    with open(path) as f:
        report = json.load(f)
    tasks: dict = {}
    for r in report["results"]:
        tasks.setdefault(r["env"].partition("/")[0], {})[r["copies"]] = r["steps_per_s"]
    source = {
        "file": os.path.relpath(path, HERE),
        "date": report["machine"]["date"],
        "load_average": report["load_average"],
    }
    return {"source": source, "tasks": tasks}


def _fmt(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def to_markdown(report: dict) -> str:
    """Results as a Markdown page: machine, command, one row per env and copies."""
    native = report["native"]
    src = native["source"]
    lines = [
        *report_header("Bridged environment throughput", report),
        "Steps/s = copies * steps / median seconds of the timed runs of `BridgedEnv.step`",
        "(random actions, results fetched to the host). Setup = building the copies; first",
        "step = reset + one step (compiles the jitted task rules). Bare simulator = one copy's",
        "own `step` without the bridge; overhead = bridged step time - bare step time (1",
        "copy). JAX-native = `benchmarks/env_throughput.py` (jitted scan of vmapped steps)",
        f"from {src['file']} ({src['date']}, load {src['load_average']['before']})."
        if src
        else "(no JAX-native results file found).",
        "",
        "| environment | simulator | copies | setup (s) | first step (s) | step (ms) "
        "| steps/s | bare simulator steps/s | overhead (ms) | JAX-native steps/s (copies) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        task = r["env"].removeprefix("real:").partition("/")[0]
        jx = sorted(native["tasks"].get(task, {}).items(), key=lambda x: int(x[0]))
        jx_cell = ", ".join(f"{v:,.0f} ({c})" for c, v in jx)
        lines.append(
            f"| {r['env']} | {r['simulator']} | {r['copies']} | {r['setup_s']:.2f} "
            f"| {r['first_step_s']:.2f} | {r['vector_step_ms']:.2f} | {r['steps_per_s']:,.0f} "
            f"| {_fmt(r['bare_simulator_steps_per_s'])} | {_fmt(r['bridge_overhead_ms'], '.2f')} "
            f"| {jx_cell or 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    real = sorted({n.removeprefix("real:").partition("/")[0] for n in bridged_names()})
    parser.add_argument("--envs", default=",".join(real), help="comma-separated task names")
    parser.add_argument("--copies", default="1,8", help="comma-separated copy counts")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory")
    parser.add_argument(
        "--native",
        default=os.path.join(HERE, "results", "env_throughput.json"),
        help="JAX-native results of env_throughput.py shown alongside",
    )
    args = parser.parse_args(argv)
    args.envs = [e for e in args.envs.split(",") if e]
    for task in args.envs:
        if task not in real:
            parser.error(f"unknown env {task!r}; valid: {', '.join(real)}")
    try:
        args.copies = [int(c) for c in args.copies.split(",") if c]
    except ValueError:
        args.copies = []
    if not args.copies or min(args.copies) < 1:
        parser.error(f"--copies must be comma-separated positive integers, got {args.copies!r}")
    if args.repeats < 1 or args.seconds <= 0:
        parser.error(f"--repeats={args.repeats} must be >= 1 and --seconds={args.seconds} > 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    report = new_report("bridge_throughput") | {
        "native": native_figures(args.native),
        "results": [],
    }
    start = time.perf_counter()
    for task in args.envs:
        for copies in args.copies:
            r = measure(task, copies, args.seconds, args.repeats, args.seed)
            report["results"].append(r)
            print(
                f"{r['env']:30s} copies={copies:3d} setup={r['setup_s']:6.2f}s "
                f"first={r['first_step_s']:6.2f}s steps/s={r['steps_per_s']:10,.0f} "
                f"bare={_fmt(r['bare_simulator_steps_per_s'])} "
                f"[{time.perf_counter() - start:5.0f}s elapsed]",
                flush=True,
            )
    report["load_average"]["after"] = load_average()
    report["total_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(os.path.join(args.out, "bridge_throughput.json"), report)
    atomic_write_text(os.path.join(args.out, "bridge_throughput.md"), to_markdown(report))
    print(f"wrote {args.out}/bridge_throughput.{{json,md}} in {report['total_s']} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
