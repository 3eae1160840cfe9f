"""HDF5 storage of D_tau and D_pref: bit-exact round trips and loud failures."""

import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scripted import scripted_trajectories

from scpr_jax.data import preferences
from scpr_jax.data.storage import (
    DatasetError,
    load_preferences,
    load_trajectories,
    save_preferences,
    save_trajectories,
)
from scpr_jax.envs import make, make_task

ENV = "ball-run/downstream"


@pytest.fixture(scope="module")
def trajs():
    # same rollout as test_preferences, so a joint run compiles it once
    return scripted_trajectories(jax.random.key(0), ENV, 8, 500)


@pytest.fixture()
def saved(tmp_path, trajs):
    path = tmp_path / "d_tau.h5"
    save_trajectories(path, trajs, ENV)
    return path


@pytest.fixture(scope="module")
def prefs(trajs):
    cfg = preferences.label_config("small", "ball-run")
    with cfg.unlocked():
        cfg.n_sets, cfg.minority_ratio, cfg.n_users = 100, 0.2, 3  # as in test_preferences
    return preferences.make_preferences(jax.random.key(1), trajs, make_task("ball-run"), cfg)


def assert_same(a, b):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_trajectories_round_trip_bit_exact(saved, trajs):
    loaded = load_trajectories(saved, env=make(ENV))
    assert loaded.n_streams == trajs.n_streams == 8
    for field in ("obs", "action", "reward", "cost", "next_obs", "terminated", "truncated"):
        assert isinstance(getattr(loaded, field), jax.Array)
        assert_same(getattr(loaded, field), getattr(trajs, field))
    assert (
        set(loaded.info) == set(trajs.info) == {"goal", "prev_pos", "pos", "vel", "agent_specific"}
    )
    for k in trajs.info:
        assert_same(loaded.info[k], trajs.info[k])
    assert [p.name for p in saved.parent.iterdir()] == ["d_tau.h5"]  # no temporary left


def test_dsrl_layout(saved, trajs):
    with h5py.File(saved, "r") as f:
        assert f["observations"].shape == (4000, 7) and f["timeouts"].dtype == bool
        assert f["infos/vel"].shape == (4000, 2)
        assert f.attrs["env_name"] == ENV and f.attrs["n_rows"] == 4000
        assert len(f["rewards"].attrs["sha256"]) == 64


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_file_raises(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[: int(keep * len(data))])
    with pytest.raises(DatasetError, match=r"d_tau\.h5: unreadable or truncated HDF5 file"):
        load_trajectories(saved)


def test_corrupted_bytes_fail_checksum(saved):
    with h5py.File(saved, "r") as f:
        offset = f["costs"].id.get_offset()  # contiguous layout: raw bytes at this offset
    data = bytearray(saved.read_bytes())
    data[offset + 5] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="checksum mismatch in array 'costs'"):
        load_trajectories(saved)


def test_missing_array(saved):
    with h5py.File(saved, "r+") as f:
        del f["infos/vel"]
    with pytest.raises(DatasetError, match="array 'infos/vel' is missing"):
        load_trajectories(saved)


def test_missing_attribute(saved):
    with h5py.File(saved, "r+") as f:
        del f.attrs["n_streams"]
    with pytest.raises(DatasetError, match=r"attributes \['n_streams'\] are missing"):
        load_trajectories(saved)


def test_row_count_mismatch(saved):
    with h5py.File(saved, "r+") as f:
        f.attrs["n_rows"] = 3999
    with pytest.raises(DatasetError, match="expected 3999 rows"):
        load_trajectories(saved)


def test_other_environment_raises(saved):
    with pytest.raises(
        DatasetError, match="'ball-run/downstream', expected 'ball-circle/downstream'"
    ):
        load_trajectories(saved, env="ball-circle/downstream")

    class SameNameOtherSize:
        name, obs_size, action_size = ENV, 8, 2

    with pytest.raises(DatasetError, match="obs_size=7 in the file, the env has 8"):
        load_trajectories(saved, env=SameNameOtherSize())


def test_missing_file_and_wrong_kind(tmp_path, saved):
    with pytest.raises(DatasetError, match="no such file"):
        load_trajectories(tmp_path / "nothing.h5")
    with pytest.raises(DatasetError, match="format 'scpr-jax/trajectories'"):
        load_preferences(saved)


def test_failed_save_keeps_old_file(saved, trajs):
    before = saved.read_bytes()
    bad = trajs.replace(info={**trajs.info, "junk": np.array([object()] * trajs.size)})
    with pytest.raises(TypeError):
        save_trajectories(saved, bad, ENV)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["d_tau.h5"]


def test_preferences_round_trip(tmp_path, prefs, trajs):
    path = tmp_path / "d_pref.h5"
    meta = {"kind": "partial", "K": 10.0}
    save_preferences(path, prefs, ENV, trajs.size, meta=meta)
    loaded, loaded_meta = load_preferences(path, env=ENV, trajs=trajs)
    assert loaded_meta == meta and loaded.segment_len == prefs.segment_len == 32
    for name in preferences.PreferenceSets.__dataclass_fields__:
        if name != "segment_len":
            assert_same(getattr(loaded, name), getattr(prefs, name))
    with pytest.raises(DatasetError, match="made for a dataset of 4000 rows"):
        load_preferences(path, trajs=trajs.replace(reward=jnp.zeros(10)))
    with pytest.raises(DatasetError, match="expected 'ball-reach/downstream'"):
        load_preferences(path, env="ball-reach/downstream")
