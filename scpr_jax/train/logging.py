"""Metric logging to TensorBoard event files, CSV and JSON lines (process 0 only)."""

from __future__ import annotations

import csv
import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

from scpr_jax import runs
from scpr_jax.errors import IntegrityError


def _step_of(line: str, suffix: str) -> int:
    if not line.endswith("\n"):
        raise ValueError("no line end")
    return int(float(line.split(",")[0])) if suffix == ".csv" else int(json.loads(line)["step"])


class MetricLogger:
    """Writes scalar metrics of one stream (e.g. ``train``, ``eval``) of a stage.

    Files: ``<logdir>/<stream>.csv``, ``<logdir>/<stream>.jsonl`` and TensorBoard events in
    ``<logdir>/tb`` (tags ``<stream>/<metric>``). Metrics with a seed axis are logged as
    their mean, and per seed in the JSON lines. ``resume_step`` drops rows logged after the
    checkpoint a resumed run restarts from, so no row appears twice. In a multi-process run
    only process 0 writes (`runs.is_writer`); the others just return the scalars.
    """

    def __init__(self, logdir: str | os.PathLike, stream: str, resume_step: int | None = None):
        self.logdir = Path(logdir)
        self.stream = stream
        self.csv_path = self.logdir / f"{stream}.csv"
        self.jsonl_path = self.logdir / f"{stream}.jsonl"
        self.writes = runs.is_writer()
        self._fields: list[str] | None = None
        self._tb = None
        if not self.writes:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._truncate_after(resume_step)
        if self.csv_path.exists():
            with self.csv_path.open() as f:
                header = f.readline().strip()
            self._fields = header.split(",") if header else None
        # a unique file name: tensorboardX names files by the second and truncates, so a
        # second writer opened in the same second (eval next to train, a quick resume) would
        # erase the first one's events
        suffix = f".{uuid.uuid4().hex[:8]}.{stream}"
        self._tb = SummaryWriter(str(self.logdir / "tb"), filename_suffix=suffix)

    def _truncate_after(self, step: int) -> None:
        """Drops rows after ``step`` and a torn last line (a kill mid-write), atomically."""
        for path in (self.csv_path, self.jsonl_path):
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            head, rows = (lines[:1], lines[1:]) if path.suffix == ".csv" else ([], lines)
            kept = []
            for i, line in enumerate(rows):
                try:
                    row_step = _step_of(line, path.suffix)
                except (ValueError, KeyError, TypeError, IndexError) as err:
                    if i == len(rows) - 1:  # torn by a kill: the checkpoint is older anyway
                        print(f"note: dropping the torn last line of {path}", file=sys.stderr)
                        continue
                    raise IntegrityError(
                        f"{path}: line {i + 1 + len(head)} is damaged ({err}); delete the "
                        "file to resume without its old rows"
                    ) from None
                if row_step <= step:
                    kept.append(line)
            runs.atomic_write_text(path, "".join(head + kept))

    def log(self, step: int, metrics: dict) -> dict[str, float]:
        """Logs ``metrics`` at ``step``; returns the scalar (seed-mean) values."""
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()}
        scalars = {k: float(v.mean()) for k, v in arrays.items()}
        if not self.writes:
            return scalars
        for k, v in scalars.items():
            self._tb.add_scalar(f"{self.stream}/{k}", v, step)
        self._tb.flush()
        if self._fields is None:
            self._fields = ["step", *sorted(scalars)]
            with self.csv_path.open("w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with self.csv_path.open("a", newline="") as f:
            row = [step] + [scalars.get(k, float("nan")) for k in self._fields[1:]]
            csv.writer(f).writerow(row)
        record = {"step": step, **{k: v.tolist() for k, v in arrays.items()}}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return scalars

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
