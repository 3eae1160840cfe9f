"""Environments by name: ``make("ball-run/crowd")``, ``make("ant-vel/downstream")``."""

from __future__ import annotations

import importlib

from scpr_jax.envs.ball_circle import BallCircle
from scpr_jax.envs.ball_reach import BallReach
from scpr_jax.envs.ball_run import BallRun
from scpr_jax.envs.core import FORMS, SafeEnv, Task
from scpr_jax.envs.wrappers import AddGoal, AutoReset, EpisodeStats

# task name -> its class, or "module:Class" for a task whose module is loaded on first use
TASKS: dict[str, type[Task] | str] = {
    "ball-run": BallRun,
    "ball-circle": BallCircle,
    "ball-reach": BallReach,
    "ant-vel": "scpr_jax.envs.velocity:AntVel",  # Brax (and MuJoCo's import-time prints) load
    "halfcheetah-vel": "scpr_jax.envs.velocity:HalfCheetahVel",  # only when a velocity task
    "swimmer-vel": "scpr_jax.envs.velocity:SwimmerVel",  # is used
}


def register_task(name: str, entry: type[Task] | str) -> None:
    """Adds task ``name`` (a `Task` subclass, or ``"module:Class"`` loaded on first use); a new
    task needs nothing else: its class declares its users, goals and `PaperSettings`."""
    if name in TASKS or "/" in name or name.startswith(REAL):
        raise ValueError(f"task name {name!r} is taken or invalid (no '/', no {REAL!r} prefix)")
    TASKS[name] = entry


def task_class(task: str) -> type[Task]:
    """The `Task` class of ``task`` (or of ``real:<task>``), importing its module if needed."""
    entry = TASKS[base_task(task)]
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = getattr(importlib.import_module(module), cls)
    return entry


REAL = "real:"  # prefix of the host-side bridged simulators (`scpr_jax.bridge`)


def env_names() -> list[str]:
    """All valid ``make`` names, ``<task>/<form>``."""
    return [f"{task}/{form}" for task in TASKS for form in FORMS]


def base_task(task: str) -> str:
    """``"real:<task>"`` (the bridged simulator of a task) or ``"<task>"`` -> ``"<task>"``."""
    base = task.removeprefix(REAL)
    if base not in TASKS:
        raise ValueError(
            f"unknown task {task!r}; valid tasks: {', '.join(TASKS)} (or real:<task> for the "
            "real simulators)"
        )
    return base


def make_task(task: str, **kwargs) -> Task:
    """The `Task` (physics, rewards, cost) of ``task``; ``"real:<task>"`` has the same rules."""
    return task_class(task)(**kwargs)


def make(name: str, **task_kwargs):
    """The wrapped functional environment ``AutoReset(EpisodeStats([AddGoal](SafeEnv)))``.

    ``name`` is ``<task>/<form>``; ``task_kwargs`` go to the task (e.g. ``backend="spring"``
    for a velocity task, ``goal_radius`` for Ball-Reach).
    """
    task, _, form = name.partition("/")
    if task not in TASKS or form not in FORMS:
        raise ValueError(f"unknown environment {name!r}; valid names: {', '.join(env_names())}")
    env = SafeEnv(make_task(task, **task_kwargs), form)
    if form == "downstream":
        env = AddGoal(env)
    return AutoReset(EpisodeStats(env))
