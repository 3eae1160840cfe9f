"""Bridged environments by name: ``make("real:ball-run/downstream", n_envs=4)``."""

from __future__ import annotations

from scpr_jax.bridge.sims import sim_for
from scpr_jax.bridge.vec import BridgedEnv
from scpr_jax.envs.core import FORMS
from scpr_jax.envs.registry import REAL, TASKS, make_task, task_class

PREFIX = REAL


def is_bridged(name: str) -> bool:
    """Whether ``name`` (a task or an environment name) names a real simulator."""
    return name.startswith(PREFIX)


def bridged_names() -> list[str]:
    """All valid bridged names, ``real:<task>/<form>``."""
    real = [task for task in TASKS if task_class(task).real is not None]
    return [f"{PREFIX}{task}/{form}" for task in real for form in FORMS]


def split_name(name: str) -> tuple[str, str]:
    """``"real:<task>/<form>"`` -> (task, form); ValueError naming the valid names."""
    task, _, form = name.removeprefix(PREFIX).partition("/")
    known = task in TASKS and task_class(task).real is not None
    if not name.startswith(PREFIX) or not known or form not in FORMS:
        raise ValueError(
            f"unknown bridged environment {name!r}; valid names: {', '.join(bridged_names())}"
        )
    return task, form


def make(name: str, n_envs: int = 1, **task_kwargs) -> BridgedEnv:
    """``n_envs`` copies of the real simulator of ``name`` with our task's rules.

    ``task_kwargs`` go to the task (e.g. ``goal_radius`` for Ball-Reach); the rules are those
    of `scpr_jax.envs.make_task(<task>)`, so labelling and skills use the same `Task`.
    """
    task, form = split_name(name)
    return BridgedEnv(name, sim_for(make_task(task, **task_kwargs)), form, n_envs)
