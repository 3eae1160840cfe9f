"""float32 matmul GFLOP/s of JAX and PyTorch at the VAE's and CPL's layer shapes.

For a Dense layer x [rows, d_in] @ W [d_in, d_out], times the three products of a training
step: forward x @ W, input gradient g @ W^T and weight gradient x^T @ g (g [rows, d_out]).
JAX runs each product ``--reps`` times inside one jitted ``lax.scan`` (no dispatch per
product); PyTorch runs it eagerly on ``torch.get_num_threads()`` = the core count. Both
report the best of ``--repeats`` timings. This explains the VAE and CPL rows of
`vs_pytorch.md`: those updates are mostly these products.

    python benchmarks/matmul_shapes.py
    python benchmarks/matmul_shapes.py --rows 4096 --reps 20

Writes ``results/matmul_shapes.json`` and ``results/matmul_shapes.md`` (or under ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
from machine import load_average, new_report, report_header

from scpr_jax.runs import atomic_write_json, atomic_write_text

# (d_in, d_out) at the small presets on ball-run: the CPL decoder's 128x128 layers and its
# 10-input first layer, the VAE reward decoder's 64x64 layers and its 13-input first layer
SHAPES = ((128, 128), (10, 128), (64, 64), (13, 64))
PRODUCTS = ("forward x W", "input grad g W^T", "weight grad x^T g")


def _operands(product: str, x, w, g):
    if product == "forward x W":
        return (x, w), lambda a, b: a @ b
    if product == "input grad g W^T":
        return (g, w), lambda a, b: a @ b.T
    return (x, g), lambda a, b: a.T @ b


def jax_seconds(product: str, rows: int, d_in: int, d_out: int, reps: int, repeats: int):
    """Best seconds per product of ``reps`` products inside one jitted scan."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, (rows, d_in)), jax.random.normal(kw, (d_in, d_out))
    g = jax.random.normal(kg, (rows, d_out))
    (a, b), f = _operands(product, x, w, g)

    def run(a, b):
        def body(c, _):  # a carried dependence, so no product is hoisted out of the loop
            out = f(a + c, b)
            return c + 1e-12 * out[0, 0], None

        return jax.lax.scan(body, jnp.float32(0), None, length=reps)[0]

    compiled = jax.jit(run).lower(a, b).compile()
    jax.block_until_ready(compiled(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(a, b))
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def torch_seconds(product: str, rows: int, d_in: int, d_out: int, reps: int, repeats: int):
    """Best seconds per eager PyTorch product (None without PyTorch)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, d_in, generator=gen), torch.randn(d_in, d_out, generator=gen)
    g = torch.randn(rows, d_out, generator=gen)
    (a, b), f = _operands(product, x, w, g)
    for _ in range(reps):
        f(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            f(a, b)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def to_markdown(report: dict) -> str:
    """The results page: one row per shape and product."""
    lines = report_header("float32 matmul GFLOP/s at the VAE and CPL layer shapes", report)
    lines += [
        f"rows = {report['rows']}; JAX: {report['reps']} products per jitted `lax.scan`; "
        "PyTorch: eager, one thread per core. Best of "
        f"{report['repeats']} timings. Total run {report['total_s']} s.",
        "",
        "| d_in x d_out | product | JAX GFLOP/s | PyTorch GFLOP/s | JAX / PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        pt = r["torch_gflops"]
        ratio = f"{r['jax_gflops'] / pt:.2f}x" if pt else "-"
        pt_s = f"{pt:.1f}" if pt else "-"
        lines.append(
            f"| {r['d_in']}x{r['d_out']} | {r['product']} | {r['jax_gflops']:.1f} | {pt_s} "
            f"| {ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2048, help="rows of x and g")
    parser.add_argument("--reps", type=int, default=50, help="products per timing")
    parser.add_argument("--repeats", type=int, default=7, help="timings; the best is kept")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    parser.add_argument("--out", default=here, help="directory for the results files")
    args = parser.parse_args(argv)
    for name in ("rows", "reps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} must be >= 1")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    report = new_report("matmul_shapes") | {
        "rows": args.rows,
        "reps": args.reps,
        "repeats": args.repeats,
        "results": [],
    }
    start = time.perf_counter()
    for d_in, d_out in SHAPES:
        flop = 2 * args.rows * d_in * d_out
        for product in PRODUCTS:
            sizes = (product, args.rows, d_in, d_out, args.reps, args.repeats)
            jax_s, torch_s = jax_seconds(*sizes), torch_seconds(*sizes)
            row = {"d_in": d_in, "d_out": d_out, "product": product}
            row |= {"jax_gflops": flop / jax_s / 1e9}
            row |= {"torch_gflops": flop / torch_s / 1e9 if torch_s else None}
            report["results"].append(row)
            pt = f"{row['torch_gflops']:7.1f}" if torch_s else "      -"
            print(f"{d_in:4d}x{d_out:<4d} {product:18s} JAX {row['jax_gflops']:7.1f} PT {pt}")
    report["load_average"]["after"] = load_average()
    report["total_s"] = round(time.perf_counter() - start, 1)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "matmul_shapes.json"), report)
    atomic_write_text(os.path.join(args.out, "matmul_shapes.md"), to_markdown(report))
    print(f"wrote {args.out}/matmul_shapes.{{json,md}} in {report['total_s']} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
