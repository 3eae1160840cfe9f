"""SOPL (PAPER.md 5, privileged): r_new combined with the safety residual r_psi fitted next to
the users' true task returns (the `reward-sopl` stage's artifact), by ``sopl.combine``:
r_new + w (r_psi - mean) or (1 - w) r_new + w (r_psi - mean) / std (`reward_models`)."""

import jax

from scpr_jax.methods.base import Method
from scpr_jax.skills import reward_models as rm


def sopl_term(trajs, stage_dir, combine: str = "centred") -> jax.Array:
    """SOPL's reward term of every row (`reward_models.sopl_term`).  -> [N]."""
    params = rm.load_reward(stage_dir, "sopl")
    return rm.sopl_term(trajs, params, rm.reward_stats(params, trajs), combine)


METHOD = Method(
    name="sopl",
    needs=("label", "reward_sopl"),
    term=sopl_term,
    reward_stage="reward-sopl",
    omega="sopl.weight",
    term_settings=("sopl.combine",),
)
