"""Downstream tasks: a high-level policy pi_h(u | s) over frozen low-level skills (PAPER.md 3.6).

`offline` trains pi_h by TD3+BC on D_tau relabelled with a method's reward, `online` by online
TD3 in the downstream environment; the frozen skill itself is `scpr_jax.skill`. Import the
submodules directly.
"""
