"""The ``scpr`` command: thin entry point that parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import os
import signal
import sys

import jax

from scpr_jax import stages as lib
from scpr_jax.bridge.registry import bridged_names
from scpr_jax.config import apply_overrides, load_config, validate
from scpr_jax.demo import run_demo
from scpr_jax.downstream.online import check_jax_env
from scpr_jax.envs import TASKS, env_names
from scpr_jax.errors import ScprError
from scpr_jax.runs import RunDir, atomic_write_json, read_json
from scpr_jax.stages.fingerprint import check_run
from scpr_jax.stages.sweep import parse_axes, parse_seeds, run_sweep, split_sets
from scpr_jax.train.distributed import maybe_initialize


def _cmd_envs(args: argparse.Namespace) -> int:
    for name in env_names():
        print(name)
    for name in bridged_names():  # the real simulators, stepped on the host
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    tasks = args.envs.split(",") if args.envs else list(TASKS)
    real = list(dict.fromkeys(n.partition("/")[0] for n in bridged_names()))  # real:<task>
    unknown = [t for t in tasks if t not in TASKS and t not in real]
    if unknown:
        valid = ", ".join([*TASKS, *real])
        print(f"error: unknown task(s) {unknown}; valid: {valid}", file=sys.stderr)
        return 2
    print(f"Random policy, downstream form, {args.n_envs} copies x {args.episodes} episode(s):")
    run_demo(
        [f"{t}/downstream" for t in tasks],
        seed=args.seed,
        n_envs=args.n_envs,
        episodes=args.episodes,
    )
    return 0


def _pipeline_args(p: argparse.ArgumentParser, set_help: str = "") -> None:
    p.add_argument("--config", default="", help="config file (get_config), file.py[:arg]")
    p.add_argument("--env", default="ball-run", help="task when no --config is given")
    p.add_argument("--preset", default="small", help="small (CPU) or paper")
    p.add_argument("--workdir", default="", help="run directory (default runs/<env>-<preset>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=set_help or "override a config setting, e.g. --set collect.total_steps=80000",
    )


def _setup(args: argparse.Namespace, online: bool = False):
    cfg = load_config(args.config, args.env, args.preset)
    cfg = apply_overrides(cfg, args.set)
    validate(cfg)
    if online:  # refused before anything is written
        check_jax_env(cfg.env)
    workdir = args.workdir or f"runs/{cfg.env.replace(':', '-')}-{cfg.preset}"
    run = RunDir(workdir)
    run.lock()  # one writer per run directory, for the command's life
    saved = run.root / "config.json"
    if saved.exists():
        lib.check_settings(run, read_json(saved), cfg)
    check_run(run, cfg)  # every started stage's recorded settings, before any work
    atomic_write_json(saved, cfg.to_dict())
    print(f"run directory: {run.root.absolute()}")
    return cfg, run


def _cmd_stage(*stages: str):
    """A command running ``stages``; "upstream" expands to what ``cfg.methods`` need."""

    def cmd(args: argparse.Namespace) -> int:
        cfg, run = _setup(args, online="online" in stages)

        def expand(stage: str) -> list[str]:  # only the command's own: online checks its env
            if stage.startswith("upstream"):
                return lib.stages_for(cfg, online=stage == "upstream_online")
            return [stage]

        names = [s for stage in stages for s in expand(stage)]
        for name in names:
            lib.run_stage(name, run, cfg)
        return 0

    return cmd


def _cmd_sweep(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)  # before any work: bad input fails at start-up
    base = load_config(args.config, args.env, args.preset)
    args.set, axes = split_sets(args.set, args.stage, base)  # one value: a plain override
    axes += args.sweep
    parse_axes(axes, args.stage, base)
    cfg, run = _setup(args, online=args.stage.startswith("online-"))
    run_sweep(run, cfg, args.stage, seeds, axes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scpr", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser(
        "run",
        help="the main job: collect -> label -> skills/rewards -> downstream -> report "
        "(default: Ball-Run, small preset, Safe-VPL, Oracle, Task-Only, RC(0.5))",
    )
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("upstream", "downstream", "report"))

    p = sub.add_parser("collect", help="collect D_tau with the goal-conditioned SAC")
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("collect"))

    p = sub.add_parser("label", help="label crowd preference sets on D_tau (runs collect first)")
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("collect", "label"))

    p = sub.add_parser("demo", help="random-policy rollouts in every environment")
    p.add_argument(
        "--envs",
        default="",
        help="comma-separated tasks (default: the six JAX-native "
        "ones; real:<task> steps the real simulator on the host)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--episodes", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "skills",
        help="skills and reward models of the configured methods (Safe-VPL: VAE + IQL; "
        "Safe-CPL: VAE on regret labels + CPL decoder; RC/SOPL rewards), after collect/label",
    )
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("upstream"))

    p = sub.add_parser(
        "downstream", help="each method's high-level policy by TD3+BC (runs the stages before)"
    )
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("upstream", "downstream"))

    p = sub.add_parser(
        "online",
        help="the online setting: each of cfg.online_methods' high-level policy by online TD3 "
        "in the downstream environment (after the skills it needs), then report-online",
    )
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("upstream_online", "online", "online_report"))

    p = sub.add_parser(
        "sweep",
        help="a grid of seeds x settings for one training stage: settings held in the stage's "
        "state (beta_reg, lr, kl_weight, alpha, ...) vmapped with the seeds and sharded over "
        "all devices, shape/data settings as separate programs",
    )
    _pipeline_args(
        p,
        set_help="KEY=V1,V2,... is a grid axis (short keys: the stage's section, e.g. "
        "beta_reg=0.01,0.1,1 or hidden=[(64,64),(256,256)]); KEY=VALUE overrides the config",
    )
    p.add_argument(
        "--stage",
        required=True,
        help="collect, vae, iql, cpl, rc, sopl, down-<method> or online-<method>",
    )
    p.add_argument("--seeds", default="0:4", help="e.g. 0:16, 3 or 0,4,7")
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a grid axis, as --set KEY=V1,V2 (kept for old commands)",
    )
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("report", help="table, curves and scatter of a finished run's methods")
    _pipeline_args(p)
    p.set_defaults(func=_cmd_stage("report"))

    p = sub.add_parser("envs", help="list environment names")
    p.set_defaults(func=_cmd_envs)
    return parser


def _compilation_cache() -> None:
    """XLA's persistent cache: a resumed stage or another sweep program with the same shapes
    skips compilation. ``SCPR_XLA_CACHE`` sets the directory ("" turns it off)."""
    path = os.environ.get("SCPR_XLA_CACHE", os.path.expanduser("~/.cache/scpr-jax/xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)


def _interrupt(signum, frame):  # SIGTERM (a batch system's stop) ends like Ctrl-C
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scpr`` console script; returns the exit code (README: exit codes).

    User errors, Ctrl-C and operating-system errors end with a short message and a distinct
    code; ``--debug`` (anywhere on the command line) or ``SCPR_DEBUG=1`` shows the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SCPR_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv or ["run"])
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        maybe_initialize(os.environ)  # several hosts: SCPR_COORDINATOR, ... (README)
        _compilation_cache()
        return args.func(args)
    except Exception as err:
        if debug:
            raise
        return _explain(err)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail(
            "interrupted; finished stages and the latest checkpoints are kept: re-run the same "
            "command to resume",
            130,
        )


def _explain(err: Exception) -> int:
    """The message and exit code of an error a user can act on; re-raises anything else."""
    hint = "(--debug shows the traceback)"
    if isinstance(err, ScprError):
        return _fail(str(err), err.exit_code)
    if isinstance(err, FloatingPointError):
        return _fail(f"{err}", 5)
    if isinstance(err, ValueError):  # bad settings: a clear message, no traceback
        return _fail(str(err), 2)
    if isinstance(err, OSError):
        what = err.strerror or str(err)
        where = f": {err.filename}" if err.filename else ""
        todo = {28: "free some space", 13: "fix the permissions or give another --workdir",
                30: "give a writable --workdir"}.get(err.errno, "fix the cause")  # fmt: skip
        return _fail(
            f"{what}{where}; {todo}, then re-run the same command: finished stages and the "
            f"latest checkpoints are kept {hint}",
            74,
        )
    raise err


if __name__ == "__main__":
    sys.exit(main())
