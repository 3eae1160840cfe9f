"""Table 1's presets per environment: ``--config configs/table1.py:<task>[,small|paper]``.

``paper`` is PAPER.md's settings (accelerators) with every Table 1 method. ``small`` is the
2-core CPU preset that `experiments/table1.py` runs: the small preset of
`scpr_jax.config.pipeline_config` plus the per-environment changes below, each found by a
diagnostic run and listed with its reason in `experiments/DEVIATIONS.md`.
"""

from scpr_jax import methods
from scpr_jax.config import apply_overrides, pipeline_config

TABLE1_METHODS = ("oracle", "task-only", "sopl", "rc", "safe-vpl", "safe-cpl")

# both presets, every task: our reading of PAPER.md where it is ambiguous (DEVIATIONS.md)
READINGS = ["sopl.combine=standardised"]

# task -> "--set"-style overrides of the small preset (see experiments/DEVIATIONS.md)
SMALL = {
    "ball-run": ["downstream.oracle_cost_weight=1.0", "td3bc.oracle.bc_alpha=50.0"],
}
STEPS = {"ball-run": 8000}  # TD3+BC updates of every method (small preset: 3000)


def get_config(arg: str = "ball-run,small"):
    task, _, preset = arg.partition(",")
    cfg = pipeline_config(task, preset or "small")
    cfg.methods = TABLE1_METHODS
    apply_overrides(cfg, READINGS)
    if cfg.preset == "small":
        steps = [f"td3bc.{methods.get(m).section}.steps={STEPS[task]}" for m in TABLE1_METHODS
                 if task in STEPS]  # fmt: skip
        apply_overrides(cfg, SMALL.get(task, []) + steps)
    return cfg
