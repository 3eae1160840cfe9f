"""Progress of a long loop: a tqdm bar on a terminal, one plain line every N seconds in a log.

``SCPR_PROGRESS`` picks the form: ``auto`` (default: a bar when stdout is a terminal, else
lines), ``bar``, ``lines`` or ``off``; ``SCPR_PROGRESS_EVERY`` is the seconds between lines
(default 30). Nothing is shown before the first update, so a stage restored from its final
checkpoint (no update left to do) prints no 0/N bar, and a resumed stage starts counting at
the step it resumed from.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from scpr_jax.errors import SettingsError

MODES = ("auto", "bar", "lines", "off")


def progress_mode(environ=os.environ, stream=None) -> tuple[str, float]:
    """(``"bar"`` | ``"lines"`` | ``"off"``, seconds between lines) from ``SCPR_PROGRESS*``."""
    mode = environ.get("SCPR_PROGRESS", "auto") or "auto"
    if mode not in MODES:
        raise SettingsError(f"SCPR_PROGRESS={mode!r}: valid: {', '.join(MODES)}")
    raw = environ.get("SCPR_PROGRESS_EVERY", "30") or "30"
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not every > 0:
        raise SettingsError(f"SCPR_PROGRESS_EVERY={raw!r}: must be a number of seconds > 0")
    if mode == "auto":
        stream = sys.stdout if stream is None else stream
        mode = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return mode, every


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Lines:
    """``update(step, total, metrics)`` printing one line at most every ``every`` seconds
    (and at the last step): done/total, rate since the first update, ETA, the metrics."""

    def __init__(self, desc: str, every: float, unit: str = "it", clock=time.monotonic,
                 out=None):  # fmt: skip
        self.desc, self.every, self.unit, self.clock = desc, every, unit, clock
        self.out = out
        self.first: tuple[float, int] | None = None  # (time, step) of the first update
        self.last_print = -float("inf")

    def update(self, step: int, total: int, metrics: dict | None = None) -> None:
        now = self.clock()
        if self.first is None:  # the first update's time includes compilation: rate from here
            self.first = (now, step)
        done = total and step >= total
        if not done and now - self.last_print < self.every:
            return
        self.last_print = now
        t0, s0 = self.first
        parts = [f"{self.desc}: {step}/{total or '?'}"]
        if step > s0 and now > t0:
            rate = (step - s0) / (now - t0)
            parts.append(f"{rate:.3g} {self.unit}/s")
            if total and not done:
                parts.append(f"ETA {_eta((total - step) / rate)}")
        if done:
            parts.append(f"done in {_eta(now - t0)}")
        shown = ", ".join(f"{k}={v:.3g}" for k, v in (metrics or {}).items())
        print(", ".join(parts) + (f" ({shown})" if shown else ""), file=self.out or sys.stdout,
              flush=True)  # fmt: skip

    def close(self) -> None:
        pass


class Bar:
    """``update(step, total, metrics)`` on a tqdm bar opened at the first update."""

    def __init__(self, desc: str, unit: str = "it"):
        self.desc, self.unit, self.bar = desc, unit, None

    def update(self, step: int, total: int, metrics: dict | None = None) -> None:
        if self.bar is None:  # opened at the first update: a restored stage shows nothing
            self.bar = tqdm(total=int(total) or None, desc=self.desc, unit=self.unit,
                            mininterval=2)  # fmt: skip
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(step - self.bar.n)
        if metrics:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def progress(desc: str, unit: str = "it", shown: tuple[str, ...] = (), enabled: bool = True
             ) -> Iterator[Callable[[int, int, dict], None]]:  # fmt: skip
    """A ``progress(step, total, metrics)`` callback showing the ``shown`` metrics."""
    mode, every = progress_mode() if enabled else ("off", 0.0)
    if mode == "off":
        yield lambda step, total, metrics=None: None
        return
    sink = Bar(desc, unit) if mode == "bar" else Lines(desc, every, unit)

    def update(step: int, total: int, metrics: dict | None = None) -> None:
        sink.update(int(step), int(total or 0),
                    {k: float(v) for k, v in (metrics or {}).items() if k in shown})  # fmt: skip

    try:
        yield update
    finally:
        sink.close()
