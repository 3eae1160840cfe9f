"""One measurement of `vs_pytorch.py` in a fresh process: ``python vs_pytorch_worker.py JOB``.

JOB is a JSON object (see `vs_pytorch.job`). Only the side being measured is imported (JAX
or PyTorch), so the process's peak resident memory (``ru_maxrss``) is that side's own. The
synthetic data is drawn with NumPy from the job's seed, so both sides train on the same
arrays. The last stdout line is ``RESULT {json}``.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys

import numpy as np

SIDES = {"jax": "vs_pytorch_jax", "torch": "vs_pytorch_torch"}


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def transitions(rng: np.random.Generator, n: int, obs: int, act: int) -> dict:
    """Rows of D_tau: obs, next_obs ~ N(0, 1), actions ~ U[-1, 1], reward ~ N(0, 1), 1% ends."""
    f32 = np.float32
    return {
        "obs": rng.standard_normal((n, obs), dtype=f32),
        "action": rng.uniform(-1.0, 1.0, (n, act)).astype(f32),
        "reward": rng.standard_normal(n, dtype=f32),
        "next_obs": rng.standard_normal((n, obs), dtype=f32),
        "terminated": (rng.random(n) < 0.01).astype(f32),
    }


def preference_sets(rng: np.random.Generator, sz: dict, posteriors: bool) -> dict:
    """D_tau rows plus every user's labels of every set (segments of ``seg`` steps)."""
    n, n_sets, n_users, pairs = sz["rows"], sz["n_sets"], sz["n_users"], sz["pairs"]
    out = {
        "obs": rng.standard_normal((n, sz["obs"]), dtype=np.float32),
        "action": rng.uniform(-1.0, 1.0, (n, sz["act"])).astype(np.float32),
        "starts1": rng.integers(0, n - sz["seg"], (n_sets, pairs)),
        "starts2": rng.integers(0, n - sz["seg"], (n_sets, pairs)),
        "y": (rng.random((n_users, n_sets, pairs)) < 0.5).astype(np.float32),
        "users": np.repeat(np.arange(n_users), n_sets),
        "sets": np.tile(np.arange(n_sets), n_users),
    }
    if posteriors:  # CPL's frozen q(z' | S) of every labelled set
        m = n_sets * n_users
        out["z_mean"] = rng.standard_normal((m, sz["latent_dim"]), dtype=np.float32)
        out["z_logvar"] = rng.normal(-1.0, 0.1, (m, sz["latent_dim"])).astype(np.float32)
    return out


def synthetic_data(component: str, sz: dict, seed: int) -> dict:
    """The NumPy arrays a component samples its minibatches from."""
    rng = np.random.default_rng(seed)
    if component in ("vae", "cpl"):
        return preference_sets(rng, sz, posteriors=component == "cpl")
    return transitions(rng, sz["rows"], sz["obs"], sz["act"])


def main(job: dict) -> dict:
    side = importlib.import_module(SIDES[job["side"]])
    out = {"rss_after_import_mib": _rss_mib()}
    if job["kind"] == "matmul":
        threads = {"n_threads": job["torch_threads"]} if job["side"] == "torch" else {}
        out |= side.matmul(job["n"], job["repeats"], **threads)
    else:
        d = synthetic_data(job["component"], job["sizes"], job["seed"])
        out |= side.run(job, d)
    if job["side"] == "torch":
        out |= side.threads()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
