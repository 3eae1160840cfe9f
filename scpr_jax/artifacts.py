"""Versioned artifacts a finished stage hands to later ones: arrays plus a static description.

An artifact ``<dir>/<name>.msgpack`` holds a pytree's arrays (flax's msgpack state dict) and
``<dir>/<name>.json`` its description: format version, what it is (``kind``), the static
settings needed to apply it (``meta``) and the SHA-256 of the arrays' file. Both are written
atomically by process 0, the description last, so a reader never sees half an artifact.
Skills (`save_skill` / `load_skill`) are the main use: a downstream stage acts through the
skill stage's artifact and never re-runs its training code to get it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from scpr_jax.errors import IntegrityError
from scpr_jax.runs import atomic_write_bytes, atomic_write_json
from scpr_jax.skill import Skill

FORMAT, VERSION = "scpr-jax artifact", 1


class ArtifactError(IntegrityError):
    """A missing, damaged or incompatible artifact (the message names the file)."""


def save(directory: str | Path, name: str, kind: str, tree: Any, meta: dict) -> Path:
    """Writes the arrays of ``tree`` and its description; returns the description's path."""
    directory = Path(directory)
    data = serialization.msgpack_serialize(serialization.to_state_dict(tree))
    atomic_write_bytes(directory / f"{name}.msgpack", data)
    description = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "meta": meta,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_json(directory / f"{name}.json", description)
    return directory / f"{name}.json"


def load(directory: str | Path, name: str, kind: str) -> tuple[Any, dict]:
    """(state dict of NumPy arrays, meta) of artifact ``name``; ArtifactError naming the file
    if it is missing, of another kind or version, or its arrays do not match their checksum."""
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise ArtifactError(
            f"{path} does not exist: the stage in {path.parent} did not save its {kind} "
            "artifact (it may have finished with an older scpr-jax); delete that stage "
            "directory to redo it"
        )
    try:
        description = json.loads(path.read_text())
        data = (path.parent / f"{name}.msgpack").read_bytes()
    except (OSError, ValueError) as err:  # a torn description, a missing arrays file
        raise ArtifactError(
            f"{path}: unreadable artifact ({err}); delete {path.parent} to redo that stage"
        ) from err
    description = description if isinstance(description, dict) else {}
    if (description.get("format"), description.get("version")) != (FORMAT, VERSION):
        raise ArtifactError(
            f"{path}: format {description.get('format')!r} version "
            f"{description.get('version')!r}; this scpr-jax reads {FORMAT!r} version {VERSION}"
        )
    if description.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {description.get('kind')!r}, not a {kind!r}")
    if hashlib.sha256(data).hexdigest() != description.get("sha256"):
        raise ArtifactError(f"{path.parent / name}.msgpack is damaged (SHA-256 mismatch)")
    try:
        return serialization.msgpack_restore(data), dict(description["meta"])
    except (KeyError, TypeError, ValueError) as err:  # checksum fine, content not ours
        raise ArtifactError(f"{path}: not a complete {kind} artifact ({err})") from err


def save_skill(directory: str | Path, skill: Skill, name: str = "skill") -> Path:
    """Saves a (single, unbatched) skill with its static description."""
    meta = {
        "kind": skill.kind,
        "obs_size": skill.obs_size,
        "hidden": list(skill.hidden),
        "n_actions": skill.n_actions,
        "activation": skill.activation,
        "latent_size": int(np.shape(skill.prior_mean)[-1]),
    }
    return save(directory, name, "skill", skill, meta)


def load_skill(directory: str | Path, name: str = "skill") -> Skill:
    """The `Skill` of `save_skill`, ready to `skill.execute`."""
    state, meta = load(directory, name, "skill")
    try:
        statics = {k: meta[k] for k in ("kind", "obs_size", "n_actions", "activation")}
        hidden = tuple(meta["hidden"])
        params, mean, std = state["params"], state["prior_mean"], state["prior_std"]
    except (KeyError, TypeError) as err:
        raise ArtifactError(f"{Path(directory) / name}.json: not a skill ({err})") from err
    return Skill(
        params=params,
        prior_mean=mean,
        prior_std=std,
        hidden=hidden,
        **statics,
    )
