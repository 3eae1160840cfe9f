"""The run report: every file written atomically, JSON round-trips, PNGs valid, rewrites clean."""

import json

import ml_collections
import numpy as np
import pytest

from scpr_jax.evaluation import normalised_table
from scpr_jax.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILES = {"table.md", "table.json", "curves.png", "scatter.png", "config.json"}
RAW = {
    "oracle": {"return": [10.0, 12.0, 11.0], "cost": [0.0, 1.0, 0.0]},
    "task-only": {"return": [11.0, 13.0, 12.0], "cost": [4.0, 6.0, 5.0]},
    "safe-cpl": {"return": [9.0, 11.0, 10.0], "cost": [1.0, 2.0, 0.0]},
}


def make_curves(methods, n_seeds=3, n_points=5):
    rng = np.random.default_rng(0)
    step = np.arange(1, n_points + 1) * 1000
    return {
        m: {
            "step": step,
            "return": rng.normal(size=(n_seeds, n_points)).cumsum(-1),
            "cost": rng.uniform(size=(n_seeds, n_points)),
        }
        for m in methods
    }


def check_report(paths, table, config, title):
    assert set(paths) == FILES
    out_dir = paths["table.md"].parent
    # no temporary files left behind by the atomic writes
    assert {p.name for p in out_dir.iterdir()} == FILES
    assert json.loads(paths["table.json"].read_text()) == table
    assert json.loads(paths["config.json"].read_text()) == config
    for name in ("curves.png", "scatter.png"):
        data = paths[name].read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    text = paths["table.md"].read_text()
    assert text.startswith(f"# {title}\n")
    for method in table["methods"]:
        assert f"| {method} |" in text
    return text


def test_write_report_files_and_rewrite(tmp_path):
    out_dir = tmp_path / "report"
    table = normalised_table(RAW)
    config = ml_collections.ConfigDict({"env": "ball-run", "seeds": 3, "hidden": (256, 256)})
    paths = write_report(out_dir, table, make_curves(RAW), config, "Ball-Run offline")
    text = check_report(
        paths, table, {"env": "ball-run", "seeds": 3, "hidden": [256, 256]}, "Ball-Run offline"
    )
    assert "n/a" not in text

    # a second report into the same directory replaces every file; normalisation unavailable
    # (no Oracle, no Task-Only) makes the scatter fall back to raw values
    raw2 = {"rc": RAW["safe-cpl"], "single-seed": {"return": [3.0], "cost": [0.0]}}
    table2 = normalised_table(raw2)
    curves2 = {"rc": make_curves(["rc"])["rc"], "single-seed": make_curves(["x"], n_seeds=1)["x"]}
    paths2 = write_report(out_dir, table2, curves2, {"env": "ball-run"}, "Second")
    assert paths2 == paths
    text2 = check_report(paths2, table2, {"env": "ball-run"}, "Second")
    assert "safe-cpl" not in text2 and "n/a" in text2 and "Notes:" in text2


def test_write_report_empty_curves(tmp_path):
    table = normalised_table(RAW)
    paths = write_report(tmp_path, table, {}, {}, "No curves")
    check_report(paths, table, {}, "No curves")


def test_bad_curves_raise_and_keep_the_old_report(tmp_path):
    table = normalised_table(RAW)
    paths = write_report(tmp_path, table, make_curves(RAW), {"a": 1}, "First")
    before = {name: p.read_bytes() for name, p in paths.items()}
    bad = make_curves(["oracle"], n_points=5)
    bad["oracle"]["cost"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"curves\['oracle'\]\['cost'\] has shape \(3, 4\)"):
        write_report(tmp_path, table, bad, {"a": 2}, "Second")
    with pytest.raises(ValueError, match="has no 'step'"):
        write_report(tmp_path, table, {"oracle": {"return": [1.0], "cost": [1.0]}}, {}, "Third")
    assert {name: p.read_bytes() for name, p in paths.items()} == before
