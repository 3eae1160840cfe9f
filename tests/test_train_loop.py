"""The shared training loop: scan chunks, resume from checkpoint, NaN stop, seed vmap."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax.train import LoopState, make_chunk, train_loop


def _regression():
    """Linear regression by SGD on on-device data: a tiny probe algorithm."""
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 3))
    data = (x, x @ jnp.array([1.0, -2.0, 0.5]))

    def sample(key, data):
        idx = jax.random.randint(key, (32,), 0, data[0].shape[0])
        return data[0][idx], data[1][idx]

    def update(w, batch, key):
        del key
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((batch[0] @ w - batch[1]) ** 2))(w)
        return w - 0.05 * grad, {"loss": loss}

    return data, make_chunk(update, sample, n_updates=10)


def _init(seed):
    return LoopState(algo=jnp.zeros(3), key=jax.random.PRNGKey(seed), step=jnp.asarray(0))


def test_loop_learns_and_logs(tmp_path):
    data, chunk = _regression()
    final = train_loop("probe", _init(0), chunk, data, 200, 10, tmp_path, checkpoint_every=5)
    np.testing.assert_allclose(final.algo, [1.0, -2.0, 0.5], atol=1e-2)
    assert int(final.step) == 200
    rows = (tmp_path / "train.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and len(rows) == 21
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[-1])["step"] == 200
    assert list((tmp_path / "tb").iterdir())  # TensorBoard event file


def test_resume_matches_uninterrupted(tmp_path):
    data, chunk = _regression()
    full = train_loop("probe", _init(1), chunk, data, 100, 10, tmp_path / "full")
    # "Kill" after 50 updates: run to 50, then restart the same stage with the target 100.
    train_loop("probe", _init(1), chunk, data, 50, 10, tmp_path / "cut")
    resumed = train_loop("probe", _init(1), chunk, data, 100, 10, tmp_path / "cut")
    np.testing.assert_array_equal(resumed.algo, full.algo)
    np.testing.assert_array_equal(resumed.key, full.key)
    rows = (tmp_path / "cut" / "train.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(10, 101, 10))


def test_a_checkpoint_of_another_state_is_refused_with_the_directory(tmp_path):
    data, chunk = _regression()
    train_loop("probe", _init(0), chunk, data, 10, 10, tmp_path)
    other = _init(0).replace(algo={"w": jnp.zeros(3), "lr": jnp.float32(0.1)})  # a new leaf
    with pytest.raises(ValueError, match=r"stage 'probe': cannot restore checkpoint 10 of .*ckpt"):
        train_loop("probe", other, chunk, data, 20, 10, tmp_path)


def test_nan_stops_with_stage_and_step(tmp_path):
    def update(w, batch, key):
        return w * jnp.nan, {"loss": jnp.sum(w * jnp.nan)}

    chunk = make_chunk(update, lambda k, d: d, n_updates=5)
    with pytest.raises(FloatingPointError, match="stage 'boom'.*'loss'.*update 5"):
        train_loop("boom", _init(0), chunk, jnp.zeros(1), 20, 5, tmp_path)


def test_vmapped_seeds_equal_separate_runs(tmp_path):
    data, chunk = _regression()
    seeds = jax.tree.map(lambda a, b: jnp.stack([a, b]), _init(3), _init(4))
    both = train_loop("probe", seeds, chunk, data, 50, 10, tmp_path / "v", n_seeds=2)
    for i, seed in enumerate((3, 4)):
        one = train_loop("probe", _init(seed), chunk, data, 50, 10, tmp_path / f"s{seed}")
        np.testing.assert_allclose(both.algo[i], one.algo, rtol=1e-6, atol=1e-6)


def test_chunk_compiles_once():
    data, chunk = _regression()
    traces = []

    def counted(loop, data):
        traces.append(1)
        return chunk(loop, data)

    fn = jax.jit(counted)
    loop = _init(0)
    for _ in range(3):
        loop, _ = fn(loop, data)
    assert len(traces) == 1
