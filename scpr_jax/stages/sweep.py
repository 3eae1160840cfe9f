"""`scpr sweep`: a grid of seeds x settings for one training stage, as few programs as possible.

Settings that are state leaves of the stage's learner (TD3's beta_reg, the VAE's kl_weight,
CPL's alpha, RC's omega = rc.weight, ...) become one vmapped member axis with the seeds
(`train.Members`), sharded over all devices; settings that change shapes or data (hidden,
batch_size, steps, ...) split the grid into separate programs, run one after another. Each
program is a stage directory ``sweep-<stage>/<static settings>``; resumable like every stage.
The results, per member and averaged over seeds, go to ``sweep-<stage>/results.{json,md}``.

Stages: ``collect``, ``vae``, ``iql``, ``cpl``, ``rc``, ``sopl`` (`sweep_plans.SKILL_PLANS`)
and ``down-<method>`` / ``online-<method>`` for every registered method. A sweep varies only
its own stage's settings (plus, downstream, the weight of its method's reward term,
`data_settings`); upstream stages run once (or are skipped when done).
"""

from __future__ import annotations

import ast
import copy
import itertools

import ml_collections
import numpy as np

from scpr_jax import methods
from scpr_jax.config import validate
from scpr_jax.runs import RunDir, atomic_write_json, atomic_write_text
from scpr_jax.stages.fingerprint import claim
from scpr_jax.stages.sweep_plans import SKILL_PLANS, downstream_plan, skill_plan
from scpr_jax.train import Members, grid


def stage_names() -> list[str]:
    """Every stage `scpr sweep --stage` accepts."""
    down = (f"down-{m}" for m in methods.names())
    online = (f"online-{m}" for m in methods.names(online=True))
    return [*SKILL_PLANS, *down, *online]


def section_of(stage: str) -> str:
    """Config section holding ``stage``'s own settings; ValueError listing the valid stages."""
    if stage not in stage_names():
        raise ValueError(f"unknown sweep stage {stage!r}; valid: {', '.join(stage_names())}")
    if stage in SKILL_PLANS:
        return stage
    kind, _, method = stage.partition("-")
    return f"{'td3bc' if kind == 'down' else 'td3'}.{methods.get(method).section}"


def data_settings(stage: str) -> tuple[str, ...]:
    """Settings outside its section that a downstream sweep may vary: its reward's weight."""
    if stage in SKILL_PLANS:
        return ()
    kind, _, name = stage.partition("-")
    method = methods.get(name)
    return tuple(k for k in method.sweep_leaves(kind) if "." in k)


def owner(key: str) -> str | None:
    """The sweep stage whose settings include the full config key ``key`` (None: upstream)."""
    top, _, rest = key.partition(".")
    if top in SKILL_PLANS:
        return top
    prefix = {"td3bc": "down", "td3": "online"}.get(top)
    name = f"{prefix}-{rest.partition('.')[0].replace('_', '-')}"
    return name if prefix and name in stage_names() else None


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


def _node(cfg: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        if not isinstance(cfg, ml_collections.ConfigDict) or part not in cfg:
            raise KeyError(key)
        cfg = cfg[part]
    return cfg


def _resolve(key: str, stage: str, cfg: ml_collections.ConfigDict) -> str:
    """Full config key: a top-level setting as in every command, else ``<section>.key``."""
    section = section_of(stage)
    full = key if "." in key or key in cfg else f"{section}.{key}"
    try:
        _node(cfg, full)
    except KeyError:
        others = [s for s in stage_names() if s != stage and "." not in key
                  and key in _node(cfg, section_of(s))]  # fmt: skip
        hint = f"; {key!r} is a setting of stage(s) {', '.join(others)}" if others else ""
        raise ValueError(f"--set {key}=...: unknown setting {full!r}{hint}") from None
    return full


def _values(item: str, node) -> list | None:
    """The values of ``key=raw`` as a grid axis, or None when it is one plain value."""
    raw = item.partition("=")[2]
    try:
        values = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return None  # a bare string (methods=rc,oracle): an override
    if not isinstance(values, list | tuple):
        return None
    if isinstance(node, tuple) and not all(isinstance(v, tuple | list) for v in values):
        return None  # hidden=(64, 64) is one tuple value, not two
    return list(values)


def _parse(item: str, stage: str, cfg: ml_collections.ConfigDict):
    """``key=raw`` -> (full config key, raw, grid values or None for one plain value)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item!r} must look like key=value or key=v1,v2,...")
    full = _resolve(key, stage, cfg)
    return full, raw, _values(item, _node(cfg, full))


def split_sets(items: list[str], stage: str, cfg: ml_collections.ConfigDict):
    """``--set`` strings -> (overrides ["full.key=value"], axes ["full.key=v1,v2"]): several
    values make a grid axis, one value overrides the config as in every command."""
    overrides, axes = [], []
    for item in items:
        full, raw, values = _parse(item, stage, cfg)
        (axes if values is not None else overrides).append(f"{full}={raw}")
    return overrides, axes


def parse_axes(items: list[str], stage: str, cfg: ml_collections.ConfigDict) -> dict:
    """``key=v1,v2`` strings -> {full config key: [values]}; short keys name the stage's section.
    Raises ValueError for a setting the stage cannot sweep, naming the stage it belongs to."""
    axes = {}
    for item in items:
        full, raw, values = _parse(item, stage, cfg)
        if values is None:  # one value: a one-value axis ("x=3" or "hidden=(64, 64)")
            try:
                values = [ast.literal_eval(raw)]
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"--set {item!r}: values must be Python literals") from err
        axes[full] = values
        _check_owner(full, stage)
    return axes


def _check_owner(full: str, stage: str) -> None:
    """Raises ValueError if ``stage`` cannot sweep ``full``, naming the stage it belongs to."""
    section, extra = section_of(stage), data_settings(stage)
    if full.startswith(f"{section}.") or full in extra:
        return
    theirs = owner(full)
    where = (
        f"it belongs to stage {theirs!r} (sweep it with --stage {theirs})"
        if theirs
        else "it is an upstream setting; sweep it with separate --workdir runs"
    )
    allowed = ", ".join([f"{section}.*", *extra])
    raise ValueError(
        f"cannot sweep [{full!r}] in a {stage!r} sweep: {where}; a {stage!r} sweep varies "
        f"only {allowed}"
    )


def _split(axes: dict, section: str, dynamic_map: dict) -> tuple[dict, dict]:
    """(dynamic {state leaf: values}, static {config key: values}) of a stage's sweep axes;
    ``dynamic_map`` names settings of ``section`` by their short key, others in full."""
    dynamic, static = {}, {}
    for key, values in axes.items():
        name = key.removeprefix(f"{section}.") if key.startswith(f"{section}.") else key
        if name in dynamic_map:
            dynamic[dynamic_map[name]] = values
        else:
            static[key] = values
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
    axes = parse_axes(items, stage, cfg)
    section = section_of(stage)
    plan = skill_plan(run, cfg, stage) if stage in SKILL_PLANS else downstream_plan(run, stage)
    dynamic, static = _split(axes, section, plan.dynamic)
    rows = []
    for combo in itertools.product(*static.values()):
        settings = dict(zip(static, combo, strict=True))
        cfg_c = _with(cfg, settings)
        validate(cfg_c)
        plan.upstream(cfg_c)
        label = ",".join(f"{k}={v}" for k, v in settings.items()).replace(" ", "") or "base"
        members = grid(seeds, dynamic)
        described = {"seeds": list(members.seeds), "hparams": dict(members.hparams)}
        claim(run, f"sweep-{stage}/{label}", cfg_c, {"members": described})  # before any work
        summary = plan.train(cfg_c, members, f"sweep-{stage}/{label}")
        _check_members(summary, members, run.stage(f"sweep-{stage}/{label}"))
        for j in range(len(members)):
            metrics = {m: summary[m][j] for m in plan.metrics}
            rows.append({**settings, **members.describe(j), **metrics})
    return write_results(run.stage(f"sweep-{stage}"), rows, plan.metrics)


def _check_members(summary: dict, members: Members, out) -> None:
    """ValueError if a finished program in ``out`` was run for other members than ``members``."""
    before = (list(summary["seeds"]), {k: list(v) for k, v in summary["hparams"].items()})
    now = (list(members.seeds), {k: list(v) for k, v in members.hparams.items()})
    if before != now:
        raise ValueError(
            f"the finished sweep program {out} was run for other members (seeds, values: "
            f"{before}) than this sweep's {now}; use another --workdir or delete {out}"
        )


def write_results(out, rows: list[dict], metrics: tuple[str, ...] = ("return", "cost")) -> dict:
    """Per-member rows and means +- SE over seeds per setting, as JSON and Markdown."""
    keys = [k for k in rows[0] if k not in ("seed", *metrics)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(str(r[k]) for k in keys), []).append(r)

    def mean_se(values):
        v = np.asarray(values, float)
        se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0
        return float(v.mean()), float(se)

    table = [
        {**dict(zip(keys, group, strict=True)), "seeds": len(members),
         **{m: mean_se([r[m] for r in members]) for m in metrics}}
        for group, members in groups.items()
    ]  # fmt: skip
    lines = ["| " + " | ".join([*keys, "seeds", *(m.capitalize() for m in metrics)]) + " |"]
    lines.append("|" + "---|" * (len(keys) + 1 + len(metrics)))
    for t in table:
        cells = [t[k] for k in keys] + [str(t["seeds"])]
        for m in metrics:
            spec = ".1f" if m in ("return", "cost") else ".4g"  # returns: 0.1 is plenty
            cells.append(f"{t[m][0]:{spec}} ± {t[m][1]:{spec}}")
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    atomic_write_json(out / "results.json", {"members": rows, "table": table})
    atomic_write_text(out / "results.md", markdown)
    print(f"[sweep] {len(rows)} members -> {out}")
    print(markdown)
    return {"members": rows, "table": table}
