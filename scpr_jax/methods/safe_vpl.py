"""Safe-VPL (PAPER.md 3.3-3.4, 3.6): pi_h over the latent IQL skills of the `vpl` stage."""

from scpr_jax.methods.base import Method

METHOD = Method(
    name="safe-vpl",
    needs=("label", "vpl"),  # partial-return crowd labels, then BT-VAE + IQL skills
    skill_stage="vpl",  # acts through vpl/skill.json
    skill_kind="iql",
    online=True,
)
