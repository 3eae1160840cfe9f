"""Why do two users' latents give the same skill?  A diagnostic of a finished `vpl` stage.

    python experiments/diagnostics/skill_data.py <run-dir>

For each crowd user u with posterior-mean latent z_u (the `vpl` summary), over the rows of
D_tau: the Pearson correlation of the frozen decoder's r_phi(s, z_u, a) with every user's true
r_user(s, a; g_v) - K cost (rows = whose latent, columns = whose true reward). A decoder that
tells the users apart has the largest value of each row on its diagonal. Then, for every
user, how much of D_tau's best behaviour for them is safe: the mean true r_user over the
top-5% rows by that reward, among safe rows and among unsafe rows, and the share of the top
5% that is safe. Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.data.labels import crowd_goals, user_rewards
from scpr_jax.data.storage import load_trajectories
from scpr_jax.envs import make_task, strip_goal
from scpr_jax.skills.train_vae import load_vae
from scpr_jax.skills.vae import RewardDecoder


def main(run: Path) -> str:
    cfg = json.loads((run / "config.json").read_text())
    task = make_task(cfg["env"])
    trajs = load_trajectories(run / "collect" / "trajectories.h5")
    params, vcfg = load_vae(run / "vpl")
    z_users = np.asarray(json.loads((run / "vpl" / "summary.json").read_text())["vae"]
                         ["posterior_mean_per_user"], np.float32)  # fmt: skip
    goals = crowd_goals(task, len(z_users))
    K = jnp.float32(cfg["label"]["K"])
    true = np.stack([np.asarray(user_rewards(trajs, task, jnp.asarray(g), K)) for g in goals])
    obs = strip_goal(trajs.obs, task)
    decoder = RewardDecoder(tuple(vcfg.decoder_hidden))
    r_phi = jax.jit(lambda z: decoder.apply(params.decoder, obs, jnp.broadcast_to(z, (
        obs.shape[0], z.shape[-1])), trajs.action))  # fmt: skip
    lines = [f"# {cfg['env']} ({cfg['preset']} preset, seed {cfg['seed']}): {len(goals)} users, "
             f"{trajs.size} rows of D_tau", "",
             "Corr(r_phi(s, z_u, a), r_user(s, a; g_v) - K cost) over D_tau (all rows / safe rows "
             "only, where the shared cost term is constant):", "",
             "| latent \\ true reward | " + " | ".join(f"user {v} {goals[v]}"
                                                      for v in range(len(goals))) + " |",
             "|---" * (len(goals) + 1) + "|"]  # fmt: skip
    sd = float(np.exp(0.5 * np.asarray(params.prior_logvar)).mean())
    safe = np.asarray(trajs.cost) == 0
    for u, z in enumerate(z_users):
        pred = np.asarray(r_phi(jnp.asarray(z)))
        corr = [(np.corrcoef(pred, true[v])[0, 1], np.corrcoef(pred[safe], true[v][safe])[0, 1])
                for v in range(len(goals))]  # fmt: skip
        lines.append(f"| z of user {u} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in corr)
                     + " |")  # fmt: skip
    gap = np.linalg.norm(z_users[:, None] - z_users[None], axis=-1).max()
    lines += ["", f"Largest distance between users' posterior means: {gap:.3f}; prior std "
              f"(mean over dims) {sd:.3f}.", "",
              "| user | top-5% r_user: safe rows | unsafe rows | safe share of top 5% |",
              "|---|---|---|---|"]  # fmt: skip
    cost = ~safe
    for v, g in enumerate(goals):
        r_user = true[v] + float(K) * cost  # without the cost term
        top = r_user >= np.quantile(r_user, 0.95)
        safe_top = r_user[top & ~cost].mean() if (top & ~cost).any() else float("nan")
        unsafe_top = r_user[top & cost].mean() if (top & cost).any() else float("nan")
        lines.append(f"| {v} {g} | {safe_top:.3f} | {unsafe_top:.3f} | "
                     f"{(top & ~cost).sum() / top.sum():.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
