"""SOPL (PAPER.md 5, privileged): r' = r_new + w (r_psi - mean) with the safety residual r_psi
fitted next to the users' true task returns (the `reward-sopl` stage's artifact)."""

import jax

from scpr_jax.methods.base import Method
from scpr_jax.skills import reward_models as rm


def sopl_term(trajs, stage_dir) -> jax.Array:
    """r_psi - mean of every row (`reward_models.sopl_term`).  -> [N]."""
    params = rm.load_reward(stage_dir, "sopl")
    return rm.sopl_term(trajs, params, rm.reward_stats(params, trajs))


METHOD = Method(
    name="sopl",
    needs=("label", "reward_sopl"),
    term=sopl_term,
    reward_stage="reward-sopl",
    omega="sopl.weight",
)
