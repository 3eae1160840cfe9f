"""What every pipeline stage shares: RNG streams, skip-if-done, progress bars, loading."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from scpr_jax.data import storage
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


def fmt(values) -> str:
    """A short "[a, b]" rendering of a goal or latent."""
    return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(values)) + "]"


@contextmanager
def progress_bar(desc: str, total: int, shown: tuple[str, ...] = ()) -> Iterator[Callable]:
    """A tqdm bar as the ``progress(step, total, metrics)`` callback of `train_loop`
    (``total`` 0: taken from the first callback)."""
    # only process 0 of a multi-host run shows bars (the others' would repeat them)
    with tqdm(total=int(total) or None, desc=desc, mininterval=2, disable=not is_writer()) as bar:

        def update(step: int, step_total: int, metrics: dict) -> None:
            if bar.total != step_total:
                bar.total = step_total
            bar.update(step - bar.n)
            if shown:
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in shown})

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
