"""JAX vs PyTorch: updates/s per seed of the same six updates, on this machine, in one run.

    python benchmarks/vs_pytorch.py --settings small      # <= 15 min on a 2-core CPU
    python benchmarks/vs_pytorch.py --settings paper --components iql,td3bc --seeds 1,8

Components (sizes from our presets; see `vs_pytorch_jax.component_sizes`): the
preference-VAE step, IQL, the CPL step, TD3+BC through a frozen Safe-VPL skill, online TD3
on replay batches (same skill), SAC. The JAX side runs our real update functions in jitted
``lax.scan`` chunks for 1 seed and for N vmapped seeds; the PyTorch side runs `torch_ref`'s
eager references, one seed per process. Every configuration runs in a fresh process
(`vs_pytorch_worker.py`) so its peak RSS can be read. Writes ``results/vs_pytorch.{json,md}``
(a run replaces the entry of its settings and keeps the other settings' entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from machine import load_average, new_report
from vs_pytorch_jax import component_sizes
from vs_pytorch_report import to_markdown

from scpr_jax.runs import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
COMPONENTS = ("vae", "iql", "cpl", "td3bc", "td3", "sac")
# updates per jitted chunk for one seed (about 0.5 s per call on a 2-core CPU); N vmapped
# seeds run max(1, chunk // N) per call so a call's wall time stays similar
CHUNK = {
    "small": {"vae": 50, "iql": 100, "cpl": 50, "td3bc": 100, "td3": 200, "sac": 200},
    "paper": {"vae": 2, "iql": 4, "cpl": 2, "td3bc": 10, "td3": 10, "sac": 100},
}
WINDOW_S = {"small": 3.0, "paper": 20.0}  # timed wall time per configuration (per round)
ROUNDS = {"small": 3, "paper": 1}  # alternating JAX-1-seed / PyTorch rounds (median)
WARMUP_S = {"small": 1.0, "paper": 5.0}  # PyTorch warm-up (JAX: one call after compiling)
MATMUL = {"n": 2048, "repeats": 5}


def _mem_available() -> int:
    """Bytes the kernel reports as available (MemAvailable), or 16 GiB if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 * 2**30


def launch(job: dict, timeout: float) -> dict:
    """Runs one job in a fresh worker process; its RESULT, or an "error" entry."""
    cmd = [sys.executable, os.path.join(HERE, "vs_pytorch_worker.py"), json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit code {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len("RESULT ") :])


def _derive(result: dict, matmul: dict) -> None:
    """Adds per-seed ratios to PyTorch and fractions of the measured matmul rate."""
    flops, torch_ups = result.get("flops_per_update"), result["torch"].get("updates_per_s")
    peaks = {"jax": matmul.get("jax_gflops"), "torch": matmul.get("torch_gflops")}
    for n, r in result["jax"].items():
        ups = r.get("updates_per_s")
        if ups and torch_ups:
            r["ratio_vs_torch"] = ups / torch_ups  # per seed
            r["total_ratio_vs_torch"] = int(n) * ups / torch_ups  # all N seeds vs one process
        if ups and flops and peaks["jax"]:
            r["fraction_of_matmul_peak"] = int(n) * ups * flops / (peaks["jax"] * 1e9)
    if torch_ups and flops and peaks["torch"]:
        result["torch"]["fraction_of_matmul_peak"] = torch_ups * flops / (peaks["torch"] * 1e9)


def _median(runs: list[dict]) -> dict:
    """The first successful round's result with updates/s replaced by the rounds' median."""
    ok = [r for r in runs if "updates_per_s" in r]
    if not ok:
        return runs[0]
    rates = [r["updates_per_s"] for r in ok]
    return ok[0] | {"updates_per_s": statistics.median(rates), "updates_per_s_rounds": rates}


def measure(component: str, args: argparse.Namespace, log) -> dict:
    """Every requested configuration of one component.

    JAX with one seed and PyTorch, the pair the per-seed ratio compares, run alternately for
    ``args.rounds`` rounds (each a fresh process) and report their median, so a slow spell
    of this shared machine hits both sides alike. Later rounds of JAX reuse the first
    round's compiled program through a persistent compilation cache (the compile column is
    the first round's cold compile). Vmapped seed counts run once.
    """
    sizes = component_sizes(component, args.settings, args.task)
    base = {"kind": "update", "component": component, "sizes": sizes, "seed": args.seed}
    base |= {"settings": args.settings, "task": args.task, "window_s": args.window}
    base |= {"xla_cache": args.xla_cache}
    result = {"component": component, "sizes": sizes, "jax": {}, "torch": {}}

    def jax_job(n: int) -> dict:
        chunk = max(1, CHUNK[args.settings][component] // n)
        job = base | {"side": "jax", "n_seeds": n, "chunk": chunk, "warmup_calls": 1}
        return job | {"max_bytes": int(0.8 * _mem_available())}

    paired = [n for n in args.seeds if n == 1] if "jax" in args.sides else []
    torch_job = base | {"side": "torch", "warmup_s": args.warmup}
    torch_job |= {"torch_threads": args.torch_threads}
    rounds: dict[str, list[dict]] = {"jax": [], "torch": []}
    for r in range(args.rounds):
        for n in paired:
            rounds["jax"].append(launch(jax_job(n), args.timeout))
            log(component, f"jax x1 ({r + 1}/{args.rounds})", rounds["jax"][-1])
        if "torch" in args.sides:
            rounds["torch"].append(launch(torch_job, args.timeout))
            log(component, f"torch ({r + 1}/{args.rounds})", rounds["torch"][-1])
    if paired:
        result["jax"]["1"] = _median(rounds["jax"]) | {"chunk": jax_job(1)["chunk"]}
    if rounds["torch"]:
        result["torch"] = _median(rounds["torch"])
    for n in [n for n in args.seeds if n > 1] if "jax" in args.sides else ():
        job = jax_job(n)
        result["jax"][str(n)] = launch(job, args.timeout) | {"chunk": job["chunk"]}
        log(component, f"jax x{n}", result["jax"][str(n)])
    for r in result["jax"].values():
        if "flops_per_update" in r:
            result["flops_per_update"] = r["flops_per_update"]  # one seed's count (first)
            break
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", choices=("small", "paper"), default="small")
    parser.add_argument("--components", default=",".join(COMPONENTS), help="comma-separated")
    parser.add_argument("--seeds", default="1,8,32", help="JAX seed counts (1 = unbatched)")
    parser.add_argument("--sides", default="jax,torch", help="jax, torch or both")
    parser.add_argument("--task", default="ball-run", help="task whose shapes are used")
    parser.add_argument("--window", type=float, help="timed seconds per configuration")
    parser.add_argument("--warmup", type=float, help="PyTorch warm-up seconds")
    parser.add_argument("--rounds", type=int, help="JAX 1 seed / PyTorch alternations")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    parser.add_argument(
        "--torch-threads", type=int, default=os.cpu_count() or 1, help="intra-op (default: cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results dir")
    args = parser.parse_args(argv)
    args.components = [c for c in args.components.split(",") if c]
    args.sides = [s for s in args.sides.split(",") if s]
    for name, values, valid in (
        ("--components", args.components, COMPONENTS),
        ("--sides", args.sides, ("jax", "torch")),
    ):
        bad = [v for v in values if v not in valid]
        if bad or not values:
            parser.error(f"{name}={','.join(values)!r} invalid; choose from {', '.join(valid)}")
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s})
    except ValueError:
        parser.error(f"--seeds={args.seeds!r} must be comma-separated positive integers")
    if not args.seeds or min(args.seeds) < 1:
        parser.error(f"--seeds={args.seeds!r} must be comma-separated positive integers")
    args.window = WINDOW_S[args.settings] if args.window is None else args.window
    args.warmup = WARMUP_S[args.settings] if args.warmup is None else args.warmup
    args.rounds = ROUNDS[args.settings] if args.rounds is None else args.rounds
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds} must be >= 1")
    if args.torch_threads < 1:
        parser.error(f"--torch-threads={args.torch_threads} must be >= 1")
    if args.window <= 0 or args.warmup < 0:
        parser.error(f"--window={args.window} must be > 0 and --warmup={args.warmup} >= 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    start = time.perf_counter()

    def log(component: str, what: str, r: dict) -> None:
        if "updates_per_s" in r:
            detail = f"{r['updates_per_s']:9.1f} updates/s per seed"
            detail += f", compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
        else:
            detail = r.get("skipped") or r.get("error", "?")
        elapsed = time.perf_counter() - start
        print(f"{component:6s} {what:14s} {detail} [{elapsed:5.0f} s elapsed]", flush=True)

    command = shlex.join(["python", "benchmarks/vs_pytorch.py", *argv])
    report = new_report("vs_pytorch", command) | {
        "settings": args.settings,
        "task": args.task,
        "protocol": {
            "window_s": args.window,
            "torch_warmup_s": args.warmup,
            "chunk": CHUNK,
            "rounds": args.rounds,
        },
        "matmul": {"n": MATMUL["n"]},
        "results": [],
    }
    for side in args.sides:
        job = {"kind": "matmul", "side": side, "torch_threads": args.torch_threads, **MATMUL}
        r = launch(job, args.timeout)
        report["matmul"] |= r
        log("matmul", side, {"skipped": json.dumps(r)})
    with tempfile.TemporaryDirectory(prefix="vs-pytorch-xla-") as args.xla_cache:
        for component in args.components:
            result = measure(component, args, log)
            _derive(result, report["matmul"])
            report["results"].append(result)
    report["load_average"]["after"] = load_average()
    report["total_s"] = round(time.perf_counter() - start, 1)
    path = os.path.join(args.out, "vs_pytorch.json")
    runs = {}
    if os.path.exists(path):
        with open(path) as f:
            runs = json.load(f).get("runs", {})
    runs[args.settings] = report
    atomic_write_text(path, json.dumps({"benchmark": "vs_pytorch", "runs": runs}, indent=2))
    atomic_write_text(os.path.join(args.out, "vs_pytorch.md"), to_markdown(runs))
    print(f"wrote {args.out}/vs_pytorch.{{json,md}} in {report['total_s']} s")


if __name__ == "__main__":
    main(sys.argv[1:])
