"""Markdown tables of `vs_pytorch.py`'s results (one section per settings)."""

from __future__ import annotations

import math

from machine import markdown

WHAT = {
    "vae": "preference-VAE step (`skills.vae.vae_update`)",
    "iql": "IQL update (`agents.iql.iql_update`)",
    "cpl": "CPL step (`skills.cpl.cpl_update`)",
    "td3bc": "TD3+BC through a frozen skill (`agents.td3.td3_update`, offline)",
    "td3": "online TD3 on replay batches (`td3_update`, same skill)",
    "sac": "SAC update (`agents.sac.sac_update`)",
}
INTRO = """\
Updates per second **per seed** of the same update written in JAX (ours: jitted `lax.scan`
chunks, the minibatch sampled inside the scan from on-device data; N seeds = one
`jit(vmap)` program over N independent learners sharing the data) and in eager PyTorch
(`benchmarks/torch_ref`, one seed per process, `torch.optim.Adam`, no `torch.compile`).
Ratios are JAX per-seed / PyTorch. FLOPs / update: XLA's cost analysis of one seed's update
(the same math runs on both sides). % of matmul peak: seeds x updates/s x FLOPs /
the best float32 2048x2048 matmul rate of the same library on this machine (JAX for JAX
columns, PyTorch for PyTorch). Peak RSS: `ru_maxrss` of the fresh process that ran the
configuration (data, framework and compiled program included). Compile: `lower().compile()`
of the chunk program. Timing: JAX one warm-up call after compiling, then whole calls until
the timed window has passed; PyTorch a warm-up of `torch_warmup_s`, then updates for the
window. JAX with one seed and PyTorch run alternately in fresh processes for several rounds
and the tables give each side's median (every round is listed), so a slow spell of the
machine hits both sides alike. The VAE and CPL updates accumulate their gradient over
microbatches of at most 4,096 rows on CPU (`train.accumulate`, the presets' automatic
`microbatches = 0`), two independent slices per scan step so both cores stay busy: the same
gradient, summed in the same order, with each slice's activations kept in cache.
"""


def _w(widths) -> str:
    return "x".join(str(w) for w in widths)


def networks(c: str, sz: dict) -> str:
    """The component's network sizes in words."""
    if c == "vae":
        return f"encoder {sz['hidden']}, decoder {_w(sz['decoder_hidden'])}"
    if c == "cpl":
        return f"decoder {_w(sz['hidden'])}"
    if c == "iql":
        return f"Q, Q, V, pi {_w(sz['hidden'])}"
    if c in ("td3bc", "td3"):
        return f"actor, Q, Q {_w(sz['hidden'])}; skill {_w(sz['skill_hidden'])}"
    return f"actor, Q, Q {_w(sz['hidden'])}"


def batch(c: str, sz: dict) -> str:
    if c in ("vae", "cpl"):
        return f"{sz['batch']} sets x {sz['pairs']} pairs x {sz['seg']} steps"
    return f"{sz['batch']} transitions"


def _num(x, fmt: str = "{:,.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def rate(x: float) -> str:
    """An updates/s figure: one decimal from 100 up, else three significant digits."""
    if x >= 100 or x <= 0:
        return f"{x:,.1f}"
    return f"{x:.{max(1, 2 - math.floor(math.log10(x)))}f}"


def _cells(result: dict, seeds: list[str], key: str, fmt, scale: float = 1.0) -> list[str]:
    cells = []
    for r in [*(result["jax"].get(n, {}) for n in seeds), result["torch"]]:
        value = r.get(key)
        show = fmt if callable(fmt) else fmt.format
        cells.append("skip" if "skipped" in r else "fail" if "error" in r else
                     "-" if value is None else show(value * scale))  # fmt: skip
    return cells


def section(run: dict) -> list[str]:
    """One settings' machine, protocol, and the three tables."""
    results = run["results"]
    seeds = sorted({n for r in results for n in r["jax"]}, key=int)
    m, load = run["matmul"], run["load_average"]
    threads = next((r["torch"] for r in results if "torch_intra_op_threads" in r["torch"]), m)
    lines = [
        f"## Settings `{run['settings']}` (task shapes: {run['task']})",
        "",
        markdown(run["machine"]),
        f"- Load average (1/5/15 min) before: {load['before']}, after: {load['after']}",
        f"- PyTorch {threads.get('torch_version', '?')}: intra-op threads "
        f"{threads.get('torch_intra_op_threads', '?')} (`--torch-threads`, default: the "
        f"core count), inter-op "
        f"{threads.get('torch_inter_op_threads', '?')} (default). JAX: XLA's CPU defaults "
        "(one intra-op pool over all cores; XLA_FLAGS unset).",
        f"- Matmul float32 {m['n']}x{m['n']} GFLOP/s: NumPy {_num(m.get('numpy_gflops'))}, "
        f"JAX {_num(m.get('jax_gflops'))}, PyTorch {_num(m.get('torch_gflops'))}",
        f"- Timed window {run['protocol']['window_s']} s per configuration and round; "
        f"{run['protocol'].get('rounds', 1)} rounds of JAX 1 seed / PyTorch; total run "
        f"{run.get('total_s', '?')} s",
        "",
        f"Command: `{run['command']}`",
        "",
        "| component | update | networks | batch | FLOPs / update |",
        "|---|---|---|---|---:|",
    ]
    for r in results:
        c, sz = r["component"], r["sizes"]
        flops = _num(r.get("flops_per_update"), "{:.3g}")
        lines.append(f"| {c} | {WHAT[c]} | {networks(c, sz)} | {batch(c, sz)} | {flops} |")
    heads = [f"JAX {n} seed{'s' * (n != '1')}" for n in seeds]
    many = [n for n in seeds if n != "1"]
    lines += [
        "",
        "Updates/s per seed (higher is better), JAX / PyTorch per seed, and for N vmapped",
        "seeds also N x JAX per seed / PyTorch (all N seeds' updates against one PyTorch",
        "process, which already occupies every core):",
        "",
        "| component | "
        + " | ".join(
            [
                *heads,
                "PyTorch",
                *(f"{h} / PT" for h in heads),
                *(f"{n} x JAX {n} / PT" for n in many),
            ]
        )
        + " |",
        "|---|" + "---:|" * (2 * len(seeds) + 1 + len(many)),
    ]
    for r in results:
        ups = _cells(r, seeds, "updates_per_s", rate)
        ratio = [_num(r["jax"].get(n, {}).get("ratio_vs_torch"), "{:.2f}x") for n in seeds]
        total = [_num(r["jax"].get(n, {}).get("total_ratio_vs_torch"), "{:.2f}x") for n in many]
        lines.append(f"| {r['component']} | " + " | ".join(ups + ratio + total) + " |")
    cols = [*heads, "PyTorch"]
    lines += [
        "",
        "JAX compile (s), peak RSS (MiB) and % of the matmul peak:",
        "",
        "| component | "
        + " | ".join(
            [
                *(f"compile {h}" for h in heads),
                *(f"RSS {h}" for h in cols),
                *(f"% peak {h}" for h in cols),
            ]  # fmt: skip
        )
        + " |",
        "|---|" + "---:|" * (len(seeds) + 2 * len(cols)),
    ]
    notes = []
    for r in results:
        compile_s = _cells(r, seeds, "compile_s", "{:.1f}")[:-1]
        rss = _cells(r, seeds, "peak_rss_mib", "{:,.0f}")
        peak = _cells(r, seeds, "fraction_of_matmul_peak", "{:.1f}", 100.0)
        lines.append(f"| {r['component']} | " + " | ".join(compile_s + rss + peak) + " |")
        for name, x in [
            *((f"JAX {n} seeds", r["jax"][n]) for n in r["jax"]),
            ("PyTorch", r["torch"]),
        ]:
            if "skipped" in x or "error" in x:
                notes.append(f"- {r['component']}, {name}: {x.get('skipped') or x.get('error')}")
    lines += ["", "Rounds (updates/s per round, in order):", ""]
    for r in results:
        jax_rounds = r["jax"].get("1", {}).get("updates_per_s_rounds")
        torch_rounds = r["torch"].get("updates_per_s_rounds")
        if jax_rounds or torch_rounds:
            cells = [", ".join(rate(x) for x in v or []) for v in (jax_rounds, torch_rounds)]
            lines.append(f"- {r['component']}: JAX 1 seed {cells[0]}; PyTorch {cells[1]}")
    return [*lines, "", *notes, ""] if notes else [*lines, ""]


def to_markdown(runs: dict) -> str:
    """The whole results page: introduction, then small and paper sections."""
    lines = ["# JAX vs PyTorch (updates/s per seed)", "", INTRO]
    for settings in ("small", "paper"):
        if settings in runs:
            lines += section(runs[settings])
    return "\n".join(lines)
