"""The ``scpr`` command: thin entry point that parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import sys

from scpr_jax.envs import TASKS, env_names


def _cmd_envs(args: argparse.Namespace) -> int:
    for name in env_names():
        print(name)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from scpr_jax.demo import run_demo

    tasks = args.envs.split(",") if args.envs else list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        print(f"error: unknown task(s) {unknown}; valid: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    print(f"Random policy, downstream form, {args.n_envs} copies x {args.episodes} episode(s):")
    run_demo(
        [f"{t}/downstream" for t in tasks],
        seed=args.seed,
        n_envs=args.n_envs,
        episodes=args.episodes,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scpr", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="the main job on its built-in default (see README)")
    p.add_argument("--envs", default="", help="comma-separated tasks (default: all six)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--episodes", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("demo", help="random-policy rollouts in every environment")
    p.add_argument("--envs", default="", help="comma-separated tasks (default: all six)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--episodes", type=int, default=1)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("envs", help="list environment names")
    p.set_defaults(func=_cmd_envs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scpr`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or ["run"])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
