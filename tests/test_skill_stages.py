"""Safe-CPL decoder and RC/SOPL reward training through the shared loop on a tiny Ball-Run
crowd: evaluation summaries, resume after a stop, and vmapped seeds equal separate runs."""

import shutil
from functools import partial

import jax
import numpy as np
import pytest
from scripted import scripted_trajectories

from scpr_jax.data.preferences import label_config, make_preferences
from scpr_jax.envs import make_task
from scpr_jax.skills import cpl, reward_models
from scpr_jax.skills.train_cpl import train_cpl
from scpr_jax.skills.train_rewards import train_reward_model
from scpr_jax.skills.train_vae import model_config, train_vae, vae_train_config

pytestmark = pytest.mark.usefixtures("fast_compile")
close = partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def crowd(tmp_path_factory, fast_compile):
    trajs = scripted_trajectories(jax.random.PRNGKey(0), "ball-run/downstream", 8, 250, "sticky")
    task = make_task("ball-run")
    cfg = label_config("small", "ball-run").unlock()
    cfg.n_sets, cfg.n_pairs, cfg.segment_len = 40, 4, 8
    prefs = make_preferences(jax.random.PRNGKey(1), trajs, task, cfg)
    vcfg = vae_train_config("small").unlock()
    vcfg.hidden, vcfg.decoder_hidden, vcfg.latent_dim = 16, (16,), 2
    vcfg.batch_size, vcfg.steps, vcfg.chunk = 8, 10, 10
    vae_dir = tmp_path_factory.mktemp("vae")
    vae_state, _ = train_vae(jax.random.PRNGKey(2), trajs, prefs, task, vcfg, vae_dir)
    return trajs, prefs, task, vae_state.params, model_config(vcfg)


def _cpl_config():
    cfg = cpl.cpl_config("small", "ball-run").unlock()
    cfg.hidden, cfg.batch_size, cfg.steps, cfg.chunk = (16,), 4, 20, 10
    return cfg


def _reward_config(kind):
    cfg = reward_models.reward_config("small", kind).unlock()
    cfg.hidden, cfg.batch_size, cfg.epochs, cfg.chunk = (16,), 16, 1, 10
    return cfg


def test_cpl_stage_resumes_and_vmaps_seeds(crowd, tmp_path):
    trajs, prefs, task, vae_params, vae_config = crowd
    args = (jax.random.PRNGKey(3), trajs, prefs, task, vae_params, vae_config, _cpl_config())
    seen = []
    full, summary = train_cpl(*args, tmp_path / "a", progress=lambda s, t, m: seen.append(s))
    assert seen == [10, 20] and int(full.step) == 20
    assert 0 <= summary["accuracy"] <= 1 and len(summary["accuracy_per_user"]) == 2
    shutil.rmtree(tmp_path / "a" / "ckpt" / "20")  # "killed" after update 10
    resumed, _ = train_cpl(*args, tmp_path / "a")
    jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)

    both, summaries = train_cpl(*args, tmp_path / "v", seeds=(0, 1, 2, 3))
    assert len(summaries["accuracy"]) == 4
    others = [train_cpl(*args, tmp_path / f"s{s}", seeds=s)[0] for s in (1, 2, 3)]
    for i, alone in enumerate((full, *others)):
        jax.tree.map(lambda a, b, i=i: close(a[i], b), both.params, alone.params)


@pytest.mark.parametrize("kind", ["rc", "sopl"])
def test_reward_stage_resumes_and_vmaps_seeds(crowd, tmp_path, kind):
    trajs, prefs, task, _, _ = crowd
    cfg = _reward_config(kind)
    args = (jax.random.PRNGKey(4), trajs, prefs, task, cfg)
    full, summary = train_reward_model(*args, tmp_path / "a")
    total = reward_models.total_updates(cfg, summary["train_pairs"])
    assert int(full.step) == summary["updates"] == total
    assert summary["train_pairs"] == 36 * 2 * 4  # 90% of 40 sets, 2 users, 4 pairs
    assert 0 <= summary["accuracy"] <= 1 and np.isfinite(summary["reward_unsafe_rows"])
    shutil.rmtree(tmp_path / "a" / "ckpt" / str(total))
    resumed, _ = train_reward_model(*args, tmp_path / "a")
    jax.tree.map(np.testing.assert_array_equal, resumed.params, full.params)

    both, summaries = train_reward_model(*args, tmp_path / "v", seeds=[0, 1, 2, 3])
    assert len(summaries["accuracy"]) == 4
    others = [train_reward_model(*args, tmp_path / f"s{s}", seeds=s)[0] for s in (1, 2, 3)]
    for i, alone in enumerate((full, *others)):
        jax.tree.map(lambda a, b, i=i: close(a[i], b), both.params, alone.params)


def test_bad_seeds_are_rejected(crowd, tmp_path):
    trajs, prefs, task, _, _ = crowd
    with pytest.raises(ValueError, match="seeds"):
        train_reward_model(
            jax.random.PRNGKey(0), trajs, prefs, task, _reward_config("rc"), tmp_path, seeds=[]
        )
