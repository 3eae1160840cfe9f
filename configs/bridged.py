"""The pipeline on a real simulator: ``--config configs/bridged.py:ball-run``.

The argument is ``<task>[,<preset>]``; the config is that of ``real:<task>`` (the host-side
bridge to Bullet-Safety-Gym / Safety-Gymnasium, `scpr_jax.bridge`) with ``<task>``'s preset
settings, so ``scpr run --env real:ball-run`` is the same run. The velocity tasks' episodes
are shortened to 200 steps (as in configs/reduced.py): the host steps their 1000-step
episodes one simulator copy at a time. ``scpr online`` needs JAX environments and refuses
``real:`` ones; for a quicker check use ``--config configs/reduced.py:real:<task>``.
"""

from scpr_jax.config import pipeline_config


def get_config(arg: str = "ball-run,small"):
    task, _, preset = arg.partition(",")
    cfg = pipeline_config(f"real:{task.removeprefix('real:')}", preset or "small")
    if task.endswith("-vel"):
        cfg.collect.max_steps = 200
        cfg.eval_max_steps = 200
    return cfg
