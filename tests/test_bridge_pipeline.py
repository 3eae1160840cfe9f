"""The pipeline on a real simulator (bridged Ball-Run): host collector, host rollouts, `scpr run`.

Reference values are hand-derived from Ball-Run's rules (a ball at rest has v_x = 0, so a step
earns exp(-0.5 |0 - g|) in the downstream form) and from the task's own reward on the stored
relabelling fields.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_stages import TINY, _downstream_tiny

from scpr_jax import cli
from scpr_jax.bridge.rollout import host_map, pool_size
from scpr_jax.data.collect import collect, collect_config
from scpr_jax.envs import make_task
from scpr_jax.evaluation import downstream_returns_fn
from scpr_jax.skills.evaluate import latent_returns

TASK = make_task("real:ball-run")  # the same rules as the JAX-native Ball-Run

# tiny runs: compiling dominates, so skip most XLA passes (conftest.py)
pytestmark = pytest.mark.usefixtures("fast_compile")


def _tiny_collect_config():
    c = collect_config("small").unlock()
    c.total_steps, c.n_envs, c.warmup_steps, c.max_steps = 480, 4, 120, 40
    c.chunk_steps, c.hidden, c.batch_size, c.updates_per_step = 30, (16, 16), 16, 1
    return c.lock()


def test_host_collector_gives_the_collectors_dataset():
    config, calls = _tiny_collect_config(), []
    traj, summary = collect(
        jax.random.PRNGKey(0), "real:ball-run", config, lambda n, m: calls.append((n, m))
    )
    n_envs, T = 4, 120  # 480 transitions = 4 streams x 120 vectorised steps
    assert traj.n_streams == n_envs and traj.obs.shape == (n_envs * T, TASK.obs_size + 1)
    assert traj.action.shape == (n_envs * T, 2) and traj.next_obs.shape == traj.obs.shape
    assert set(traj.info) == {"goal", "prev_pos", "pos", "vel", "agent_specific"}
    # the relabelling contract: the stored reward is r_new recomputed from the stored info
    r_new = jax.vmap(TASK.reward)(traj.info, traj.info["goal"])
    np.testing.assert_allclose(traj.reward, r_new, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(traj.cost, np.abs(traj.info["pos"][:, 1]) > 0.5)
    # streams are contiguous: next_obs is the next row's obs except where an episode ends
    done = np.asarray(traj.terminated | traj.truncated).reshape(n_envs, T)
    assert done.sum() == n_envs * 3 and np.all(done[:, 39::40])  # 40-step episodes
    obs, next_obs = np.asarray(traj.obs).reshape(n_envs, T, -1), np.asarray(traj.next_obs)
    next_obs = next_obs.reshape(n_envs, T, -1)
    np.testing.assert_array_equal(next_obs[:, :-1][~done[:, :-1]], obs[:, 1:][~done[:, :-1]])
    assert not np.allclose(next_obs[:, 39], obs[:, 40])  # final obs, then a fresh reset
    # actions: uniform random during warm-up (30 steps), the learner's afterwards
    assert np.abs(np.asarray(traj.action)).max() <= 1.0
    assert summary["transitions"] == 480 and summary["episodes"] == 12
    assert summary["unsafe_fraction"] == pytest.approx(float(np.mean(traj.cost)))
    # progress every chunk of 30 vectorised steps, in transitions, with the chunk's metrics
    assert [n for n, _ in calls] == [120, 240, 360, 480]
    assert [m["penalty"] for _, m in calls] == [0.0, 0.0, 10.0, 10.0]  # switch at step 60
    # warm-up: 120 transitions = 30 steps; updates start with step 30's own (as `make_chunk`)
    assert [m["updates"] for _, m in calls] == [1.0, 30.0, 30.0, 30.0]
    assert calls[1][1]["episodes"] == 4 and np.isfinite(calls[-1][1]["critic_loss"])
    with pytest.raises(ValueError, match="seeds .* need a JAX environment"):
        collect(jax.random.PRNGKey(0), "real:ball-run", config, seeds=[0, 1])


def test_host_rollouts_of_a_resting_ball():
    """Zero actions: the ball stays at rest, so an episode of T steps returns T exp(-0.5 g)
    for its goal g (a random downstream goal per episode) and costs nothing."""
    T, n = 12, 20  # 20 episodes: 2 waves of 10 copies
    assert pool_size(n) == 10 and pool_size(16) == 16 and pool_size(33) == 11
    f = downstream_returns_fn("real:ball-run", n, lambda p, obs: p * obs[:2], max_steps=T)
    ret, cost = f(jax.random.PRNGKey(1), jnp.float32(0.0))
    assert ret.shape == cost.shape == (n,) and np.all(np.asarray(cost) == 0)
    g = -2.0 * np.log(np.asarray(ret) / T)  # the goal each return implies
    np.testing.assert_allclose(g, np.round(g, 1), atol=2e-3)  # downstream goals 0.0 .. 4.9
    assert np.unique(np.round(g, 1)).size >= 5  # goals redrawn every episode
    # seeds on the host: one call per seed, stacked like jax.vmap would
    both = host_map(lambda k, p: f(k, p))(jax.random.split(jax.random.PRNGKey(1), 2), jnp.zeros(2))
    assert both[0].shape == (2, n)
    # crowd users: r_user = exp(-0.5 |0 - g_user|) (Ball-Run: no crowd offset)
    latents = jnp.zeros((3, 1))
    ret, cost = latent_returns(
        jax.random.PRNGKey(2), "real:ball-run", lambda x: 0.0 * x[..., :2], latents, 2, T
    )
    assert ret.shape == cost.shape == (3, 2)
    expected = T * np.exp(-0.5 * TASK.user_goals[:, 0])
    np.testing.assert_allclose(ret, np.broadcast_to(expected, (3, 2)), rtol=1e-3)
    np.testing.assert_array_equal(cost, 0.0)


def test_main_job_end_to_end_on_the_real_simulator(tmp_path, capsys):
    """`scpr run --env real:ball-run` on the tiny preset: collect -> label -> downstream ->
    report (Safe-VPL's skill evaluation is `latent_returns` above: it would double the time);
    `scpr online` refuses the host simulator before any work."""
    workdir = tmp_path / "run"
    methods = ("oracle", "task-only")
    args = ["--env", "real:ball-run", "--workdir", str(workdir), *TINY]
    args += ["--set", "collect.total_steps=1600", "--set", "eval_max_steps=40"]
    args += _downstream_tiny(methods, steps=200)
    assert cli.main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "[collect] 1600 transitions" in out
    assert "| Method | Rew (norm) | Cost (norm) |" in out
    table = json.loads((workdir / "report" / "table.json").read_text())
    assert list(table["rows"]) == list(methods)
    assert all(row["n_seeds"] == 2 for row in table["rows"].values())
    for name in ("table.md", "curves.png", "scatter.png"):
        assert (workdir / "report" / name).stat().st_size > 0
    summary = json.loads((workdir / "down-oracle" / "summary.json").read_text())
    assert summary["episodes"] == 20 and np.asarray(summary["curves"]["return"]).shape == (2, 1)
    assert max(summary["return"]) <= 40 * 1.0  # r_new <= 1 per step, 40-step episodes
    assert json.loads((workdir / "config.json").read_text())["env"] == "real:ball-run"

    assert cli.main(["run", "--env", "real:ball-jump", "--workdir", str(tmp_path / "x")]) == 2
    assert "unknown env 'real:ball-jump'" in capsys.readouterr().err
    online = tmp_path / "online"
    assert cli.main(["online", "--env", "real:ball-run", "--workdir", str(online)]) == 2
    assert "host-side real simulator 'real:ball-run'" in capsys.readouterr().err
    assert not online.exists()  # refused before the run directory or its config.json
    sweep = ["sweep", "--env", "real:ball-run", "--stage", "online-safe-vpl", "--workdir"]
    assert cli.main([*sweep, str(online)]) == 2 and not online.exists()
    capsys.readouterr()


def test_envs_and_demo_name_the_real_simulators(capsys):
    assert cli.main(["envs"]) == 0
    names = capsys.readouterr().out.split()
    assert "ball-run/crowd" in names and "real:ball-run/downstream" in names
    assert len([n for n in names if n.startswith("real:")]) == 12
    assert cli.main(["demo", "--envs", "real:ball-run", "--n-envs", "2"]) == 0
    assert re.search(r"real:ball-run/downstream +2 episodes", capsys.readouterr().out)
    assert cli.main(["demo", "--envs", "real:ball-jump"]) == 2
    assert "real:ball-run" in capsys.readouterr().err  # the valid names, real ones too
