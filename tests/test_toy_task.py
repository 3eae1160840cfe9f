"""A new task added the documented way: one `Task` class plus `register_task`, all in this file.

The toy is a point on a line: the action sets its velocity, a user's goal is a target velocity,
and leaving |x| <= 0.6 is unsafe. Nothing in the library names it, yet config, every stage and
the report run on it.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from test_stages import SKILLS_TINY, TINY, _downstream_tiny

from scpr_jax import cli
from scpr_jax.config import pipeline_config
from scpr_jax.envs import TASKS, PaperSettings, Task, make, register_task


class ToyLine(Task):
    name = "toy-line"
    obs_size = 2  # [x, v]
    action_size = 1
    goal_size = 1
    goal_obs_size = 1
    max_steps = 40
    user_goals = np.array([[-1.0], [1.0]], np.float32)
    downstream_goals = np.linspace(-1.0, 1.0, 5, dtype=np.float32)[:, None]
    paper = PaperSettings(bc_alpha=(10.0, 10.0), n_pairs=4)

    def init(self, key):
        return jnp.zeros(2)  # [x, v]

    def transition(self, key, phys, action):
        v = action[0]
        after = jnp.stack([jnp.clip(phys[0] + 0.05 * v, -2.0, 2.0), v])
        return after, {"vel": v, "x": after[0], "action": action}

    def observe(self, phys):
        return phys

    def goal_features(self, goal, phys):
        return goal

    def reward(self, info, goal):
        return jnp.exp(-jnp.abs(info["vel"] - goal[0]))

    def cost(self, phys):
        return (jnp.abs(phys[0]) > 0.6).astype(jnp.float32)


@pytest.fixture(scope="module", autouse=True)
def toy_task():
    register_task("toy-line", ToyLine)
    yield
    del TASKS["toy-line"]


def test_registered_task_builds_envs_and_config():
    env = make("toy-line/downstream")
    assert env.obs_size == 3 and env.action_size == 1
    cfg = pipeline_config("toy-line")
    assert cfg.label.n_users == 2 and cfg.label.n_pairs == 4
    assert cfg.td3bc.oracle.bc_alpha == 10.0 and cfg.td3bc.td3bc_lag.episode_len == 40
    with pytest.raises(ValueError, match="'toy-line' is taken"):
        register_task("toy-line", ToyLine)


def test_tiny_pipeline_runs_on_the_registered_task(tmp_path, capsys):
    workdir = tmp_path / "run"
    methods = ("safe-vpl", "oracle", "task-only")
    args = ["run", "--env", "toy-line", "--workdir", str(workdir), *TINY, *SKILLS_TINY]
    args += _downstream_tiny(methods, steps=200)
    assert cli.main(args) == 0
    assert "| Method | Rew (norm) | Cost (norm) |" in capsys.readouterr().out
    table = json.loads((workdir / "report" / "table.json").read_text())
    assert list(table["rows"]) == list(methods)
    assert json.loads((workdir / "config.json").read_text())["env"] == "toy-line"
