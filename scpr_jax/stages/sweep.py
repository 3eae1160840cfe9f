"""`scpr sweep`: a grid of seeds x settings for one downstream stage, as few programs as possible.

Settings that are state leaves of the stage's learner (TD3's beta_reg, lr, tau, ...) become
one vmapped member axis with the seeds (`train.Members`), sharded over all devices; settings
that change shapes or data (hidden, batch_size, steps, rc.weight, ...) split the grid into
separate programs, run one after another. Each program is a stage directory
``sweep-<stage>/<static settings>``; resumable like every stage. The results, per member and
averaged over seeds, go to ``sweep-<stage>/results.{json,md}``.
"""

from __future__ import annotations

import ast
import copy
import itertools

import ml_collections
import numpy as np

from scpr_jax.runs import RunDir, atomic_write_json, atomic_write_text
from scpr_jax.train import grid

DYNAMIC = {  # config setting -> state leaf that holds it, per kind of stage
    "down": {k: k for k in ("beta_reg", "lr", "gamma", "tau", "bc_weight", "target_noise",
                            "noise_clip")} | {"bc_alpha": "q_scale"},
    "online": {k: k for k in ("beta_reg", "lr", "gamma", "tau", "target_noise", "noise_clip",
                              "q_scale", "expl_noise")},
}  # fmt: skip


def parse_seeds(text: str) -> tuple[int, ...]:
    """ "0:16" -> 0..15, "3" -> (3,), "0,4,7" -> (0, 4, 7)."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            seeds = tuple(range(lo, hi))
        else:
            seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r} must look like 0:16, 3 or 0,4,7 (integers >= 0)")
    return seeds


def parse_axes(items: list[str], stage: str, cfg: ml_collections.ConfigDict) -> dict:
    """``key=v1,v2`` strings -> {full config key: [values]}; short keys name the stage's section."""
    kind, _, method = stage.partition("-")
    if kind not in DYNAMIC or not method:
        raise ValueError(f"sweep stage {stage!r} must be down-<method> or online-<method>")
    section = f"{'td3bc' if kind == 'down' else 'td3'}.{method.replace('-', '_')}"
    axes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--sweep {item!r} must look like key=v1,v2,...")
        full = key if "." in key else f"{section}.{key}"
        node = cfg
        for part in full.split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                raise ValueError(f"--sweep {item!r}: unknown setting {full!r}")
            node = node[part]
        try:
            values = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"--sweep {item!r}: values must be Python literals") from err
        values = list(values) if isinstance(values, list | tuple) else [values]
        if isinstance(node, tuple) and not isinstance(values[0], tuple | list):
            values = [values]  # hidden=(64, 64) is one tuple value, not two
        axes[full] = values
    return axes


DATA_SETTINGS = ("rc.weight", "sopl.weight", "downstream.oracle_cost_weight")


def _split(axes: dict, stage: str) -> tuple[dict, dict]:
    """(dynamic {state leaf: values}, static {config key: values}) of a stage's sweep axes."""
    kind, _, method = stage.partition("-")
    section = f"{'td3bc' if kind == 'down' else 'td3'}.{method.replace('-', '_')}."
    upstream = [k for k in axes if not k.startswith(section) and k not in DATA_SETTINGS]
    if upstream:
        raise ValueError(
            f"cannot sweep {upstream} in a {stage!r} sweep: only {section}* and "
            f"{', '.join(DATA_SETTINGS)}; sweep upstream settings with separate --workdir runs"
        )
    dynamic = {
        DYNAMIC[kind][k.removeprefix(section)]: v
        for k, v in axes.items()
        if k.startswith(section) and k.removeprefix(section) in DYNAMIC[kind]
    }
    static = {k: v for k, v in axes.items() if not k.startswith(section)
              or k.removeprefix(section) not in DYNAMIC[kind]}  # fmt: skip
    return dynamic, static


def _with(cfg: ml_collections.ConfigDict, settings: dict) -> ml_collections.ConfigDict:
    cfg = copy.deepcopy(cfg).unlock()
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        old = node[leaf]
        node[leaf] = tuple(value) if isinstance(old, tuple) else type(old)(value)
    return cfg.lock()


def run_sweep(run: RunDir, cfg: ml_collections.ConfigDict, stage: str, seeds, items) -> dict:
    """Runs the grid of ``seeds`` x ``items`` (``key=v1,v2`` strings) for ``stage``."""
    from scpr_jax.config import validate
    from scpr_jax.stages import NEEDS, ORDER, run_stage
    from scpr_jax.stages.downstream import run_method
    from scpr_jax.stages.online import run_online_method

    dynamic, static = _split(parse_axes(items, stage, cfg), stage)
    kind, _, method = stage.partition("-")
    runner = run_method if kind == "down" else run_online_method
    rows = []
    for combo in itertools.product(*static.values()):
        settings = dict(zip(static, combo, strict=True))
        cfg_c = _with(cfg, settings)
        validate(cfg_c)
        for name in ORDER:
            if name == "collect" or name in NEEDS[method]:
                run_stage(name, run, cfg_c)  # the upstream stages (skipped when done)
        label = ",".join(f"{k}={v}" for k, v in settings.items()).replace(" ", "") or "base"
        members = grid(seeds, dynamic)
        done = runner(run, cfg_c, method, seeds=members, stage=f"sweep-{stage}/{label}")
        summary = done["summary"]
        for j in range(len(members)):
            rows.append({**settings, **members.describe(j), "return": summary["return"][j],
                         "cost": summary["cost"][j]})  # fmt: skip
    return write_results(run.stage(f"sweep-{stage}"), rows)


def write_results(out, rows: list[dict]) -> dict:
    """Per-member rows and means +- SE over seeds per setting, as JSON and Markdown."""
    keys = [k for k in rows[0] if k not in ("seed", "return", "cost")]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r[k]) for k in keys), []).append(r)

    def mean_se(values):
        v = np.asarray(values, float)
        se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
        return float(v.mean()), float(se)

    table = []
    for group, members in groups.items():
        ret, cost = mean_se([m["return"] for m in members]), mean_se([m["cost"] for m in members])
        table.append({**dict(zip(keys, group, strict=True)), "seeds": len(members),
                      "return": ret, "cost": cost})  # fmt: skip
    lines = ["| " + " | ".join([*keys, "seeds", "Return", "Cost"]) + " |"]
    lines.append("|" + "---|" * (len(keys) + 3))
    for t in table:
        cells = [t[k] for k in keys] + [str(t["seeds"])]
        cells += [f"{t['return'][0]:.1f} ± {t['return'][1]:.1f}",
                  f"{t['cost'][0]:.1f} ± {t['cost'][1]:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    atomic_write_json(out / "results.json", {"members": rows, "table": table})
    atomic_write_text(out / "results.md", markdown)
    print(f"[sweep] {len(rows)} members -> {out}")
    print(markdown)
    return {"members": rows, "table": table}
