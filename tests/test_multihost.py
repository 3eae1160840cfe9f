"""Multi-host runs: 2 processes x 2 CPU devices joined by jax.distributed on localhost.

A 4-seed toy learner (noisy SGD on a linear regression, typed PRNG keys, an evaluation that
reads the state with ``np.asarray``) runs in the two processes, in one 4-device process and
unsharded here; all must agree, a resumed multi-host run must equal an uninterrupted one, and
only process 0 may write logs, JSON or progress output.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scpr_jax import runs
from scpr_jax.train import MetricLogger, init_loop, make_chunk, train_loop
from scpr_jax.train.distributed import fetch, host_local, maybe_initialize

SEEDS, ODD = [0, 1, 2, 3], [5, 6, 7]  # 4 members shard over 4 devices, 3 are replicated
TOTAL, CHUNK = 40, 10


def _learner():
    """(data, chunk, init, evaluate) of noisy SGD on y = x w*, one w [3] per member."""
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    w_true = jnp.array([1.0, -2.0, 0.5])
    data = (x, x @ w_true)

    def sample(key, data):
        idx = jax.random.randint(key, (16,), 0, data[0].shape[0])
        return data[0][idx], data[1][idx]

    def update(algo, batch, key):
        loss, grad = jax.value_and_grad(lambda w: jnp.mean((batch[0] @ w - batch[1]) ** 2))(
            algo["w"]
        )
        w = algo["w"] - algo["lr"] * grad + 1e-3 * jax.random.normal(key, (3,))
        return algo | {"w": w}, {"loss": loss}

    def init(key):
        return {"w": jax.random.normal(key, (3,)), "lr": jnp.float32(0.05), "k": key}

    def evaluate(loop):  # like the stages' hooks: reads the state on the host
        w = np.asarray(loop.algo["w"])
        return {"error": np.abs(w - np.asarray(w_true)).sum(-1)}

    return data, make_chunk(update, sample, CHUNK), init, evaluate


def run(workdir, seeds, total, calls=None):
    """Trains ``seeds`` to ``total`` updates in ``workdir`` (resuming); the final state."""
    data, chunk, init, evaluate = _learner()
    loop = init_loop(jax.random.key(3), init, seeds)
    return train_loop(
        "toy", loop, chunk, data, total, CHUNK, workdir, n_seeds=len(seeds), evaluate=evaluate,
        eval_every=20, progress=lambda *a: calls.append(a[0]) if calls is not None else None,
    )  # fmt: skip


def _arrays(loop) -> dict:
    return {"w": np.asarray(loop.algo["w"]), "key": np.asarray(jax.random.key_data(loop.key))}


def worker(out: str) -> None:
    """One process of the multi-host run (or the 4-device reference without SCPR_* set)."""
    maybe_initialize(os.environ)
    if os.environ.get("SCPR_XLA_CACHE"):  # conftest's cache: the runs repeat one program
        jax.config.update("jax_compilation_cache_dir", os.environ["SCPR_XLA_CACHE"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    assert jax.device_count() == 4, jax.devices()
    out, calls = Path(out), []
    full = run(out / "full", SEEDS, TOTAL, calls)
    assert full.algo["w"].is_fully_addressable  # a host-local copy callers can read
    run(out / "cut", SEEDS, TOTAL // 2)  # "killed" half-way, then resumed
    resumed = run(out / "cut", SEEDS, TOTAL)
    odd = run(out / "odd", ODD, TOTAL)
    run_dir = runs.RunDir(out / "run")
    runs.atomic_write_json(run_dir.stage("toy") / "summary.json", {"by": jax.process_index()})
    run_dir.mark_done("toy", {"by": jax.process_index()})
    results = {f"full_{k}": v for k, v in _arrays(full).items()}
    results |= {f"resumed_{k}": v for k, v in _arrays(resumed).items()}
    results |= {f"odd_{k}": v for k, v in _arrays(odd).items()}
    np.savez(out / f"result{jax.process_index()}.npz", calls=np.asarray(calls), **results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, env: dict) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
        f"import test_multihost; test_multihost.worker({str(out)!r})"  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", **env}  # fmt: skip
    log = out.parent / f"{out.name}{env.get('SCPR_PROCESS_ID', '')}.log"
    with log.open("w") as f:  # a file, not a pipe nobody reads while the others run
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=f, stderr=f)
    proc.log = log
    return proc


def _wait(procs: list[subprocess.Popen]) -> None:
    try:
        for p in procs:
            p.wait(timeout=180)
    finally:
        for p in procs:  # one failed process leaves the other waiting in a collective
            if p.poll() is None:
                p.kill()
                p.wait()
    for p in procs:
        assert p.returncode == 0, p.log.read_text()[-4000:]


@pytest.mark.usefixtures("quick_xla")
def test_two_processes_equal_one_process_and_only_process_0_writes(tmp_path):
    multi, single = tmp_path / "multi", tmp_path / "single"
    coordinator = {"SCPR_COORDINATOR": f"127.0.0.1:{_free_port()}", "SCPR_NUM_PROCESSES": "2"}
    procs = [_launch(multi, coordinator | {"SCPR_PROCESS_ID": str(i)}) for i in (0, 1)]
    procs.append(_launch(single, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}))
    try:
        unsharded = {
            "full": run(tmp_path / "u", SEEDS, TOTAL),
            "odd": run(tmp_path / "o", ODD, TOTAL),
        }
    finally:
        _wait(procs)
    p0, p1, ref = (np.load(d / f"result{i}.npz") for d, i in ((multi, 0), (multi, 1), (single, 0)))
    for name in ("full", "odd"):
        for k, v in _arrays(unsharded[name]).items():
            np.testing.assert_array_equal(p0[f"{name}_{k}"], p1[f"{name}_{k}"])
            np.testing.assert_allclose(p0[f"{name}_{k}"], ref[f"{name}_{k}"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(p0[f"{name}_{k}"], v, rtol=1e-5, atol=1e-6)
    for k in ("w", "key"):  # resume equals the uninterrupted run
        np.testing.assert_array_equal(p0[f"resumed_{k}"], p0[f"full_{k}"])
    # only process 0 wrote: one TensorBoard file, each row once, its own JSON, its progress
    assert list(p0["calls"]) == [10, 20, 30, 40] and len(p1["calls"]) == 0
    for workdir, n_runs in (("full", 1), ("cut", 2)):  # TensorBoard: a file per stream and run
        names = sorted(p.suffix for p in (multi / workdir / "tb").iterdir())
        assert names == [".eval"] * n_runs + [".train"] * n_runs
        rows = (multi / workdir / "train.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == [10, 20, 30, 40]
        evals = (multi / workdir / "eval.jsonl").read_text().splitlines()
        assert [json.loads(e)["step"] for e in evals] == [20, 40]
        assert len(json.loads(evals[-1])["error"]) == 4  # per seed
    assert json.loads((multi / "run" / "toy" / "summary.json").read_text()) == {"by": 0}
    assert runs.RunDir(multi / "run").done("toy") == {"by": 0}
    assert sorted(p.name for p in (multi / "full" / "ckpt").iterdir()) == ["30", "40"]


@pytest.mark.usefixtures("quick_xla")
def test_other_processes_write_nothing_but_checkpoints(tmp_path, monkeypatch):
    """Process 1's view, mocked: no logs, JSON or progress; orbax still checkpoints."""
    monkeypatch.setattr(runs, "is_writer", lambda: False)
    calls = []
    final = run(tmp_path / "w", SEEDS[:2], 20, calls)
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["ckpt"]
    log = MetricLogger(tmp_path / "log", "train")
    assert log.log(1, {"loss": np.array([1.0, 3.0])}) == {"loss": 2.0}
    log.close()
    runs.atomic_write_json(tmp_path / "x.json", {"a": 1})
    runs.RunDir(tmp_path / "r").mark_done("s", {})
    assert not (tmp_path / "log").exists() and not (tmp_path / "x.json").exists()
    assert runs.RunDir(tmp_path / "r").done("s") is None
    monkeypatch.undo()  # process 0 resumes the same run directory
    again = run(tmp_path / "w", SEEDS[:2], 20, calls)
    np.testing.assert_array_equal(again.algo["w"], final.algo["w"])


def test_is_writer_follows_the_process_index(monkeypatch):
    assert runs.is_writer()
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not runs.is_writer()


def test_single_process_fetch_and_host_local_are_plain():
    tree = {"a": jnp.arange(3.0), "k": jax.random.key(0), "n": 1.5}
    assert host_local(tree)["a"] is tree["a"]
    assert isinstance(fetch(tree)["a"], np.ndarray)


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"SCPR_COORDINATOR": "h:1", "SCPR_NUM_PROCESSES": "two", "SCPR_PROCESS_ID": "0"},
         "SCPR_NUM_PROCESSES='two' must be an integer"),
        ({"SCPR_COORDINATOR": "h:1", "SCPR_NUM_PROCESSES": "2", "SCPR_PROCESS_ID": "2"},
         "SCPR_PROCESS_ID=2 with SCPR_NUM_PROCESSES=2"),
        ({"SCPR_COORDINATOR": "h", "SCPR_NUM_PROCESSES": "2", "SCPR_PROCESS_ID": "0"},
         "SCPR_COORDINATOR='h' must be host:port"),
        ({"SCPR_DISTRIBUTED": "yes"}, "SCPR_DISTRIBUTED='yes'"),
    ],
)  # fmt: skip
def test_bad_launch_settings_say_what_is_allowed(environ, match):
    with pytest.raises(ValueError, match=match):
        maybe_initialize(environ)


def test_no_settings_means_one_process():
    assert maybe_initialize({}) is False


def test_train_and_eval_streams_keep_their_own_tensorboard_files(tmp_path):
    """Writers opened in the same second once shared one file and lost each other's rows."""
    logs = [MetricLogger(tmp_path, stream) for stream in ("train", "eval", "train")]
    for log in logs:
        log.log(1, {"x": 1.0})
        log.close()
    assert sorted(p.suffix for p in (tmp_path / "tb").iterdir()) == [".eval", ".train", ".train"]
