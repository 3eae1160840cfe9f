"""Description of the machine a benchmark ran on, shared by every benchmark script."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)  # value is in KiB
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe() -> dict:
    """CPU, memory, OS, Python, package versions, JAX devices and the date, as a JSON dict."""
    import jax  # imported here so that `--help` of a benchmark stays fast

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("jax", "jaxlib", "brax", "flax", "mujoco")},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def new_report(benchmark: str, command: str | None = None) -> dict:
    """A results dict's common fields: benchmark, machine, command line (default: this
    process's), and the load average before (``after`` is filled in at the end)."""
    command = command or shlex.join([os.path.basename(sys.executable), *sys.argv])
    return {
        "benchmark": benchmark,
        "machine": describe(),
        "command": command,
        "load_average": {"before": load_average(), "after": None},
    }


def markdown(info: dict) -> str:
    """The description as a short Markdown bullet list."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    return "\n".join(
        [
            f"- CPU: {info['cpu']} ({info['cores']} cores), memory {info['memory_gib']} GiB",
            f"- OS: {info['os']}, Python {info['python']}",
            f"- Packages: {versions}",
            f"- JAX backend: {info['backend']}, devices: {', '.join(info['devices'])}",
            f"- Date (UTC): {info['date']}",
        ]
    )


if __name__ == "__main__":
    import json

    print(json.dumps(describe(), indent=2))


def report_header(title: str, report: dict) -> list[str]:
    """Opening Markdown lines of a results page: title, machine, load average, command."""
    load = report["load_average"]
    return [
        f"# {title}",
        "",
        markdown(report["machine"]),
        f"- Load average (1/5/15 min) before: {load['before']}, after: {load['after']}",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
