"""Functional, jittable safe environments for the six paper tasks."""

from scpr_jax.envs.core import (
    FORMS,
    EnvParams,
    EnvState,
    PaperSettings,
    RealSim,
    SafeEnv,
    Task,
    TimeStep,
)
from scpr_jax.envs.registry import TASKS, env_names, make, make_task, register_task, task_class
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
    "PaperSettings",
    "RealSim",
    "SafeEnv",
    "Task",
    "TimeStep",
    "env_names",
    "make",
    "make_task",
    "register_task",
    "strip_goal",
    "task_class",
]
