"""Oracle (PAPER.md 5): TD3+BC on r_new - w * cost with the true cost, w = 10 by default.

The reward normaliser of Table 1 (its mean return is 1.0). Its term is -cost and omega the
cost weight ``downstream.oracle_cost_weight`` (online: the learning reward's cost weight)."""

import jax

from scpr_jax.methods.base import Method


def cost_term(trajs, stage_dir=None) -> jax.Array:
    """-cost of every row, so r' = r_new - w * cost.  -> [N]."""
    return -trajs.cost


METHOD = Method(
    name="oracle",
    term=cost_term,
    omega="downstream.oracle_cost_weight",
    online=True,
    online_reward="oracle",
    online_cost_weight="downstream.oracle_cost_weight",
)
