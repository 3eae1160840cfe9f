"""Safe-CPL (PAPER.md 3.5, 3.6): pi_h over the CPL policy decoder of the `cpl` stage."""

from scpr_jax.methods.base import Method

METHOD = Method(
    name="safe-cpl",
    needs=("label_regret", "cpl"),  # regret labels, then BT-VAE + CPL decoder
    skill_stage="cpl",  # acts through cpl/skill.json
    skill_kind="cpl",
    online=True,
)
