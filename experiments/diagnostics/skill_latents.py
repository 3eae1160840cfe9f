"""Does a frozen skill hold a safe behaviour anywhere in the high-level policy's latent box?

    python experiments/diagnostics/skill_latents.py <run-dir> [cpl|vpl] [n_latents]

pi_h picks u in [-3, 3]^Z and executes pi_l(s, z' = mu_prior + sigma_prior * u). This rolls
the skill of a finished `cpl` (or `vpl`) stage out at ``n_latents`` random u (uniform in the
box, seed 0) and at u = 0, 10 episodes in each crowd user's environment, and reports the
distribution of episode cost and return over latents. It also gives the skill's mean
squared distance to D_tau's actions, on safe and on unsafe rows (no BC term in CPL: how far
the decoder has moved off the data). Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from scpr_jax.artifacts import load_skill
from scpr_jax.data.storage import load_trajectories
from scpr_jax.envs import make_task, strip_goal
from scpr_jax.skill import execute, latent
from scpr_jax.skills.evaluate import latent_returns


def _act(skill):
    """[s, z'] -> pi_l(s, z'), through `execute` (which takes u = (z' - mu) / sigma)."""
    u_of = lambda x: (x[..., skill.obs_size :] - skill.prior_mean) / skill.prior_std  # noqa: E731
    return lambda x: execute(skill, x[..., : skill.obs_size], u_of(x))


def main(run: Path, stage: str = "cpl", n_latents: int = 64) -> str:
    cfg = json.loads((run / "config.json").read_text())
    task = make_task(cfg["env"])
    skill = load_skill(run / stage)
    z_dim = int(np.asarray(skill.prior_mean).shape[-1])
    u = jax.random.uniform(jax.random.PRNGKey(0), (n_latents, z_dim), minval=-3.0, maxval=3.0)
    u = jnp.concatenate([jnp.zeros((1, z_dim)), u])
    z = latent(skill, u)
    ret, cost = latent_returns(jax.random.PRNGKey(1), cfg["env"], _act(skill), z, 10,
                               cfg.get("eval_max_steps") or None)  # fmt: skip
    trajs = load_trajectories(run / "collect" / "trajectories.h5")
    obs = strip_goal(trajs.obs, task)
    safe = np.asarray(trajs.cost) == 0

    @jax.jit
    def mse(skill, obs, action, zi):  # data as arguments, not jit constants
        u_i = jnp.broadcast_to((zi - skill.prior_mean) / skill.prior_std, (obs.shape[0], z_dim))
        return jnp.sum(jnp.square(execute(skill, obs, u_i) - action), -1)

    d = np.stack([np.asarray(mse(skill, obs, trajs.action, zi)) for zi in z[:8]])  # first 8
    lines = [f"# {cfg['env']} seed {cfg['seed']}: the `{stage}` skill at {len(z)} latents "
             f"(u = 0 and {n_latents} uniform in [-3, 3]^{z_dim}), 10 episodes per crowd user", "",
             "| per crowd user | min cost | share of latents with cost 0 | median cost | "
             "return at the safest latent | best return with cost 0 | return, cost at u = 0 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in range(ret.shape[1]):
        c, r = cost[:, v], ret[:, v]
        safe_r = r[c == 0]
        best = f"{safe_r.max():.1f}" if safe_r.size else "none"
        lines.append(f"| user {v} | {c.min():.1f} | {np.mean(c == 0):.2f} | "
                     f"{np.median(c):.1f} | {r[np.argmin(c)]:.1f} | {best} | "
                     f"{r[0]:.1f}, {c[0]:.1f} |")  # fmt: skip
    lines += ["", f"Mean ||pi_l(s, z') - a_D||^2 over D_tau at the first 8 latents: safe rows "
              f"{d[:, safe].mean():.3f}, unsafe rows {d[:, ~safe].mean():.3f} (actions in "
              f"[-1, 1]^{trajs.action.shape[-1]})."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = sys.argv[1:]
    print(main(Path(args[0]), *(args[1:2] or ["cpl"]), *[int(a) for a in args[2:3]]))
