"""How much of a crowd's labels is about the task rather than safety?  A diagnostic of D_pref.

    python experiments/diagnostics/label_info.py <run-dir> [<run-dir> ...]

Over every labelled pair of the run's `label` stage: the share of pairs whose two segments
have equal cost (the only pairs a user's task preference decides), the mean absolute
task-return difference per user against 10 x the cost difference, how often the users
disagree among the equal-cost pairs, and the correlation of users 0 and 1's task-return
differences. Prints one Markdown row per run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from scpr_jax.data import segments
from scpr_jax.data.labels import user_rewards
from scpr_jax.data.storage import load_preferences, load_trajectories
from scpr_jax.envs import make_task


def row(run: Path) -> str:
    cfg = json.loads((run / "config.json").read_text())
    task = make_task(cfg["env"])
    prefs, _ = load_preferences(run / "label" / "preferences.h5")
    trajs = load_trajectories(run / "collect" / "trajectories.h5")
    length = cfg["label"]["segment_len"]
    s1, s2 = np.asarray(prefs.starts1).ravel(), np.asarray(prefs.starts2).ravel()

    def summed(x, starts):  # [N] per-row values -> [pairs] segment sums
        return np.asarray(segments.gather_segments(jnp.asarray(x), jnp.asarray(starts), length)
                          ).sum(-1)  # fmt: skip

    cost = np.asarray(trajs.cost)
    c1, c2 = summed(cost, s1), summed(cost, s2)
    diffs = []
    for goal in np.asarray(prefs.user_goals):
        r = np.asarray(user_rewards(trajs, task, jnp.asarray(goal), jnp.float32(0.0)))
        diffs.append(summed(r, s1) - summed(r, s2))
    equal = c1 == c2
    task_diff = " / ".join(f"{np.abs(d).mean():.2f}" for d in diffs)
    disagree = (np.sign(diffs[0][equal]) != np.sign(diffs[1][equal])).mean()
    corr = np.corrcoef(diffs[0], diffs[1])[0, 1]
    return (f"| {cfg['env']} (seed {cfg['seed']}) | {len(c1)} | {equal.mean():.3f} | {task_diff} | "
            f"{10 * np.abs(c1 - c2).mean():.1f} | {disagree:.3f} | {corr:.3f} |")  # fmt: skip


if __name__ == "__main__":
    print(
        "| run | pairs | equal cost | mean abs task-return diff per user | mean abs 10 x cost "
        "diff | users 0, 1 disagree (equal cost) | corr of users 0, 1 task diffs |"
    )
    print("|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print(row(Path(arg)))
