"""Sweeps as transforms: the member grid, dynamic-leaf sweeps and sharding over devices."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import methods
from scpr_jax import skill as hl
from scpr_jax.agents import td3
from scpr_jax.data.types import Trajectories
from scpr_jax.downstream import offline
from scpr_jax.train import Members, grid, init_loop, set_leaves
from scpr_jax.train.sweep import sweepable

OBS, ACT = 3, 2


def test_grid_is_values_outer_seeds_inner():
    m = grid([0, 1], {"beta_reg": [0.1, 1.0], "lr": [1e-3]})
    assert m.seeds == (0, 1, 0, 1) and len(m) == 4 and list(m) == [0, 1, 0, 1]
    assert m.hparams == {"beta_reg": (0.1, 0.1, 1.0, 1.0), "lr": (1e-3,) * 4}
    assert m.describe(2) == {"seed": 0, "beta_reg": 1.0, "lr": 1e-3}
    assert grid([3], {}).seeds == (3,)
    with pytest.raises(ValueError, match="'lr' has 1 values for 2 seeds"):
        Members((0, 1), {"lr": (1.0,)})
    with pytest.raises(ValueError, match="must be a non-empty list"):
        Members((), {})


def tiny(beta_reg=1.0):
    cfg = methods.td3bc_config("small", "ball-run", "task-only").unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk, cfg.beta_reg = (16,), 32, 40, 20, beta_reg
    return cfg.lock()


def data_trajs() -> Trajectories:
    k_s, k_a, k_n = jax.random.split(jax.random.PRNGKey(0), 3)
    n = 128
    return Trajectories(
        obs=jax.random.normal(k_s, (n, OBS + 1)),
        action=jax.random.uniform(k_a, (n, ACT), minval=-1.0, maxval=1.0),
        reward=jnp.arange(n, dtype=jnp.float32) / n,
        cost=jnp.zeros(n),
        next_obs=jax.random.normal(k_n, (n, OBS + 1)),
        terminated=jnp.arange(n) % 7 == 0,
        truncated=jnp.zeros(n, bool),
        info={},
    )


def data():
    trajs = data_trajs()
    return offline.offline_data(trajs, trajs.reward, hl.identity_skill(OBS, ACT))


@pytest.mark.usefixtures("quick_xla")
def test_set_leaves_replaces_named_leaves_and_names_the_sweepable_ones():
    d = data()
    loop = init_loop(
        jax.random.PRNGKey(0), lambda k: td3.td3_init(k, OBS + 1, ACT, ACT, tiny(), 1.0), (0, 1)
    )
    assert {"beta_reg", "lr", "tau", "q_scale"} <= set(sweepable(loop.algo, 2))
    new = set_leaves(loop.algo, {"beta_reg": (0.5, 2.0)})
    np.testing.assert_array_equal(new.beta_reg, [0.5, 2.0])
    np.testing.assert_array_equal(new.lr, loop.algo.lr)
    with pytest.raises(ValueError, match=r"cannot sweep \['hidden'\].*sweepable here: .*beta_reg"):
        set_leaves(loop.algo, {"hidden": (1.0, 2.0)})
    assert d.reward.shape == (128,)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("quick_xla")
def test_beta_reg_sweep_gives_each_member_its_value(tmp_path):
    """4 members (2 beta_reg x 2 seeds) in one program; members 1 and 2 (the other seed,
    the other value) equal separate runs with that seed and beta_reg."""
    d, key = data(), jax.random.PRNGKey(7)
    members = grid([0, 1], {"beta_reg": [0.0, 10.0]})
    swept = offline.train_offline(key, d, tiny(), tmp_path / "sweep", seeds=members)
    np.testing.assert_array_equal(swept.beta_reg, [0.0, 0.0, 10.0, 10.0])
    for j in (1, 2):
        info = members.describe(j)
        one = offline.train_offline(
            key, d, tiny(info["beta_reg"]), tmp_path / f"m{j}", seeds=info["seed"]
        )
        jax.tree.map(lambda a, b, j=j: close(a[j], b), jax.device_get(swept), jax.device_get(one))
    actor = jax.device_get(jax.tree.leaves(swept.actor)[-1])
    assert not np.allclose(actor[0], actor[2])  # same seed, other beta_reg: other policy


def test_training_reward_is_reward_plus_omega_times_term():
    r, t = jnp.array([1.0, -2.0]), jnp.array([0.5, 4.0])
    np.testing.assert_allclose(offline.training_reward(jnp.float32(0.25), r, t), [1.125, -1.0])
    with pytest.raises(ValueError, match=r"reward_term has shape \(3,\); the trajectories need"):
        offline.offline_data(data_trajs(), jnp.zeros(128), hl.identity_skill(OBS, ACT), jnp.ones(3))


@pytest.mark.usefixtures("quick_xla")
def test_omega_sweep_is_one_program_over_the_shared_data(tmp_path):
    """omega (RC's mixing weight, Oracle's cost weight) is a state leaf: member j of one
    program on data (reward, term) equals a separate run with omega_j, and omega = 1 equals
    training on the summed reward with no term."""
    trajs, key = data_trajs(), jax.random.PRNGKey(7)
    term = jnp.sin(jnp.arange(128.0))
    d = offline.offline_data(trajs, trajs.reward, hl.identity_skill(OBS, ACT), term)
    members = Members((0, 0), {"omega": (0.0, 1.0)})
    swept = offline.train_offline(key, d, tiny(), tmp_path / "sweep", seeds=members)
    np.testing.assert_array_equal(swept.omega, [0.0, 1.0])
    one = offline.train_offline(key, d, tiny(), tmp_path / "one", seeds=0, omega=1.0)
    summed = offline.offline_data(trajs, trajs.reward + term, hl.identity_skill(OBS, ACT))
    baked = offline.train_offline(key, summed, tiny(), tmp_path / "baked", seeds=0)
    for other in (one, baked):
        jax.tree.map(lambda a, b: close(a[1], b), jax.device_get(swept.critic), other.critic)
    critic = jax.device_get(jax.tree.leaves(swept.critic)[-1])
    assert not np.allclose(critic[0], critic[1])  # same seed, other omega: other critic


def sharded_run(out: str) -> None:
    """Runs the 4-member sweep and saves its final actor (called in a 4-device subprocess)."""
    members = grid([0, 1], {"beta_reg": [0.0, 10.0]})
    state = offline.train_offline(jax.random.PRNGKey(7), data(), tiny(), Path(out).parent / "w",
                                  seeds=members)  # fmt: skip
    leaf = jax.tree.leaves(state.actor)[-1]
    assert len(leaf.sharding.device_set) == jax.device_count() == 4, leaf.sharding
    np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(state.actor)])


@pytest.mark.usefixtures("quick_xla")
def test_sharded_sweep_on_four_cpu_devices_equals_unsharded(tmp_path):
    out = tmp_path / "sharded.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}  # fmt: skip
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
        f"import test_sweep; test_sweep.sharded_run({str(out)!r})"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    members = grid([0, 1], {"beta_reg": [0.0, 10.0]})
    state = offline.train_offline(jax.random.PRNGKey(7), data(), tiny(), tmp_path / "u",
                                  seeds=members)  # fmt: skip
    sharded = np.load(out)
    for i, leaf in enumerate(jax.tree.leaves(state.actor)):
        close(sharded[f"arr_{i}"], np.asarray(leaf))


def test_a_sweep_that_does_not_fit_says_so_before_it_starts(monkeypatch):
    from scpr_jax.train import sweep

    monkeypatch.setattr(sweep, "device_memory", lambda: 2**20)  # a 1 MiB device
    sweep.check_memory(1000, 100)  # 0.1 MB fits
    with pytest.raises(ValueError, match=r"needs ~0.01 GiB per device \(32 members x 0.3 MiB"):
        init_loop(
            jax.random.PRNGKey(0),
            lambda k: {"w": jax.random.normal(k, (80_000,))},  # 0.3 MiB per member
            list(range(32)),
        )
    assert sweep.tree_bytes(jax.ShapeDtypeStruct((4, 2), jnp.float32)) == 32
    assert sweep.tree_bytes({"k": jax.random.split(jax.random.key(0), 3)}) == 24  # typed keys
    loop = init_loop(jax.random.key(1), lambda k: {"key": k, "w": jnp.ones(2)}, [0, 1])
    assert loop.algo["w"].shape == (2, 2)


def test_a_chunk_whose_activations_do_not_fit_says_so_before_it_runs(monkeypatch, tmp_path):
    """A small state passes the init check; the program's [2, 1000, 2000] product (16 MB of
    temporaries, XLA's memory analysis) does not fit a 4 MiB device."""
    from scpr_jax.train import make_chunk, sweep, train_loop

    monkeypatch.setattr(sweep, "device_memory", lambda: 2**22)
    loop = init_loop(jax.random.key(0), lambda k: {"w": jax.random.normal(k, (1000,))}, [0, 1])

    def update(algo, x, key):
        outer = algo["w"][:, None] @ x[None, :]  # [1000, 2000], a dot: materialised
        return {"w": algo["w"] + jnp.tanh(outer).mean(1)}, {"m": outer.mean()}

    chunk = make_chunk(update, lambda key, data: data, 1)
    with pytest.raises(ValueError, match=r"stage 'probe': one training chunk needs ~[\d.]+ GiB"):
        train_loop("probe", loop, chunk, jnp.ones(2000), 1, 1, tmp_path, n_seeds=2)
    assert not (tmp_path / "train.csv").exists()  # stopped before the first update
    monkeypatch.setattr(sweep, "device_memory", lambda: 2**30)
    final = train_loop("probe", loop, chunk, jnp.ones(2000), 1, 1, tmp_path, n_seeds=2)
    assert final.algo["w"].shape == (2, 1000) and int(final.step[0]) == 1
