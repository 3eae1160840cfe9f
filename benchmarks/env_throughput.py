"""Environment throughput: jitted ``lax.scan`` of ``vmap(env.step)`` with random actions.

For every downstream environment and number of parallel copies, measures the compile time
(wall time of the first call, which also runs the program once) and the steady-state
environment steps/s (copies * scan_len / median seconds of ``--repeats`` timed calls).
Actions are drawn inside the scan from a key, so the timed program is stepping plus
auto-reset only, with no host round trips.

    python benchmarks/env_throughput.py                      # full default run
    python benchmarks/env_throughput.py --envs ball-run,halfcheetah-vel --copies 1,256 \
        --steps small

Writes ``results/env_throughput.json`` and ``results/env_throughput.md`` next to this file
(or under ``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from machine import load_average, new_report, report_header

from scpr_jax.envs import TASKS, make
from scpr_jax.runs import atomic_write_json, atomic_write_text

# (target steps per timed call, min scan length, max scan length) of the default preset; the
# scan length is target // copies clipped to [min, max], so a call at 4096 copies takes
# seconds and the default run fits in 15 minutes on an idle 2-core CPU (mostly Brax
# compilation). Brax steps cost ~1000x a Ball-Run step here; Ball-Reach's step costs ~100x
# (AutoReset evaluates its rejection-sampled puddle placement on every step).
_BALL = (4_096_000, 1000, 1000)
_BRAX = (8_192, 2, 250)
DEFAULT_LENGTHS = {
    "ball-run": _BALL,
    "ball-circle": _BALL,
    "ball-reach": (16_384, 4, 1000),
    "ant-vel": _BRAX,
    "halfcheetah-vel": _BRAX,
    "swimmer-vel": _BRAX,
}
PRESETS = ("default", "small")  # small: 1/8 of the target steps, scan length at most 100


def scan_length(task: str, copies: int, steps: str) -> int:
    """Scan length for ``task`` at ``copies`` from a preset name or an integer ``steps``."""
    if steps.isdigit() and int(steps) > 0:
        return int(steps)
    if steps not in PRESETS:
        raise ValueError(f"--steps={steps!r}: give a positive integer or one of {list(PRESETS)}")
    target, min_len, max_len = DEFAULT_LENGTHS[task]
    if steps == "small":
        target, min_len, max_len = target // 8, 1, min(max_len, 100)
    return max(min_len, min(max_len, target // copies))


def make_rollout(env, params, copies: int, scan_len: int):
    """Jitted ``(state, key) -> (state, key, checksum)`` running ``scan_len`` batched steps.

    The checksum sums observations, rewards and costs so XLA cannot drop their computation.
    """
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, _):
        state, key, checksum = carry
        key, k_action, k_step = jax.random.split(key, 3)
        action = jax.random.uniform(k_action, (copies, env.action_size), minval=-1.0, maxval=1.0)
        ts, state = step(jax.random.split(k_step, copies), state, action, params)
        checksum = checksum + jnp.sum(ts.obs) + jnp.sum(ts.reward) + jnp.sum(ts.cost)
        return (state, key, checksum), None

    def rollout(state, key):
        carry = (state, key, jnp.zeros((), jnp.float32))
        (state, key, checksum), _ = jax.lax.scan(body, carry, length=scan_len)
        return state, key, checksum

    return jax.jit(rollout)


def initial_states(env, params, copies: int, seed: int):
    """``copies`` independent reset states (vmapped over the leading axis)."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0), copies)
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    return jax.block_until_ready(state)


def measure(env, params, state, copies: int, scan_len: int, repeats: int, seed: int) -> dict:
    """Compile time and steady-state steps/s of one environment at ``copies`` copies."""
    key = jax.random.fold_in(jax.random.key(seed), copies)
    rollout = make_rollout(env, params, copies, scan_len)

    start = time.perf_counter()
    state, key, checksum = jax.block_until_ready(rollout(state, key))
    compile_s = time.perf_counter() - start

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, key, checksum = jax.block_until_ready(rollout(state, key))
        seconds.append(time.perf_counter() - start)
    median_s = statistics.median(seconds)
    if not jnp.isfinite(checksum):
        print(f"  warning: non-finite checksum {float(checksum)}", flush=True)
    return {
        "compile_s": round(compile_s, 3),
        "steps_per_s": round(copies * scan_len / median_s, 1),
        "scan_len": scan_len,
        "repeats": repeats,
        "call_s": [round(s, 4) for s in seconds],
        "median_call_s": round(median_s, 4),
    }


def to_markdown(report: dict) -> str:
    """Results as a Markdown page: machine, command, then one row per env and copies."""
    lines = [
        *report_header("Environment throughput", report),
        "Steps/s = copies * scan length / median seconds of the timed calls (call). Compile =",
        "wall time of the first call (compilation plus one run of the program). Setup = env",
        "construction plus the jitted reset of the largest batch, once per environment.",
        "",
        "| environment | copies | scan length | setup (s) | compile (s) | call (s) | steps/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['env']} | {r['copies']} | {r['scan_len']} | {r['setup_s']:.1f} "
            f"| {r['compile_s']:.1f} | {r['median_call_s']:.3f} | {r['steps_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--copies", default="1,256,4096", help="comma-separated copy counts")
    parser.add_argument(
        "--steps", default="default", help=f"scan length: an integer or one of {list(PRESETS)}"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after compile")
    parser.add_argument("--seed", type=int, default=0)
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    parser.add_argument("--out", default=default_out, help="directory for the results files")
    args = parser.parse_args(argv)
    args.envs = [e for e in args.envs.split(",") if e]
    for task in args.envs:
        if task not in TASKS:
            parser.error(f"unknown env {task!r}; valid: {', '.join(TASKS)}")
    bad_copies = f"--copies={args.copies!r} must be comma-separated positive integers"
    try:
        args.copies = [int(c) for c in args.copies.split(",") if c]
    except ValueError:
        parser.error(bad_copies)
    if not args.copies or min(args.copies) < 1:
        parser.error(bad_copies)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be >= 1")
    try:
        scan_length(args.envs[0] if args.envs else "ball-run", 1, args.steps)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    report = new_report("env_throughput") | {"results": []}
    start = time.perf_counter()
    for task in args.envs:
        t0 = time.perf_counter()
        env = make(f"{task}/downstream")
        params = env.default_params()
        # one reset compile per env (not per copy count): slice the largest batch of states
        states = initial_states(env, params, max(args.copies), args.seed)
        setup_s = round(time.perf_counter() - t0, 2)
        for copies in args.copies:
            scan_len = scan_length(task, copies, args.steps)
            state = jax.tree.map(lambda x, n=copies: x[:n], states)
            result = measure(env, params, state, copies, scan_len, args.repeats, args.seed)
            report["results"].append(
                {"env": env.name, "copies": copies, "setup_s": setup_s, **result}
            )
            print(
                f"{env.name:26s} copies={copies:5d} scan_len={scan_len:5d} "
                f"compile={result['compile_s']:7.2f}s steps/s={result['steps_per_s']:14,.0f} "
                f"[{time.perf_counter() - start:6.0f}s elapsed]",
                flush=True,
            )
    report["load_average"]["after"] = load_average()
    report["total_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(os.path.join(args.out, "env_throughput.json"), report)
    atomic_write_text(os.path.join(args.out, "env_throughput.md"), to_markdown(report))
    print(f"wrote {args.out}/env_throughput.{{json,md}} in {report['total_s']} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
