"""The paper's Table 1 (PAPER.md 6): every environment x method x upstream seed, resumable.

    python experiments/table1.py --envs ball-run,ball-circle --seeds 0:3
    python experiments/table1.py --preset paper            # the accelerator run

Each (environment, upstream seed) is one run directory ``<root>/<env>/seed<s>`` of the
`scpr run` pipeline (its own D_tau, crowd labels, skills and reward models; the downstream
seeds vmapped inside it), so a stopped experiment resumes where it stopped. ``--envs`` and
``--seeds`` choose what to run; the table holds every finished upstream seed of every env
under ``--root``. Cells pool the runs (upstream x downstream seeds): rewards are normalised
per upstream seed by that seed's Oracle mean return and costs by its Task-Only mean cost,
then summarised by mean +- SE and the IQM with a 95% stratified-bootstrap interval
(`scpr_jax.stats`). Writes ``<out>/table1.{md,json,png}`` with the machine, commit, command
and wall time per env.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scpr_jax import cli, methods, stats
from scpr_jax.config import load_config
from scpr_jax.envs import TASKS
from scpr_jax.report import cells_png, curve_grid_png
from scpr_jax.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from scpr_jax.stages.fingerprint import flatten
from scpr_jax.stages.sweep import parse_seeds

METHODS = ("oracle", "task-only", "sopl", "rc", "safe-vpl", "safe-cpl")
NAMES = {"oracle": "Oracle", "task-only": "Task-Only", "sopl": "SOPL", "rc": "RC(0.5)",
         "safe-vpl": "Safe-VPL", "safe-cpl": "Safe-CPL"}  # fmt: skip
PAPER = {  # PAPER.md 6, Table 1: (normalised reward, normalised cost)
    "ball-reach": {"oracle": (1.00, 0.038), "task-only": (1.04, 1.0), "sopl": (0.98, 0.024),
                   "rc": (0.83, 0.101), "safe-vpl": (0.98, 0.166), "safe-cpl": (0.98, 0.069)},
    "ball-run": {"oracle": (1.00, 0.0), "task-only": (1.00, 1.0), "sopl": (0.99, 0.0),
                 "rc": (1.00, 0.0), "safe-vpl": (0.95, 0.0), "safe-cpl": (0.97, 0.0)},
    "halfcheetah-vel": {"oracle": (1.00, 0.0), "task-only": (1.85, 1.0), "sopl": (0.93, 0.014),
                        "rc": (0.44, 0.107), "safe-vpl": (0.96, 0.004), "safe-cpl": (0.92, 0.018)},
}  # fmt: skip


def run_one(env: str, seed: int, args: argparse.Namespace) -> float:
    """Runs (or resumes) the pipeline of ``env`` at upstream ``seed``; returns the wall
    seconds it took (0 when every method of it had already finished)."""
    workdir = Path(args.root) / env / f"seed{seed}"
    finished = [workdir / f"down-{m}" / "DONE.json" for m in args.methods]
    if all(f.exists() for f in finished) and (workdir / "report" / "table.json").exists():
        return 0.0
    argv = ["run", "--config", f"{args.config}:{env},{args.preset}", "--workdir", str(workdir),
            "--set", f"seed={seed}", "--set", f"methods={','.join(args.methods)}"]  # fmt: skip
    for item in args.set:
        argv += ["--set", item]
    t0 = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"scpr {shlex.join(argv)} exited with {code}")
    return time.perf_counter() - t0


def stage_seconds(root: Path, env: str, seeds) -> dict[str, float]:
    """upstream seed -> seconds its stages recorded (``summary.json``'s ``seconds``, summed;
    a stage resumed after a crash counts its last invocation only)."""
    out = {}
    for s in seeds:
        files = (root / env / f"seed{s}").glob("*/summary.json")
        out[str(s)] = round(sum(json.loads(f.read_text()).get("seconds", 0.0) for f in files), 1)
    return out


def runs_of(root: Path, env: str, seeds) -> dict[str, list[dict]]:
    """method -> per upstream seed {"return": [downstream seeds], "cost": [...]}."""
    out: dict[str, list[dict]] = {}
    for s in seeds:
        rows = json.loads((root / env / f"seed{s}" / "report" / "table.json").read_text())["rows"]
        for m, row in rows.items():
            per = {k: row[k]["per_seed"] for k in ("return", "cost")}
            out.setdefault(m, []).append(per)
    return out


def curves_of(root: Path, env: str, seeds, method: str, key: str = "return"):
    """(eval steps [T], mean evaluation ``key`` ("return" / "cost") [runs, T]) of
    ``method``'s TD3+BC runs."""
    steps, rows = None, []
    for s in seeds:
        curves = json.loads((root / env / f"seed{s}" / f"down-{method}" / "summary.json")
                            .read_text())["curves"]  # fmt: skip
        steps = np.asarray(curves["step"])
        rows += [np.asarray(r, np.float64) for r in curves[key]]
    return steps, np.stack(rows)


def curves_dict(root: Path, env: str, seeds, method: str) -> dict:
    """{"step": [T], "return": [runs, T], "cost": [runs, T]} of ``method`` (`curves_of`)."""
    steps, ret = curves_of(root, env, seeds, method)
    return {"step": steps, "return": ret, "cost": curves_of(root, env, seeds, method, "cost")[1]}


def flatness(returns: np.ndarray) -> float:
    """Relative change of the run-mean return over the last evaluation interval,
    |R_T - R_{T-1}| / max(|R_T|, 1e-8) (0 = flat); nan with fewer than 2 points."""
    mean = returns.mean(0)
    if mean.size < 2:
        return float("nan")
    return float(abs(mean[-1] - mean[-2]) / max(abs(mean[-1]), 1e-8))


def cell(per_seed: list[dict], refs: list[tuple[float, float]], reps: int) -> dict:
    """Raw and normalised statistics of one method pooled over every run."""
    ret = np.concatenate([p["return"] for p in per_seed])
    cost = np.concatenate([p["cost"] for p in per_seed])
    out = {"return": stats.summary(ret, reps), "cost": stats.summary(cost, reps)}
    pairs = list(zip(per_seed, refs, strict=True))
    r_ref = np.concatenate([np.full(len(p["return"]), r) for p, (r, _) in pairs])
    c_ref = np.concatenate([np.full(len(p["cost"]), c) for p, (_, c) in pairs])
    out["rew_norm"] = stats.summary(ret / r_ref, reps) if np.all(r_ref != 0) else None
    out["cost_norm"] = stats.summary(cost / c_ref, reps) if np.all(c_ref > 0) else None
    return out


def finished_seeds(root: Path, env: str) -> list[int]:
    """The upstream seeds of ``env`` whose run has its report (every method finished)."""
    found = [int(p.parent.parent.name.removeprefix("seed"))
             for p in (root / env).glob("seed*/report/table.json")]  # fmt: skip
    return sorted(found)


def table(root: Path, seeds: dict[str, list[int]], reps: int = 2000) -> dict:
    """env -> method -> `cell` over env's ``seeds``, normalised per upstream seed by its Oracle
    / Task-Only."""
    result = {}
    for env, env_seeds in seeds.items():
        runs = runs_of(root, env, env_seeds)
        refs = [(float(np.mean(o["return"])), float(np.mean(t["cost"])))
                for o, t in zip(runs["oracle"], runs["task-only"], strict=True)]  # fmt: skip
        result[env] = {m: cell(runs[m], refs, reps) for m in METHODS if m in runs}
        for m, c in result[env].items():
            flat = flatness(curves_of(root, env, env_seeds, m)[1])
            c["flatness"] = None if np.isnan(flat) else flat  # None: a single evaluation
    return result


def _fmt(s: dict | None, spec: str = ".3f") -> str:
    if s is None:
        return "n/a"
    lo, hi = s["iqm_ci95"]
    iqm = f"IQM {s['iqm']:{spec}} [{lo:{spec}}, {hi:{spec}}]"
    return f"{s['mean']:{spec}} ± {s['se']:{spec}} ({iqm})"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def markdown(result: dict, info: dict) -> str:
    lines = [f"# Table 1 ({info['preset']} preset)", "",
             f"Command: `{info['command']}`  ", f"Commit: {info['commit']}  ",
             f"Machine: {info['machine']}, load average {info['load_average']}", ""]  # fmt: skip
    for env, cells in result.items():
        wall = sum(info["wall_s"].get(env, {}).values())
        staged = sum(info.get("stage_s", {}).get(env, {}).values())
        lines += [f"## {env}", "", f"Upstream seeds {info['seeds'][env]}; wall time "
                  f"{wall / 60:.1f} min of this command's invocations; the stages recorded "
                  f"{staged / 60:.1f} min.", "",
                  "| Method | Rew (norm) | Cost (norm) | Return (raw) | Cost (raw) | Last Δ "
                  "| Paper |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m, c in cells.items():
            paper = PAPER.get(env, {}).get(m)
            ref = f"{paper[0]:.2f} / {paper[1]:.3f}" if paper else "-"
            raw = f"{_fmt(c['return'], '.1f')} | {_fmt(c['cost'], '.1f')}"
            lines.append(f"| {NAMES[m]} | {_fmt(c['rew_norm'])} | {_fmt(c['cost_norm'])} | "
                         f"{raw} | {_pct(c['flatness'])} | {ref} |")  # fmt: skip
        lines.append("")
    lines.append("Cells: mean ± SE over all runs (upstream x downstream seeds), IQM with its "
                 "95% stratified-bootstrap interval; normalised per upstream seed. Every finished "
                 "upstream seed under the run root counts. Last Δ: "
                 "relative change of the mean evaluation return over the last evaluation interval "
                 "(curves: table1_curves.png).")  # fmt: skip
    return "\n".join(lines) + "\n"


def deviations(config: str, envs) -> str:
    """Markdown: every setting of ``config``'s CPU preset that differs from its paper
    preset, per env (downstream sections of the methods that Table 1 compares only)."""
    lines = ["# Table 1: CPU preset vs paper preset, setting by setting", "",
             f"Generated from `{config}` (`<env>,small` against `<env>,paper`); the reasons "
             "for the per-environment changes are in `experiments/DEVIATIONS.md`.", ""]  # fmt: skip
    sections = {methods.get(m).section for m in METHODS}
    for env in envs:
        small, paper = (flatten(load_config(f"{config}:{env},{p}").to_dict())
                        for p in ("small", "paper"))  # fmt: skip
        keep = [k for k in small if small[k] != paper.get(k) and not k.startswith("td3.")
                and (not k.startswith("td3bc.") or k.split(".")[1] in sections)]  # fmt: skip
        lines += [f"## {env}", "", "| Setting | Paper preset | CPU preset |", "|---|---|---|"]
        lines += [f"| `{k}` | {paper.get(k)} | {small[k]} |" for k in sorted(keep)] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    fmt = argparse.RawTextHelpFormatter
    p = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    p.add_argument("--envs", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--seeds", default="0:3", help="upstream seeds, e.g. 0:3 or 0,4")
    p.add_argument("--preset", default="small", choices=("small", "paper"))
    p.add_argument("--config", default="configs/table1.py", help="get_config(env,preset) file")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", default="experiments/runs/table1", help="run directories")
    p.add_argument("--out", default="experiments/results", help="where table1.* go")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    args = p.parse_args(argv)
    envs, seeds = args.envs.split(","), parse_seeds(args.seeds)
    args.methods = tuple(args.methods.split(","))
    if unknown := [e for e in envs if e not in TASKS]:
        raise SystemExit(f"unknown env(s) {unknown}; valid: {', '.join(TASKS)}")
    if missing := {"oracle", "task-only"} - set(args.methods):
        raise SystemExit(f"--methods needs the references {sorted(missing)} (normalisation)")
    out = Path(args.out)
    info_path = out / "table1.json"
    old = json.loads(info_path.read_text())["info"] if info_path.exists() else {}
    wall = {env: dict(v) for env, v in old.get("wall_s", {}).items()}  # env -> seed -> s
    for env in envs:
        for s in seeds:
            print(f"[table1] {env} upstream seed {s}", flush=True)
            spent = run_one(env, s, args)  # summed over the invocations that did work
            wall.setdefault(env, {})[str(s)] = wall.get(env, {}).get(str(s), 0.0) + spent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    info = {"command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "commit": commit, "preset": args.preset, "wall_s": wall,
            "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
            "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    root = Path(args.root)
    done = {env: s for env in TASKS if (s := finished_seeds(root, env))}  # every finished seed
    info["seeds"] = done
    info["stage_s"] = {env: stage_seconds(root, env, s) for env, s in done.items()}
    result = table(root, done, args.reps)
    atomic_write_json(info_path, {"info": info, "table": result, "paper": PAPER})
    atomic_write_text(out / "table1.md", markdown(result, info))
    atomic_write_bytes(out / "table1.png", cells_png(result, NAMES, PAPER))
    curves = {
        env: {m: curves_dict(root, env, s, m) for m in result[env]} for env, s in done.items()
    }
    atomic_write_bytes(out / "table1_curves.png", curve_grid_png(curves, NAMES))
    atomic_write_text(out / "table1_deviations.md", deviations(args.config, list(done)))
    print(markdown(result, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
