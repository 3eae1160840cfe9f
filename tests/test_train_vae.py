"""The VAE stage on a tiny Ball-Run crowd: held-out evaluation and resume after a stop."""

from functools import partial

import jax
import numpy as np
import pytest
from scripted import scripted_trajectories

from scpr_jax.data.preferences import label_config, make_preferences
from scpr_jax.envs import make_task
from scpr_jax.skills.train_vae import train_vae, vae_train_config


def _tiny():
    trajs = scripted_trajectories(jax.random.PRNGKey(0), "ball-run/downstream", 8, 250, "sticky")
    task = make_task("ball-run")
    cfg = label_config("small", "ball-run").unlock()
    cfg.n_sets, cfg.n_pairs, cfg.segment_len = 40, 4, 8
    prefs = make_preferences(jax.random.PRNGKey(1), trajs, task, cfg)
    vcfg = vae_train_config("small").unlock()
    vcfg.hidden, vcfg.decoder_hidden, vcfg.latent_dim = 16, (16,), 2
    vcfg.batch_size, vcfg.steps, vcfg.chunk = 8, 40, 10
    return trajs, prefs, task, vcfg


def test_vae_stage_evaluates_and_resumes(tmp_path):
    trajs, prefs, task, vcfg = _tiny()
    key = jax.random.PRNGKey(2)
    full, summary = train_vae(key, trajs, prefs, task, vcfg, tmp_path / "full")
    assert 0.0 <= summary["accuracy"] <= 1.0 and len(summary["accuracy_per_user"]) == 2
    assert np.asarray(summary["posterior_mean_per_user"]).shape == (2, 2)

    # "kill" the stage after 20 of 40 updates, then rerun it
    def stop_at_20(step, total, metrics):
        if step == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_vae(key, trajs, prefs, task, vcfg, tmp_path / "cut", progress=stop_at_20)
    resumed, _ = train_vae(key, trajs, prefs, task, vcfg, tmp_path / "cut")
    jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)
    assert int(resumed.step) == 40


def _without_key_biases(params):
    """Drops the attention key biases: softmax over keys is invariant to them, so their exact
    gradient is 0 and Adam turns float noise of order 1e-10 into steps of order lr, which
    differ between batched and unbatched programs (and never affect any output)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in flat
        if "['key']['bias']" not in jax.tree_util.keystr(path)
    }


def test_four_vmapped_seeds_equal_four_separate_runs(tmp_path):
    trajs, prefs, task, vcfg = _tiny()
    vcfg.steps = 20
    key = jax.random.PRNGKey(3)
    both, summary = train_vae(key, trajs, prefs, task, vcfg, tmp_path / "v", seeds=(0, 1, 2, 3))
    assert np.asarray(summary["posterior_mean_per_user"]).shape == (4, 2, 2)  # seed, user, Z
    close = partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    for i in range(4):
        alone, alone_summary = train_vae(key, trajs, prefs, task, vcfg, tmp_path / f"{i}", seeds=i)
        member = jax.tree.map(lambda x, i=i: x[i], both.params)
        jax.tree.map(close, _without_key_biases(member), _without_key_biases(alone.params))
        close(summary["posterior_mean_per_user"][i], alone_summary["posterior_mean_per_user"])
        close(summary["accuracy"][i], alone_summary["accuracy"])
    assert not np.allclose(both.params.prior_mean[0], both.params.prior_mean[1])
