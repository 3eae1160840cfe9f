"""Settings fingerprints: what each stage directory's results depend on, recorded at its start.

When a stage (or a sweep program) starts, its directory gets ``FINGERPRINT.json``: exactly the
settings its results depend on (`own_settings`, read off `SECTIONS` and the methods registry)
and the fingerprints of the stage directories it consumes (`consumes`): a hash chain, so a
changed or redone upstream stage shows in every stage built on it. A command refuses, before
any work, to resume a checkpoint, reuse a finished stage or reuse a sweep program whose
recorded fingerprint differs from the current settings', listing the differing settings.
Settings present on only one side (added by a newer scpr-jax) keep the old behaviour.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_collections

from scpr_jax import artifacts, methods
from scpr_jax.data import storage
from scpr_jax.errors import SettingsError
from scpr_jax.runs import RunDir, atomic_write_json, jsonable, read_json
from scpr_jax.stages.data import regret_stage

FINGERPRINT = "FINGERPRINT.json"
SECTIONS = {  # top-level setting -> upstream stage directories whose results depend on it
    "collect": ("collect",),
    "label": ("label", "label-regret"),
    "value": ("label", "label-regret"),
    "vae": ("vpl",),
    "iql": ("vpl",),
    "eval_episodes": ("vpl", "cpl"),
    "eval_max_steps": ("vpl", "cpl"),
    "cpl_vae": ("cpl",),
    "cpl": ("cpl",),
    "rc": ("reward-rc",),
    "sopl": ("reward-sopl",),
}
EVERY_STAGE = ("env", "preset", "seed")  # settings of collect, hence of all built on it
CONSUMES = {  # upstream stage directory -> the directories it reads ("regret": regret labels)
    "collect": (),
    "label": ("collect",),
    "label-regret": ("collect",),
    "vpl": ("label",),
    "cpl": ("regret",),
    "reward-rc": ("label",),
    "reward-sopl": ("label",),
}
STANDS_FOR = {"vae": "vpl", "iql": "vpl", "rc": "reward-rc", "sopl": "reward-sopl"}  # sweeps
FROZEN_VAES = {"sweep-iql/vae": ("vae", "label"), "sweep-cpl/vae": ("cpl_vae", "regret")}


def _downstream_stages(key: str) -> tuple[str, ...]:
    """The ``down-<m>`` / ``online-<m>`` directories whose results depend on setting ``key``."""
    top, _, rest = key.partition(".")
    section = rest.partition(".")[0]
    out = []
    for m in methods.REGISTRY.values():
        prefixes = ("down", "online") if m.online else ("down",)
        if top in ("downstream", "eval_max_steps"):
            out += [f"{p}-{m.name}" for p in prefixes]
        elif (top, section) in (("td3bc", m.section), ("td3", m.section)):
            out.append(f"{'down' if top == 'td3bc' else 'online'}-{m.name}")
        elif key == m.omega or key in m.term_settings:  # its reward term's weight, options
            out.append(f"down-{m.name}")
    return tuple(out)


def _stages_of(key: str) -> tuple[str, ...]:
    """The stage directories whose results depend on the full config key ``key``."""
    top = key.partition(".")[0]
    if top in EVERY_STAGE:
        return ("collect",)  # everything downstream of collect depends on it too
    if any(key == m.omega or key in m.term_settings for m in methods.REGISTRY.values()):
        return _downstream_stages(key)  # read downstream only (rc.weight, sopl.combine)
    return SECTIONS.get(top, ()) + _downstream_stages(key)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; tuples become lists (as in JSON)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def stands_for(stage_dir: str) -> str:
    """The pipeline stage directory a sweep program (``sweep-<s>/<label>``) stands for."""
    if not stage_dir.startswith("sweep-"):
        return stage_dir
    stage = stage_dir.removeprefix("sweep-").partition("/")[0]
    return STANDS_FOR.get(stage, stage)


def consumes(cfg: ml_collections.ConfigDict, stage_dir: str) -> tuple[str, ...]:
    """The stage directories whose outputs ``stage_dir`` reads."""
    base = stands_for(stage_dir)
    if stage_dir in FROZEN_VAES:  # the VAE an IQL / CPL sweep trains once when vpl/cpl is not
        names = FROZEN_VAES[stage_dir][1:]
    elif base in CONSUMES:
        names = CONSUMES[base]
    else:  # down-<m> / online-<m>: D_tau and the stages the method needs
        names = ("collect", *methods.get(base.partition("-")[2]).needs)
    out = [directory_of(n, cfg) for n in names]
    return tuple(dict.fromkeys(n for n in out if n != base))


def directory_of(stage: str, cfg: ml_collections.ConfigDict) -> str:
    """The directory an upstream pipeline stage (``label_regret``, ``reward_rc``, ...) writes;
    regret labels live in ``label`` when the labels are regret labels already."""
    if stage in ("regret", "label_regret", "label-regret"):
        return regret_stage(cfg)
    return stage.replace("_", "-")


def own_settings(cfg: ml_collections.ConfigDict, stage_dir: str) -> dict:
    """The settings (full keys) the results of ``stage_dir`` depend on directly."""
    flat, base = flatten(cfg.to_dict()), stands_for(stage_dir)
    if stage_dir in FROZEN_VAES:
        section = FROZEN_VAES[stage_dir][0]
        return {k: v for k, v in flat.items() if k.startswith(f"{section}.")}
    return {k: v for k, v in flat.items() if base in _stages_of(k)}


def fingerprint(cfg: ml_collections.ConfigDict, stage_dir: str, extra: dict | None = None):
    """``stage_dir``'s record: its settings, ``extra`` (a sweep's members) and the records of
    the directories it consumes, with the SHA-256 of all of it."""
    record = {
        "stage": stage_dir,
        "settings": own_settings(cfg, stage_dir),
        "extra": extra or {},
        "upstream": {u: fingerprint(cfg, u) for u in consumes(cfg, stage_dir)},
    }
    record = json.loads(json.dumps(jsonable(record), sort_keys=True))
    record["sha256"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return record


def differences(old: dict, new: dict, via: str = "") -> list[str]:
    """``"key: old -> new"`` for every setting (and sweep member list) that differs between
    two records, through the upstream chain."""
    where = f" (via upstream stage {via!r})" if via else ""
    out = []
    for part in ("settings", "extra"):
        a, b = old.get(part, {}), new.get(part, {})
        out += [
            f"{k}: {a[k]!r} -> {b[k]!r}{where}" for k in sorted(set(a) & set(b)) if a[k] != b[k]
        ]
    a, b = old.get("upstream", {}), new.get("upstream", {})
    for u in sorted(set(a) | set(b)):
        if u not in a or u not in b:
            out.append(f"reads {u!r}: {u in a} -> {u in b}{where}")
        else:
            out += differences(a[u], b[u], u)
    return list(dict.fromkeys(out))


def content_id(run: RunDir, stage_dir: str) -> str | None:
    """SHA-256 over the checksums of what a finished stage hands on (its HDF5 files and
    artifacts); None while it is unfinished. A redone stage whose outputs differ (another
    host rounds differently, other settings) gets another id."""
    if run.done(stage_dir) is None:
        return None
    directory, parts = run.root / stage_dir, []
    for path in sorted(directory.glob("*.h5")):
        parts.append(f"{path.name}:{storage.file_checksum(path)}")
    for path in sorted(directory.glob("*.json")):
        description = read_json(path)
        if isinstance(description, dict) and description.get("format") == artifacts.FORMAT:
            parts.append(f"{path.name}:{description.get('sha256')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _inputs(run: RunDir, cfg: ml_collections.ConfigDict, stage_dir: str) -> dict:
    return {u: content_id(run, u) for u in consumes(cfg, stage_dir)}


def _input_changes(old: dict, new: dict) -> list[str]:
    return [
        f"the outputs of upstream stage {u!r} changed since this stage started (it was redone)"
        for u in sorted(set(old) & set(new))
        if old[u] is not None and new[u] is not None and old[u] != new[u]
    ]


def _untouched(path) -> bool:
    """Only the fingerprint is there: the stage never produced anything to mislabel."""
    return not path.is_dir() or all(p.name == FINGERPRINT for p in path.iterdir())


def _mismatch(run: RunDir, stage_dir: str, diff: list[str]) -> SettingsError:
    path = run.root / stage_dir
    what = f"stage directory {path} was started with other settings"
    if any(d.startswith("members:") for d in diff):
        what = f"the sweep program {path} was run for other members (seeds, values) or settings"
    return SettingsError(
        f"{what}:\n  "
        + "\n  ".join(diff)
        + f"\nuse a new --workdir, or delete {path} (and the stages built on it) to redo it"
    )


def _compare(run: RunDir, stage_dir: str, cfg, extra: dict | None) -> tuple[dict, list[str]]:
    """(the current record, the differences from the recorded one; [] when none is)."""
    new = fingerprint(cfg, stage_dir, extra)
    new["inputs"] = _inputs(run, cfg, stage_dir)
    old = record_of(run, stage_dir)
    if old is None:
        return new, []
    return new, differences(old, new) + _input_changes(old.get("inputs", {}), new["inputs"])


def claim(
    run: RunDir, stage_dir: str, cfg: ml_collections.ConfigDict, extra: dict | None = None
) -> None:
    """Before ``stage_dir`` starts or resumes: refuses a recorded fingerprint that differs from
    the current settings' (or whose upstream outputs changed), else records it, and removes
    temp files a kill left behind."""
    path = run.root / stage_dir
    run.clean_temp(stage_dir)
    new, diff = _compare(run, stage_dir, cfg, extra)
    if diff and not _untouched(path):
        raise _mismatch(run, stage_dir, diff)
    legacy = path.is_dir() and not (path / FINGERPRINT).exists() and run.done(stage_dir) is None
    if legacy and (path / "ckpt").exists():
        raise SettingsError(
            f"{path} holds a checkpoint made by an older scpr-jax, without a record of its "
            "settings; delete it to redo that stage"
        )
    if diff or not (path / FINGERPRINT).exists():
        atomic_write_json(path / FINGERPRINT, new)


def known_dirs() -> list[str]:
    """Every pipeline stage directory a run may hold (sweep programs aside)."""
    down = [f"down-{m}" for m in methods.names()]
    return [*CONSUMES, *down, *(f"online-{m}" for m in methods.names(online=True))]


def check_run(run: RunDir, cfg: ml_collections.ConfigDict) -> None:
    """Refuses (`SettingsError`) if any started stage directory of ``run`` was started with
    settings other than ``cfg``'s; sweep programs are checked when their sweep starts them."""
    for stage_dir in known_dirs():
        path = run.root / stage_dir
        if (path / FINGERPRINT).exists() and not _untouched(path):
            if diff := _compare(run, stage_dir, cfg, None)[1]:
                raise _mismatch(run, stage_dir, diff)


def record_of(run: RunDir, stage_dir: str) -> Any:
    """The recorded fingerprint of ``stage_dir`` (None if it has none)."""
    path = run.root / stage_dir / FINGERPRINT
    return read_json(path) if path.exists() else None
