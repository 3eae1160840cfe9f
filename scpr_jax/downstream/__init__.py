"""Downstream tasks: a high-level policy pi_h(u | s) over frozen low-level skills (PAPER.md 3.6).

`highlevel` holds the frozen-skill executor (Skill, latent, execute); `offline` trains pi_h by
TD3+BC on D_tau relabelled with a method's reward. Import the submodules directly.
"""
