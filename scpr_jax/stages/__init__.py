"""Pipeline stages over a run directory (`scpr` commands call these by name)."""

from scpr_jax.stages.pipeline import ORDER, STAGES, check_settings, run_stage, stages_for

__all__ = ["ORDER", "STAGES", "check_settings", "run_stage", "stages_for"]
