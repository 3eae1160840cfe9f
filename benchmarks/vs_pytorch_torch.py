"""PyTorch side of `vs_pytorch.py`: the `torch_ref` learners on the same data, one per process.

Threads: ``torch.set_num_threads`` to the job's ``torch_threads`` (default: the core count)
for intra-op work, inter-op left at PyTorch's default; both are reported. Every update
samples its minibatch from in-memory tensors with the learner's generator, then runs the
eager update, as the authors' training loops do.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch_ref import agents, data, skills

SET_COMPONENTS = ("vae", "cpl")


def threads() -> dict:
    """PyTorch's thread settings after `configure`."""
    return {
        "torch_intra_op_threads": torch.get_num_threads(),
        "torch_inter_op_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
    }


def configure(seed: int, n_threads: int | None = None) -> torch.Generator:
    """Intra-op threads (default: cores); a generator for sampling and update noise."""
    torch.set_num_threads(n_threads or os.cpu_count() or 1)
    torch.manual_seed(seed)  # module initialisation draws from the global generator
    return torch.Generator().manual_seed(seed)


def _skill(sz: dict) -> agents.VPLSkill:
    z = sz["latent_dim"]
    sizes = (sz["skill_obs"], z, sz["act"], sz["skill_hidden"])
    return agents.VPLSkill(*sizes, prior_mean=torch.zeros(z), prior_std=torch.ones(z))


def learner(component: str, sz: dict, gen: torch.Generator):
    """The `torch_ref` learner of ``component`` with the sizes of `component_sizes`."""
    if component == "vae":
        keys = ("latent_dim", "hidden", "decoder_hidden", "embed_activation", "lr", "kl_weight")
        kwargs = {k: sz[k] for k in keys} | {"total_steps": sz["total_steps"]}
        return skills.VAE(sz["obs"], sz["act"], n_cycles=sz["n_cycles"], gen=gen, **kwargs)
    if component == "cpl":
        sizes = (sz["obs"], sz["latent_dim"], sz["act"], sz["hidden"])
        return skills.CPL(*sizes, sz["alpha"], sz["lam"], sz["lr"], gen)
    if component == "iql":
        keys = ("lr", "gamma", "expectile", "temperature", "max_weight", "tau")
        kwargs = {k: sz[k] for k in keys}
        return agents.IQL(sz["obs"], sz["act"], sz["hidden"], total_steps=sz["steps"], **kwargs)
    if component == "sac":
        keys = ("lr", "gamma", "tau", "init_alpha")
        return agents.SAC(sz["obs"], sz["act"], sz["hidden"], gen=gen, **{k: sz[k] for k in keys})
    keys = ("u_bound", "lr", "gamma", "tau", "beta_reg", "q_scale", "bc_weight")
    keys += ("target_noise", "noise_clip", "policy_freq")
    sizes = (sz["obs"], sz["latent_dim"], sz["act"], sz["hidden"], _skill(sz))
    return agents.TD3(*sizes, gen=gen, **{k: sz[k] for k in keys})


def dataset(component: str, d: dict, sz: dict):
    """The synthetic NumPy data as tensors: a `data.SetData` or a dict of [N, ...] rows."""
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in d.items()}
    if component not in SET_COMPONENTS:
        return t
    ints = {k: t[k].long() for k in ("starts1", "starts2", "users", "sets")}
    return data.SetData(obs=t["obs"], action=t["action"], y=t["y"], segment_len=sz["seg"],
                        z_mean=t.get("z_mean"), z_logvar=t.get("z_logvar"), **ints)  # fmt: skip


def step_fn(component: str, sz: dict, d: dict, seed: int, n_threads: int | None = None):
    """``step() -> metrics``: one minibatch draw plus one update."""
    gen = configure(seed, n_threads)
    model, ds, batch_size = learner(component, sz, gen), dataset(component, d, sz), sz["batch"]
    if component in SET_COMPONENTS:
        feats = component == "vae"
        return lambda: model.update(data.sample_sets(ds, batch_size, gen, feats=feats))
    return lambda: model.update(data.sample_rows(ds, batch_size, gen))


def run(job: dict, d: dict) -> dict:
    """Warm-up for ``warmup_s`` (at least 2 updates), then updates for ``window_s``."""
    step = step_fn(job["component"], job["sizes"], d, job["seed"], job.get("torch_threads"))
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < job["warmup_s"]:
        step()
        n += 1
    times, start = [], time.perf_counter()
    while not times or time.perf_counter() - start < job["window_s"]:
        metrics = step()
        times.append(time.perf_counter())
    elapsed = times[-1] - start
    finite = all(bool(torch.isfinite(v).all()) for v in metrics.values())
    out = {"updates": len(times), "timed_s": elapsed, "updates_per_s": len(times) / elapsed}
    median = float(np.median(np.diff([start, *times])))  # robust to other jobs' bursts
    return out | {"median_update_s": median, "finite": finite}


def matmul(n: int, repeats: int, n_threads: int | None = None) -> dict:
    """Best float32 [n, n] @ [n, n] GFLOP/s of PyTorch."""
    configure(0, n_threads)
    a = torch.from_numpy(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    a @ a  # noqa: B018  (warm-up)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a  # noqa: B018
        best = min(best, time.perf_counter() - start)
    return {"torch_gflops": 2 * n**3 / best / 1e9}
