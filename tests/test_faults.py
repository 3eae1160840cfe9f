"""Fault injection: kill -9 at random points, Ctrl-C, damaged files, NaN data. Each case must
end in a named error or in a correct resume, never in a wrong result with exit 0."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_collect import tiny_config
from test_stages import TINY, _downstream_tiny
from test_train_loop import _init, _regression

from scpr_jax import cli, methods
from scpr_jax.artifacts import ArtifactError, load_skill
from scpr_jax.config import pipeline_config
from scpr_jax.data import collect as collect_lib
from scpr_jax.data.storage import DatasetError, load_trajectories
from scpr_jax.errors import IntegrityError
from scpr_jax.runs import RunDir
from scpr_jax.stages.downstream import method_skill
from scpr_jax.train import loop as loop_lib
from scpr_jax.train.logging import MetricLogger

ORACLE = [*TINY, *_downstream_tiny(("oracle",), steps=400)]


def _interrupt_after_saves(monkeypatch, n: int) -> None:
    """Ctrl-C right after the ``n``-th checkpoint of any stage."""
    save, count = loop_lib.Checkpoints.save, [0]

    def interrupted(self, step, state):
        save(self, step, state)
        count[0] += self.stage != "collect"  # collect's every 20 chunks are not counted
        if count[0] == n:
            self.close()
            raise KeyboardInterrupt

    monkeypatch.setattr(loop_lib.Checkpoints, "save", interrupted)


def _table(workdir: Path) -> dict:
    return json.loads((workdir / "report" / "table.json").read_text())["rows"]


def test_ctrl_c_then_resume_is_exact_and_other_settings_are_refused(tmp_path, capsys, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    lr = ["--set", "td3bc.oracle.lr=1e-3"]
    assert cli.main(["run", "--workdir", str(full), *ORACLE, *lr]) == 0
    with monkeypatch.context() as m:
        _interrupt_after_saves(m, 1)
        assert cli.main(["run", "--workdir", str(cut), *ORACLE, *lr]) == 130
    assert "re-run the same command to resume" in capsys.readouterr().err
    assert cli.main(["run", "--workdir", str(cut), *ORACLE]) == 2  # without the lr override
    err = capsys.readouterr().err
    assert "td3bc.oracle.lr: 0.001 -> 0.0003" in err and "down-oracle" in err
    assert cli.main(["run", "--workdir", str(cut), *ORACLE, *lr]) == 0
    assert _table(cut) == _table(full)

    # a sweep program resumed for other members: refused before any work
    sweep = ["sweep", "--stage", "down-oracle", "--seeds", "0", "--workdir", str(cut), *ORACLE]
    with monkeypatch.context() as m:
        _interrupt_after_saves(m, 1)
        assert cli.main([*sweep, *lr, "--set", "bc_alpha=2.5,20"]) == 130
    assert cli.main([*sweep, *lr, "--set", "bc_alpha=2.5,30"]) == 2
    assert "members:" in capsys.readouterr().err


def _scpr(workdir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scpr_jax.cli", *args, "--workdir", str(workdir)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_at_random_points_resumes_to_the_uninterrupted_result(tmp_path):
    """A tiny `scpr run` and a tiny sweep, each killed (SIGKILL) twice at random moments and
    re-run until done, end with the same table as uninterrupted runs."""
    rng = random.Random(0)
    sweep = ["sweep", "--stage", "down-oracle", "--seeds", "0,1", *ORACLE, "--set",
             "bc_alpha=2.5,20"]  # fmt: skip
    for args, result in ((["run", *ORACLE], "report/table.json"),
                         (sweep, "sweep-down-oracle/results.json")):  # fmt: skip
        full = _scpr(tmp_path / "full", *args)
        assert full.wait() == 0, full.stderr.read()
        t0 = time.monotonic()
        for _ in range(2):
            proc = _scpr(tmp_path / "cut", *args)
            time.sleep(rng.uniform(3.0, 25.0))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        resumed = _scpr(tmp_path / "cut", *args)
        assert resumed.wait() == 0, resumed.stderr.read()
        assert time.monotonic() - t0 < 600
        a, b = (json.loads((tmp_path / d / result).read_text()) for d in ("full", "cut"))
        if "members" in a:
            a, b = a["members"], b["members"]
        else:
            a, b = a["rows"], b["rows"]
        assert a == b


def test_collect_resumes_from_its_checkpoint_bit_identically(tmp_path):
    env, cfg = "ball-run/downstream", tiny_config()
    key = jax.random.PRNGKey(3)
    whole, _ = collect_lib.collect(key, env, cfg)

    def stop(done, metrics):
        if done >= 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect_lib.collect(key, env, cfg, stop, workdir=tmp_path, checkpoint_every=1)
    assert (tmp_path / "ckpt").is_dir() and (tmp_path / "ckpt.sha256.json").exists()
    resumed, _ = collect_lib.collect(key, env, cfg, workdir=tmp_path, checkpoint_every=1)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    data, chunk = _regression()
    full = loop_lib.train_loop("probe", _init(1), chunk, data, 40, 10, tmp_path / "full")
    for flip in ("bit", "truncate"):
        cut = tmp_path / flip
        loop_lib.train_loop("probe", _init(1), chunk, data, 30, 10, cut)  # keeps steps 20, 30
        files = sorted((p for p in (cut / "ckpt" / "30").rglob("*") if p.is_file()),
                       key=lambda p: p.stat().st_size)  # fmt: skip
        for p in files:
            if flip == "bit":
                _flip(p, p.stat().st_size // 2)
            else:
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
        resumed = loop_lib.train_loop("probe", _init(1), chunk, data, 40, 10, cut)
        np.testing.assert_array_equal(resumed.algo, full.algo)  # never different parameters
        assert "resuming from checkpoint 20" in capsys.readouterr().err
    for p in (tmp_path / "bit" / "ckpt").rglob("*"):  # every kept step damaged: named error
        if p.is_file() and p.stat().st_size > 64:
            p.write_bytes(b"\0" * p.stat().st_size)
    with pytest.raises(IntegrityError, match="cannot restore checkpoint 40"):
        loop_lib.train_loop("probe", _init(1), chunk, data, 60, 10, tmp_path / "bit")


def test_damaged_data_metadata_and_artifacts_are_named(tmp_path):
    workdir = tmp_path / "run"
    assert cli.main(["collect", "--workdir", str(workdir), *TINY]) == 0
    path = workdir / "collect" / "trajectories.h5"
    with h5py.File(path, "r+") as f:
        f.attrs["n_streams"] = f.attrs["n_streams"] // 2  # still divides the rows
    with pytest.raises(DatasetError, match="checksum mismatch in the file's attributes"):
        load_trajectories(path)
    with h5py.File(path, "r+") as f:
        f.attrs["n_streams"] = f.attrs["n_streams"] * 2
    load_trajectories(path)  # restored: fine again
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    assert cli.main(["label", "--workdir", str(workdir), *TINY]) == 4

    run, cfg = RunDir(workdir), pipeline_config()
    run.mark_done("vpl", {"summary": {}})  # a finished skill stage whose artifact is gone
    with pytest.raises(ArtifactError, match=r"vpl/skill.json does not exist"):
        method_skill(run, cfg, methods.get("safe-vpl"))
    (workdir / "vpl" / "skill.json").write_text('{"format": "scpr-jax artifact", "vers')
    with pytest.raises(ArtifactError, match="unreadable artifact"):
        load_skill(workdir / "vpl")
    (workdir / "vpl" / "DONE.json").write_text('{"summary": ')  # torn by hand
    with pytest.raises(IntegrityError, match="DONE.json is damaged"):
        run.done("vpl")


def test_a_torn_log_line_is_dropped_on_resume(tmp_path, capsys):
    log = MetricLogger(tmp_path, "train")
    for step in (10, 20, 30):
        log.log(step, {"loss": np.float32(step)})
    log.close()
    with (tmp_path / "train.jsonl").open("a") as f:
        f.write('{"step": 40, "lo')  # killed mid-write
    MetricLogger(tmp_path, "train", resume_step=20).close()
    rows = [json.loads(x)["step"] for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rows == [10, 20] and "torn last line" in capsys.readouterr().err
    (tmp_path / "train.jsonl").write_text('{"step": 10}\nnot json\n{"step": 20}\n')
    with pytest.raises(IntegrityError, match=r"train.jsonl: line 2 is damaged"):
        MetricLogger(tmp_path, "train", resume_step=20)


def test_a_diverged_collector_is_stopped_before_anything_is_saved(tmp_path, capsys):
    workdir = tmp_path / "run"
    bad = ["--set", "collect.lr=1e3"]
    code = cli.main(["collect", "--workdir", str(workdir), *TINY, *bad])
    err = capsys.readouterr().err
    assert code == 5, err
    assert "stage 'collect'" in err and "first bad row" in err and "collect.lr" in err
    assert not (workdir / "collect" / "trajectories.h5").exists()
    assert RunDir(workdir).done("collect") is None


def test_nan_stop_names_the_stage_directory(tmp_path):
    def update(w, batch, key):
        return w * jnp.nan, {"loss": jnp.sum(w * jnp.nan)}

    chunk = loop_lib.make_chunk(update, lambda k, d: d, n_updates=5)
    with pytest.raises(FloatingPointError, match=f"stage 'boom' \\({tmp_path}"):
        loop_lib.train_loop("boom", _init(0), chunk, jnp.zeros(1), 20, 5, tmp_path)
