"""HDF5 files for D_tau (`Trajectories`) and D_pref (`PreferenceSets`), verified on load.

Trajectory files follow the DSRL/D4RL layout: datasets ``observations``, ``actions``,
``rewards``, ``costs``, ``next_observations``, ``terminals``, ``timeouts`` and
``infos/<field>``. Every dataset carries the SHA-256 of its raw bytes (attribute ``sha256``)
and the file's root attributes list every dataset (``arrays``), the format and its version,
the environment name and the sizes, with the SHA-256 of all of them (``attrs_sha256``; files
written before it existed are read unchecked). Loading reads everything, checks all of it
and returns arrays on the device; any problem raises `DatasetError` naming the file: a partial or
silently wrong dataset is never returned. Writes go to a temporary file in the target
directory that replaces the target atomically, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.data.preferences import PreferenceSets
from scpr_jax.data.types import Trajectories
from scpr_jax.errors import IntegrityError
from scpr_jax.runs import is_writer

FORMAT_VERSION = 1
TRAJ_FORMAT = "scpr-jax/trajectories"
PREF_FORMAT = "scpr-jax/preferences"
TRAJ_FIELDS = {  # file dataset -> Trajectories field
    "observations": "obs",
    "actions": "action",
    "rewards": "reward",
    "costs": "cost",
    "next_observations": "next_obs",
    "terminals": "terminated",
    "timeouts": "truncated",
}
TRAJ_ATTRS = ("env_name", "obs_size", "action_size", "n_streams", "n_rows")
PREF_ATTRS = ("env_name", "segment_len", "dataset_rows", "meta")
PREF_FIELDS = ("starts1", "starts2", "y", "annotated", "user_goals", "train_sets", "eval_sets")


class DatasetError(IntegrityError):
    """A dataset file is unreadable, incomplete, corrupted or for another environment."""


def _sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _attrs_sha256(attrs: dict[str, Any]) -> str:
    """SHA-256 of the root attributes (all but itself): sizes and names that shape results."""
    plain = {k: v.item() if hasattr(v, "item") else v for k, v in attrs.items()}
    plain.pop("attrs_sha256", None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


def _verify_attrs(path: str, attrs: dict[str, Any]) -> None:
    """After the specific checks: any other change to the root attributes (a flipped bit)."""
    if "attrs_sha256" in attrs and _attrs_sha256(attrs) != attrs["attrs_sha256"]:
        raise DatasetError(f"{path}: checksum mismatch in the file's attributes (corrupted)")


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 over a file's recorded checksums (every dataset's and the attributes'), read
    from its metadata alone: it changes whenever the file's content does."""
    try:
        with h5py.File(path, "r") as f:
            parts = [f"{n}:{f[n].attrs.get('sha256')}" for n in json.loads(f.attrs["arrays"])]
            parts.append(str(f.attrs.get("attrs_sha256") or _attrs_sha256(dict(f.attrs))))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable or truncated HDF5 file ({e})") from e
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _write(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict[str, Any]):
    """Writes ``arrays`` (name -> array) and root ``attrs`` to ``path`` atomically (in
    process 0 only of a multi-host run, see `runs.is_writer`)."""
    if not is_writer():
        return
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".h5")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for name, x in arrays.items():
                f.create_dataset(name, data=x).attrs["sha256"] = _sha256(x)
            f.attrs.update({**attrs, "arrays": json.dumps(sorted(arrays))})
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["attrs_sha256"] = _attrs_sha256(dict(f.attrs))
        with open(tmp, "rb") as fh:  # the bytes must be on disk before the rename exposes them
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read(
    path: str | os.PathLike, fmt: str, required: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and checksums every dataset of a ``fmt`` file; returns (arrays, root attrs).

    ``required``: root attributes that must be present.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != fmt:
                raise DatasetError(f"{path}: format {attrs.get('format')!r}, expected {fmt!r}")
            if attrs.get("format_version") != FORMAT_VERSION:
                raise DatasetError(
                    f"{path}: format version {attrs.get('format_version')!r}, "
                    f"this code reads version {FORMAT_VERSION}"
                )
            absent = [a for a in ("arrays", *required) if a not in attrs]
            if absent:
                raise DatasetError(f"{path}: attributes {absent} are missing")
            arrays = {}
            for name in json.loads(attrs["arrays"]):
                if name not in f:
                    raise DatasetError(f"{path}: array {name!r} is missing")
                x = f[name][()]
                if _sha256(x) != f[name].attrs.get("sha256"):
                    raise DatasetError(f"{path}: checksum mismatch in array {name!r} (corrupted)")
                arrays[name] = x
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py's errors on damaged files
        raise DatasetError(f"{path}: unreadable or truncated HDF5 file ({e})") from e
    return arrays, attrs


def _check_env(path: str, attrs: dict, env: Any) -> None:
    """``env`` is None, an environment name, or an environment object (name and sizes)."""
    if env is None:
        return
    name = env if isinstance(env, str) else env.name
    if attrs["env_name"] != name:
        raise DatasetError(f"{path}: dataset is for env {attrs['env_name']!r}, expected {name!r}")
    if isinstance(env, str):
        return
    for size in ("obs_size", "action_size"):
        if size in attrs and int(attrs[size]) != getattr(env, size):
            raise DatasetError(
                f"{path}: {size}={int(attrs[size])} in the file, the env has {getattr(env, size)}"
            )


def _check_rows(path: str, arrays: dict[str, np.ndarray], n_rows: int) -> None:
    for name, x in arrays.items():
        if x.ndim == 0 or x.shape[0] != n_rows:
            raise DatasetError(
                f"{path}: array {name!r} has shape {x.shape}, expected {n_rows} rows"
            )


def save_trajectories(path: str | os.PathLike, trajs: Trajectories, env_name: str) -> None:
    """Writes D_tau to an HDF5 file (atomic)."""
    arrays = {name: np.asarray(getattr(trajs, field)) for name, field in TRAJ_FIELDS.items()}
    for k, v in trajs.info.items():
        if not isinstance(v, jax.Array | np.ndarray):
            raise ValueError(f"info[{k!r}] must be an array (flat info dict), got {type(v)}")
        arrays[f"infos/{k}"] = np.asarray(v)
    attrs = {
        "format": TRAJ_FORMAT,
        "env_name": env_name,
        "obs_size": trajs.obs.shape[-1],
        "action_size": trajs.action.shape[-1],
        "n_streams": trajs.n_streams,
        "n_rows": trajs.size,
    }
    _write(path, arrays, attrs)


def load_trajectories(path: str | os.PathLike, env: Any = None) -> Trajectories:
    """Reads and verifies D_tau; ``env`` (a name or an env object) must match when given."""
    path = os.fspath(path)
    arrays, attrs = _read(path, TRAJ_FORMAT, TRAJ_ATTRS)
    _check_env(path, attrs, env)
    missing = [name for name in TRAJ_FIELDS if name not in arrays]
    if missing:
        raise DatasetError(f"{path}: arrays {missing} are missing")
    n_rows, n_streams = int(attrs["n_rows"]), int(attrs["n_streams"])
    _check_rows(path, arrays, n_rows)
    if n_streams < 1 or n_rows % n_streams:
        raise DatasetError(f"{path}: n_rows={n_rows} is not a multiple of n_streams={n_streams}")
    for name, size in (
        ("observations", "obs_size"),
        ("next_observations", "obs_size"),
        ("actions", "action_size"),
    ):
        if arrays[name].shape[1:] != (int(attrs[size]),):
            raise DatasetError(
                f"{path}: {name} has shape {arrays[name].shape}, {size}={attrs[size]}"
            )
    _verify_attrs(path, attrs)
    fields = {field: jnp.asarray(arrays[name]) for name, field in TRAJ_FIELDS.items()}
    info = {n.removeprefix("infos/"): jnp.asarray(x) for n, x in arrays.items() if "/" in n}
    return Trajectories(**fields, info=info, n_streams=n_streams)


def save_preferences(
    path: str | os.PathLike,
    prefs: PreferenceSets,
    env_name: str,
    dataset_rows: int,
    meta: dict | None = None,
) -> None:
    """Writes D_pref (indices into a D_tau of ``dataset_rows`` rows, labels, split) atomically.

    ``meta`` (JSON-serialisable, e.g. the label config) is stored as the ``meta`` attribute.
    """
    arrays = {name: np.asarray(getattr(prefs, name)) for name in PREF_FIELDS}
    attrs = {
        "format": PREF_FORMAT,
        "env_name": env_name,
        "segment_len": prefs.segment_len,
        "dataset_rows": int(dataset_rows),
        "meta": json.dumps(meta or {}),
    }
    _write(path, arrays, attrs)


def load_preferences(
    path: str | os.PathLike, env: Any = None, trajs: Trajectories | None = None
) -> tuple[PreferenceSets, dict]:
    """Reads and verifies D_pref; returns (prefs on device, meta).

    ``env`` (name or env object) and ``trajs`` (the D_tau the indices point into) are checked
    when given.
    """
    path = os.fspath(path)
    arrays, attrs = _read(path, PREF_FORMAT, PREF_ATTRS)
    _check_env(path, attrs, env)
    missing = [name for name in PREF_FIELDS if name not in arrays]
    if missing:
        raise DatasetError(f"{path}: arrays {missing} are missing")
    segment_len, rows = int(attrs["segment_len"]), int(attrs["dataset_rows"])
    if arrays["y"].ndim != 3:
        raise DatasetError(f"{path}: y has shape {arrays['y'].shape}, expected 3 dimensions")
    n_users, n_sets, n_pairs = arrays["y"].shape
    shapes = {
        "starts1": (n_sets, n_pairs),
        "starts2": (n_sets, n_pairs),
        "annotated": (n_users, n_sets),
        "user_goals": (n_users, arrays["user_goals"].shape[-1]),
    }
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise DatasetError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
    if trajs is not None and trajs.size != rows:
        raise DatasetError(f"{path}: made for a dataset of {rows} rows, given {trajs.size} rows")
    for name in ("starts1", "starts2"):
        if arrays[name].size and (
            arrays[name].min() < 0 or arrays[name].max() + segment_len > rows
        ):
            raise DatasetError(f"{path}: {name} points outside the dataset's {rows} rows")
    split = np.concatenate([arrays["train_sets"], arrays["eval_sets"]])
    if not np.array_equal(np.sort(split), np.arange(n_sets)):
        raise DatasetError(f"{path}: train_sets and eval_sets do not partition the {n_sets} sets")
    _verify_attrs(path, attrs)
    prefs = PreferenceSets(
        **{n: jnp.asarray(arrays[n]) for n in PREF_FIELDS}, segment_len=segment_len
    )
    return prefs, json.loads(attrs["meta"])
