"""JAX side of `vs_pytorch.py`: sizes from our presets, and our real updates in jitted chunks.

Every component runs the update function training uses (`vae.vae_update`, `iql.iql_update`,
`cpl.cpl_update`, `td3.td3_update` through a frozen `vpl_skill` offline and on replay
batches, `sac.sac_update`) inside `train.make_chunk`'s ``lax.scan``, with the minibatch
sampled inside the scan from on-device data, initialised by `train.init_loop` and called as
`train.train_loop` calls it: ``jit(chunk)`` for one seed, ``jit(vmap(chunk, (0, None)))``
for N seeds sharing the data.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax import methods
from scpr_jax import skill as highlevel
from scpr_jax.agents import iql, sac
from scpr_jax.agents.iql import iql_config
from scpr_jax.agents.td3 import td3_init, td3_update
from scpr_jax.data.collect import collect_config
from scpr_jax.data.preferences import label_config
from scpr_jax.downstream import offline, online
from scpr_jax.envs import make_task
from scpr_jax.nets import MLP
from scpr_jax.skills import batches, cpl, train_cpl, vae
from scpr_jax.skills.train_vae import model_config, vae_train_config
from scpr_jax.skills.vpl import vpl_skill
from scpr_jax.train import init_loop, make_chunk

LATENT_DIM = 4  # z' (PAPER.md 3.3); the size of pi_h's action u


def _configs(component: str, settings: str, task: str):
    """The preset ConfigDicts a component's update reads."""
    if component == "vae":
        return vae_train_config(settings), label_config(settings, task)
    if component == "iql":
        return (iql_config(settings, task),)
    if component == "cpl":
        return cpl.cpl_config(settings, task), label_config(settings, task)
    if component in ("td3bc", "td3"):
        if component == "td3bc":
            return methods.td3bc_config(settings, task, "safe-vpl"), iql_config(settings, task)
        return methods.online_config(settings, task, "safe-vpl"), iql_config(settings, task)
    if component == "sac":
        return (collect_config(settings),)
    raise ValueError(f"unknown component {component!r}")


def component_sizes(component: str, settings: str, task: str) -> dict:
    """Shapes and hyperparameters of one component at ``settings`` (JSON; both sides read it)."""
    t = make_task(task)
    obs, goal, act = t.obs_size, t.goal_obs_size, t.action_size
    rows = int(collect_config(settings).total_steps)  # |D_tau|, the dataset sampled from
    cfgs = _configs(component, settings, task)
    c = cfgs[0]
    common = {"batch": int(c.batch_size), "act": act, "rows": rows}
    if component in ("vae", "cpl"):
        lab = cfgs[1]
        sets = {"obs": obs, "latent_dim": LATENT_DIM, "pairs": lab.n_pairs, "seg": lab.segment_len}
        sets |= {"n_sets": lab.n_sets, "n_users": lab.n_users}
        if component == "vae":
            keys = ("hidden", "decoder_hidden", "embed_activation", "lr", "kl_weight")
            extra = {k: c[k] for k in keys} | {"total_steps": c.steps, "n_cycles": c.n_cycles}
            return common | sets | extra
        return (
            common | sets | {"hidden": list(c.hidden), "alpha": c.alpha, "lam": c.lam, "lr": c.lr}
        )
    if component == "iql":
        keys = ("lr", "steps", "gamma", "expectile", "temperature", "max_weight", "tau")
        return (
            common | {"obs": obs + LATENT_DIM, "hidden": list(c.hidden)} | {k: c[k] for k in keys}
        )
    if component == "sac":
        keys = ("lr", "gamma", "tau", "init_alpha")
        return common | {"obs": obs + goal, "hidden": list(c.hidden)} | {k: c[k] for k in keys}
    keys = ("lr", "gamma", "tau", "beta_reg", "bc_weight", "target_noise", "noise_clip")
    q_scale = c.bc_alpha if "bc_alpha" in c else c.q_scale
    sizes = {"obs": obs + goal, "skill_obs": obs, "latent_dim": LATENT_DIM}
    sizes |= {"hidden": list(c.hidden), "skill_hidden": list(cfgs[1].hidden), "q_scale": q_scale}
    sizes |= {"policy_freq": c.policy_freq, "u_bound": highlevel.LATENT_BOUND}
    if component == "td3":
        common["rows"] = int(c.buffer_size)  # the replay buffer's capacity
    return common | sizes | {k: c[k] for k in keys}


def _set_data(d: dict, sz: dict) -> batches.SetData:
    return batches.SetData(
        obs=jnp.asarray(d["obs"]), action=jnp.asarray(d["action"]),
        starts1=jnp.asarray(d["starts1"], jnp.int32), starts2=jnp.asarray(d["starts2"], jnp.int32),
        y=jnp.asarray(d["y"]), users=jnp.asarray(d["users"], jnp.int32),
        sets=jnp.asarray(d["sets"], jnp.int32), segment_len=int(sz["seg"]),
    )  # fmt: skip


def _rows(batch_size: int, to_batch=dict):
    """Uniform minibatch of [batch_size] rows from a dict of [N, ...] arrays."""

    def sample(key, data):
        i = jax.random.randint(key, (batch_size,), 0, data["reward"].shape[0])
        return to_batch(**{name: x[i] for name, x in data.items()})

    return sample


def _skill(key, sz: dict) -> highlevel.Skill:
    """A Safe-VPL skill: an IQL policy of the preset's width on [s, z'] and a unit prior."""
    z, hidden = sz["latent_dim"], tuple(sz["skill_hidden"])
    mean = MLP(hidden, sz["act"]).init(key, jnp.zeros((1, sz["skill_obs"] + z)))
    policy = iql.PolicyParams(mean=mean, log_std=jnp.zeros(sz["act"]), hidden=hidden)
    prior = vae.VAEParams(None, None, jnp.zeros(z), jnp.zeros(z))
    return vpl_skill(policy, prior, sz["skill_obs"])


def workload(component: str, job: dict, d: dict, microbatches: int | None = None):
    """(init(key) -> state, update(state, batch, key), sample(key, data), data on device).

    ``microbatches``: overrides the VAE's and CPL's gradient accumulation setting.
    """
    sz, settings, task = job["sizes"], job["settings"], job["task"]
    cfg = _configs(component, settings, task)[0]
    if microbatches is not None and "microbatches" in cfg:
        cfg = cfg.unlock()
        cfg.microbatches = microbatches
    batch_size = int(cfg.batch_size)
    if component == "vae":
        config = model_config(cfg)
        data = _set_data(d, sz)
        example = batches.set_example(data, jnp.asarray(0))
        update = functools.partial(vae.vae_update, config=config)
        sample = functools.partial(batches.sample_sets, batch_size=batch_size)
        return lambda k: vae.vae_init(k, example, config), update, sample, data
    if component == "cpl":
        data = train_cpl.CPLData(
            _set_data(d, sz), jnp.asarray(d["z_mean"]), jnp.asarray(d["z_logvar"])
        )
        sample = functools.partial(train_cpl.sample_cpl_batch, batch_size=batch_size)

        def init(k):
            return cpl.cpl_init(k, sz["obs"], sz["latent_dim"], sz["act"], cfg)

        def update(s, b, k):
            return cpl.cpl_update(s, b, k, None, None, int(cfg.microbatches))

        return init, update, sample, data
    rows = {k: jnp.asarray(d[k]) for k in ("obs", "action", "reward", "next_obs", "terminated")}
    if component == "iql":
        return (
            lambda k: iql.iql_init(k, sz["obs"], sz["act"], cfg),
            iql.iql_update,
            _rows(batch_size),
            rows,
        )
    if component == "sac":
        init = functools.partial(
            sac.sac_init, obs_size=sz["obs"], action_size=sz["act"], config=cfg
        )
        return init, sac.sac_update, _rows(batch_size, sac.Transition), rows
    skill = _skill(jax.random.key(job["seed"] + 1), sz)
    if component == "td3bc":
        data = offline.OfflineData(**rows, reward_term=jnp.zeros_like(rows["reward"]), skill=skill)
        sample = offline.offline_sampler(batch_size)
    else:
        replay = online.Replay(**rows, cost=jnp.zeros_like(rows["reward"]))
        data = (replay, skill)

        def sample(key, data):
            replay, skill = data
            return online.sample_replay(replay, replay.reward.shape[0], key, batch_size), skill

    def init(k):
        return td3_init(k, sz["obs"], sz["latent_dim"], sz["act"], cfg, sz["u_bound"])

    return init, lambda s, bs, k: td3_update(s, bs[0], k, bs[1]), sample, data


def flops_per_update(job: dict, d: dict) -> float:
    """FLOPs of one seed's update from XLA's cost analysis of a one-seed chunk.

    The analysis counts a while loop's body once, so the chunk's count is one update plus
    one minibatch draw (gathers: no FLOPs); checked equal for scan lengths 1, 2 and 10, and
    to the count of a lone jitted update. For the same reason the program analysed takes
    the whole batch in one pass (microbatches=1): a gradient-accumulation loop would be
    counted once, not once per microbatch. The math is the same either way.
    """
    init, update, sample, data = workload(job["component"], job, d, microbatches=1)
    loop = init_loop(jax.random.key(job["seed"]), init, job["seed"])
    compiled = jax.jit(make_chunk(update, sample, 1)).lower(loop, data).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def run(job: dict, d: dict) -> dict:
    """Compiles and times ``job["chunk"]`` updates per call (see `vs_pytorch` for the protocol)."""
    n_seeds, k_chunk = int(job["n_seeds"]), int(job["chunk"])
    if job.get("xla_cache"):  # shared by the rounds of one run (see `vs_pytorch.measure`)
        jax.config.update("jax_compilation_cache_dir", job["xla_cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    init, update, sample, data = workload(job["component"], job, d)
    key = jax.random.key(job["seed"])
    seeds = job["seed"] if n_seeds == 1 else list(range(n_seeds))
    loop = jax.block_until_ready(init_loop(key, init, seeds))
    chunk = make_chunk(update, sample, k_chunk)
    step = jax.jit(jax.vmap(chunk, in_axes=(0, None)) if n_seeds > 1 else chunk)
    start = time.perf_counter()
    compiled = step.lower(loop, data).compile()
    out = {"compile_s": time.perf_counter() - start}
    mem = compiled.memory_analysis()
    need = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    out["xla_bytes"] = int(need - mem.alias_size_in_bytes)
    if out["xla_bytes"] > job["max_bytes"]:
        gib = out["xla_bytes"] / 2**30, job["max_bytes"] / 2**30
        return out | {"skipped": f"needs {gib[0]:.1f} GiB (XLA) > {gib[1]:.1f} GiB (80% of free)"}
    start = time.perf_counter()
    loop, metrics = jax.block_until_ready(compiled(loop, data))
    out["first_call_s"] = time.perf_counter() - start
    for _ in range(job["warmup_calls"]):
        loop, metrics = jax.block_until_ready(compiled(loop, data))
    times, start = [], time.perf_counter()
    while not times or time.perf_counter() - start < job["window_s"]:
        loop, metrics = jax.block_until_ready(compiled(loop, data))
        times.append(time.perf_counter())
    elapsed = times[-1] - start
    out |= {"calls": len(times), "timed_s": elapsed}
    out["updates_per_s"] = len(times) * k_chunk / elapsed
    out["median_call_s"] = float(np.median(np.diff([start, *times])))
    out["finite"] = bool(all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(metrics)))
    out["flops_per_update"] = flops_per_update(job, d)
    return out


def matmul(n: int, repeats: int) -> dict:
    """Best float32 [n, n] @ [n, n] GFLOP/s of NumPy and of jitted JAX."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    out = {}
    for name, fn, x in (
        ("numpy", np.matmul, a),
        ("jax", jax.jit(jnp.matmul), jnp.asarray(a)),
    ):
        jax.block_until_ready(fn(x, x))  # compile / warm caches
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(x, x))
            best = min(best, time.perf_counter() - start)
        out[f"{name}_gflops"] = 2 * n**3 / best / 1e9
    out["jax_devices"] = [str(dev) for dev in jax.devices()]
    return out
