"""Functional, jittable safe environments for the six paper tasks."""

from scpr_jax.envs.core import FORMS, EnvParams, EnvState, SafeEnv, Task, TimeStep
from scpr_jax.envs.registry import TASKS, env_names, make, make_task
from scpr_jax.envs.wrappers import AddGoal, AutoReset, DropGoal, EpisodeStats, strip_goal

__all__ = [
    "FORMS",
    "TASKS",
    "AddGoal",
    "AutoReset",
    "DropGoal",
    "EnvParams",
    "EnvState",
    "EpisodeStats",
    "SafeEnv",
    "Task",
    "TimeStep",
    "env_names",
    "make",
    "make_task",
    "strip_goal",
]
