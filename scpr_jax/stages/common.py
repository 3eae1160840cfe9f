"""What every pipeline stage shares: RNG streams, skip-if-done, progress, loading."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scpr_jax.data import storage
from scpr_jax.errors import NonFiniteError
from scpr_jax.progress import progress
from scpr_jax.runs import RunDir, is_writer

STREAMS = {  # fold_in id of each stage's RNG stream (fixed: changing one changes results)
    "collect": 1,
    "label": 2,
    "value": 3,
    "vae": 4,
    "iql": 5,
    "eval": 6,
    "cpl_vae": 7,
    "cpl": 8,
    "reward-rc": 9,
    "reward-sopl": 10,
    "downstream": 11,
    "online": 12,
}


def stage_key(cfg: ml_collections.ConfigDict, stream: str) -> jax.Array:
    """The root seed's key folded with ``stream``'s id."""
    return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), STREAMS[stream])


def skip(run: RunDir, stage: str) -> dict | None:
    """The recorded result of a finished stage (printing that it is skipped), else None."""
    done = run.done(stage)
    if done is not None:
        print(f"[{stage}] already done in {run.stage(stage)}: skipped")
    return done


def check_finite(stage: str, arrays: dict, hint: str = "") -> None:
    """`NonFiniteError` naming the stage, the array and its first bad row if any float in
    ``arrays`` (name -> array or pytree, rows on the leading axis) is NaN or inf."""
    for name, tree in arrays.items():
        for path, x in jax.tree_util.tree_leaves_with_path(tree):
            if not jnp.issubdtype(getattr(x, "dtype", np.float32), jnp.floating):
                continue  # integers, booleans, PRNG keys
            x = np.asarray(x)
            if np.isfinite(x).all():
                continue
            rows = np.flatnonzero(~np.isfinite(x.reshape(x.shape[0] if x.ndim else 1, -1)).all(-1))
            where = f"{name}{jax.tree_util.keystr(path)}"
            raise NonFiniteError(
                f"stage {stage!r}: {where} has {rows.size} rows with NaN or inf (first bad row "
                f"{rows[0]}); nothing of the stage was saved as a result. {hint}delete that "
                "stage's directory and re-run with other settings"
            )


def fmt(values) -> str:
    """A short "[a, b]" rendering of a goal or latent."""
    return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(values)) + "]"


@contextmanager
def progress_bar(desc: str, shown: tuple[str, ...] = (), unit: str = "it") -> Iterator[Callable]:
    """The ``progress(step, total, metrics)`` callback of `train_loop`: a bar on a terminal,
    plain lines in a log (`scpr_jax.progress`)."""
    # only process 0 of a multi-host run shows progress (the others' would repeat it)
    with progress(desc, unit, shown, enabled=is_writer()) as update:
        yield update


def load_data(run: RunDir, cfg: ml_collections.ConfigDict, label_stage: str | None = "label"):
    """D_tau (and the preference sets of ``label_stage``) of a run directory."""
    env_name = f"{cfg.env}/downstream"
    trajs = storage.load_trajectories(run.stage("collect") / "trajectories.h5", env=env_name)
    if label_stage is None:
        return trajs, None
    prefs, _ = storage.load_preferences(
        run.stage(label_stage) / "preferences.h5", env=env_name, trajs=trajs
    )
    return trajs, prefs
