"""Pipeline config for any task and preset: ``--config configs/default.py:ball-circle,paper``.

The argument is ``<task>[,<preset>]`` (preset "small" for a 2-core CPU, "paper" for
PAPER.md's settings on accelerators). Edit a copy of this file for your own experiments;
single settings can also be changed with ``--set section.key=value``.
"""

from scpr_jax.config import pipeline_config


def get_config(arg: str = "ball-run,small"):
    task, _, preset = arg.partition(",")
    return pipeline_config(task, preset or "small")
