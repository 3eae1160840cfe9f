"""RC(omega) (PAPER.md 5): r' = (1 - omega) r_new + omega r_hat with the pooled crowd's
unimodal BT reward r_hat (the `reward-rc` stage's artifact), standardised over D_tau."""

import jax

from scpr_jax.methods.base import Method
from scpr_jax.skills import reward_models as rm


def rc_term(trajs, stage_dir) -> jax.Array:
    """(r_hat - mean) / std - r_new of every row (`reward_models.rc_term`).  -> [N]."""
    params = rm.load_reward(stage_dir, "rc")
    return rm.rc_term(trajs, params, rm.reward_stats(params, trajs))


METHOD = Method(
    name="rc",
    needs=("label", "reward_rc"),
    term=rc_term,
    reward_stage="reward-rc",
    omega="rc.weight",
)
