"""The Table 1 experiment command on a tiny preset: it runs, resumes and writes its files."""

import importlib.util
import json
from pathlib import Path

import numpy as np
from test_stages import TINY, _downstream_tiny

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("table1", ROOT / "experiments" / "table1.py")
table1 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table1)


def test_cells_normalise_per_upstream_seed():
    per_seed = [{"return": [2.0, 4.0], "cost": [1.0, 3.0]}, {"return": [10.0], "cost": [0.0]}]
    refs = [(2.0, 2.0), (5.0, 1.0)]  # seed 0: Oracle mean 2, Task-Only 2; seed 1: 5 and 1
    c = table1.cell(per_seed, refs, reps=200)
    assert c["rew_norm"]["mean"] == np.mean([1.0, 2.0, 2.0])  # 2/2, 4/2, 10/5
    assert c["cost_norm"]["mean"] == np.mean([0.5, 1.5, 0.0])
    assert c["return"]["n_runs"] == 3 and len(c["cost"]["iqm_ci95"]) == 2
    assert table1.cell(per_seed, [(2.0, 0.0), (5.0, 1.0)], 10)["cost_norm"] is None


def test_flatness_is_the_last_relative_change_of_the_run_mean():
    returns = np.array([[100.0, 180.0, 200.0], [100.0, 220.0, 190.0]])  # means 100, 200, 195
    assert table1.flatness(returns) == 5.0 / 195.0
    assert np.isnan(table1.flatness(returns[:, :1]))


def test_table1_runs_resumes_and_writes_md_json_png(tmp_path, capsys):
    sets = [a for a in [*TINY, *_downstream_tiny(("oracle", "task-only"), steps=400)]
            if a != "--set"]  # fmt: skip
    sets = [s for s in sets if not s.startswith("methods=")]
    args = [
        "--envs",
        "ball-run",
        "--seeds",
        "0:2",
        "--methods",
        "oracle,task-only",
        "--root",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
        "--reps",
        "100",
    ]
    args += [x for s in sets for x in ("--set", s)]  # fmt: skip
    assert table1.main(args) == 0
    saved = json.loads((tmp_path / "out" / "table1.json").read_text())
    cells = saved["table"]["ball-run"]
    assert set(cells) == {"oracle", "task-only"} and cells["oracle"]["return"]["n_runs"] == 4
    assert abs(cells["oracle"]["rew_norm"]["mean"] - 1.0) < 1e-9 and cells["task-only"]["cost_norm"]
    wall = saved["info"]["wall_s"]["ball-run"]
    assert set(wall) == {"0", "1"} and min(wall.values()) > 0
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| Oracle |" in md and "0.95 / 0.000" not in md and "1.00 / 0.000" in md
    assert (tmp_path / "out" / "table1.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "table1_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert cells["oracle"]["flatness"] >= 0 and "| Last Δ |" in md  # 2 evaluations each
    dev = (tmp_path / "out" / "table1_deviations.md").read_text()
    assert "## ball-run" in dev and "| `downstream.oracle_cost_weight` | 10.0 | 1.0 |" in dev
    capsys.readouterr()
    args[args.index("0:2")] = "1:2"  # resumes seed 1 only: done, nothing is retrained
    assert table1.main(args) == 0
    again = json.loads((tmp_path / "out" / "table1.json").read_text())
    assert again["info"]["wall_s"] == {"ball-run": wall} and again["info"]["seeds"] == {
        "ball-run": [0, 1]
    }  # the table still holds every finished seed
    assert again["table"]["ball-run"]["oracle"]["return"]["n_runs"] == 4
