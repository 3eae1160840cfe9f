"""Run directories: atomic artifact writes and stage bookkeeping so long runs resume.

A run directory holds one sub-directory per stage (``collect/``, ``label/``, ...). A stage
writes its artifacts atomically (temp file + ``os.replace``) and finally ``DONE.json`` with
its summary and config; a stage whose ``DONE.json`` exists is skipped on the next run.

In a multi-process JAX run (`scpr_jax.train.distributed`) every process runs the same stages
on a shared run directory, but only process 0 writes (`is_writer`); the others skip every
write here, and `RunDir.mark_done` waits until all processes see the stage finished.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scpr_jax.errors import IntegrityError, RunDirBusy, SettingsError

_LOCKS: dict[Path, Any] = {}  # run directory -> its open lock file, held until the process ends
TEMP_PATTERNS = (".*.tmp", ".tmp-*")  # leftovers of an atomic write that a kill -9 cut short


def is_writer() -> bool:
    """False in every process but 0 of a multi-process JAX run: those write no files."""
    jax = sys.modules.get("jax")  # JAX not imported: certainly a single process
    return jax is None or jax.process_index() == 0


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old or the new file
    (in process 0 only, see `is_writer`)."""
    if not is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(x: Any) -> Any:
    """``x`` with arrays as lists, tuples as lists and non-finite floats as strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy / jax arrays and scalars
        return jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON dump (arrays converted to lists) written atomically."""
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=2) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; `IntegrityError` naming the file if it is damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise IntegrityError(
            f"{path} is damaged ({err}); delete the stage directory holding it to redo that "
            "stage (a damaged config.json of the run may simply be deleted)"
        ) from err


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text file written atomically."""
    atomic_write_bytes(path, text.encode())


class RunDir:
    """A run directory with one sub-directory per stage."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise SettingsError(f"--workdir {self.root} is a file, not a directory")
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self) -> None:
        """Holds an exclusive advisory lock on the directory until the process ends (process 0
        only); `RunDirBusy` naming the holder's pid if another command has it."""
        key = self.root.resolve()
        if not is_writer() or key in _LOCKS:
            return
        if not os.access(self.root, os.W_OK):
            raise OSError(errno.EACCES, "run directory is not writable", str(self.root))
        f = open(self.root / ".lock", "a+")  # noqa: SIM115  (held open for the process's life)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirBusy(
                f"run directory {self.root} is in use by another scpr command (pid {holder}); "
                "wait for it to finish or give another --workdir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _LOCKS[key] = f

    def clean_temp(self, name: str) -> list[Path]:
        """Removes the temp files a killed atomic write left in stage ``name``; returns them."""
        if not is_writer():
            return []
        stage = self.root / name
        leftovers = [p for pattern in TEMP_PATTERNS for p in stage.glob(pattern) if p.is_file()]
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers

    def stage(self, name: str) -> Path:
        """Directory of stage ``name`` (created)."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, name: str) -> dict | None:
        """The stage's recorded summary if it finished, else None."""
        marker = self.root / name / "DONE.json"
        if not marker.exists():
            return None
        return read_json(marker)

    def done_under(self, name: str) -> list[str]:
        """Names ``name/<sub>`` of the finished stages in ``name``'s sub-directories (a sweep's
        programs), sorted."""
        return [f"{name}/{m.parent.name}" for m in sorted((self.root / name).glob("*/DONE.json"))]

    def mark_done(self, name: str, summary: dict) -> None:
        """Records that stage ``name`` finished (after all its artifacts are written)."""
        atomic_write_json(self.stage(name) / "DONE.json", summary)
        jax = sys.modules.get("jax")
        if jax is not None and jax.process_count() > 1:  # all see DONE.json once this returns
            from jax.experimental import multihost_utils  # runs.py itself never imports JAX

            multihost_utils.sync_global_devices(f"scpr stage done: {name}")
