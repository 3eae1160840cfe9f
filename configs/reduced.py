"""A reduced CPU preset for any task: ``--config configs/reduced.py:ant-vel``.

The small preset with shorter episodes and fewer updates, so the whole pipeline runs on a
2-core CPU in minutes even for the Brax velocity tasks (whose physics is ~100x slower than
the ball tasks'). It checks that everything runs end to end; its numbers are not the
paper's and are recorded in the README as such.
"""

from scpr_jax import methods
from scpr_jax.config import pipeline_config


def get_config(task: str = "ant-vel"):
    cfg = pipeline_config(task, "small")
    episode = 200 if task.endswith("-vel") else 0  # velocity tasks: 1000 steps by default
    cfg.collect.total_steps = 64_000
    cfg.collect.n_envs = 16
    cfg.collect.warmup_steps = 8_000
    cfg.collect.updates_per_step = 2
    cfg.collect.max_steps = episode
    cfg.collect.chunk_steps = 100
    cfg.eval_max_steps = episode
    cfg.eval_episodes = 5
    cfg.label.n_sets = 300
    cfg.vae.steps = 2_000
    cfg.iql.steps = 10_000
    cfg.rc.epochs = 10
    cfg.downstream.eval_episodes = 20
    for m in methods.REGISTRY.values():
        td3 = cfg.td3bc[m.section]
        td3.steps, td3.eval_every, td3.eval_episodes = 2_000, 1_000, 5
    return cfg
