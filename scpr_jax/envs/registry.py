"""Environments by name: ``make("ball-run/crowd")``, ``make("ant-vel/downstream")``."""

from __future__ import annotations

from collections.abc import Callable

from scpr_jax.envs.ball_circle import BallCircle
from scpr_jax.envs.ball_reach import BallReach
from scpr_jax.envs.ball_run import BallRun
from scpr_jax.envs.core import FORMS, SafeEnv, Task
from scpr_jax.envs.wrappers import AddGoal, AutoReset, EpisodeStats


def _velocity(cls_name: str) -> Callable[..., Task]:
    def build(**kwargs) -> Task:
        from scpr_jax.envs import velocity  # Brax loads only when a velocity task is made

        return getattr(velocity, cls_name)(**kwargs)

    return build


TASKS: dict[str, Callable[..., Task]] = {
    "ball-run": BallRun,
    "ball-circle": BallCircle,
    "ball-reach": BallReach,
    "ant-vel": _velocity("AntVel"),
    "halfcheetah-vel": _velocity("HalfCheetahVel"),
    "swimmer-vel": _velocity("SwimmerVel"),
}


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
    return TASKS[base_task(task)](**kwargs)


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
