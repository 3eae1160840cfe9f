"""Metric logging to TensorBoard event files, CSV and JSON lines (process 0 only)."""

from __future__ import annotations

import csv
import json
import os
import uuid
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

from scpr_jax import runs


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
        for path in (self.csv_path, self.jsonl_path):
            if not path.exists():
                continue
            lines = path.read_text().splitlines(keepends=True)
            if path.suffix == ".csv":
                kept = lines[:1] + [ln for ln in lines[1:] if int(float(ln.split(",")[0])) <= step]
            else:
                kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
            path.write_text("".join(kept))

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
