"""PyTorch references of scpr-jax's updates for `benchmarks/vs_pytorch.py` (written by us).

Eager ``nn.Module`` networks, ``torch.optim.Adam``, one learner (seed) per process and no
``torch.compile``: the design of the paper authors' PyTorch code. Each learner mirrors one
JAX update of ``scpr_jax`` (same networks, batch shapes, loss math, order of optimiser steps
and target updates), so the benchmark compares implementations of the same computation.

- `skills`: preference-VAE step (`scpr_jax.skills.vae`), CPL step (`scpr_jax.skills.cpl`).
- `agents`: IQL (`scpr_jax.agents.iql`), TD3 / TD3+BC through a frozen Safe-VPL skill
  (`scpr_jax.agents.td3`), SAC (`scpr_jax.agents.sac`).
- `data`: datasets and uniform minibatch sampling, as the JAX samplers draw them.
- `nets`: MLPs, twin critics, and loading of Flax parameters (for the parity tests).
"""
