"""The scpr command's stages on a tiny preset: artifacts, summaries, skip-on-rerun, bad input."""

import importlib
import json

import numpy as np
import pytest

from scpr_jax import cli
from scpr_jax.config import apply_overrides, pipeline_config
from scpr_jax.data import storage
from scpr_jax.runs import RunDir
from scpr_jax.stages import check_settings

TINY = [
    "--set", "collect.total_steps=4000", "--set", "collect.n_envs=8",
    "--set", "collect.warmup_steps=1000", "--set", "collect.chunk_steps=100",
    "--set", "collect.hidden=(32, 32)", "--set", "collect.batch_size=32",
    "--set", "label.n_sets=20", "--set", "label.n_pairs=4", "--set", "label.segment_len=8",
]  # fmt: skip


def test_label_stage_end_to_end_and_skip(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["label", "--workdir", str(workdir), *TINY]) == 0
    out = capsys.readouterr().out
    assert "[collect] 4000 transitions" in out and "Theorem 4.2" in out
    trajs = storage.load_trajectories(
        workdir / "collect" / "trajectories.h5", env="ball-run/downstream"
    )
    prefs, meta = storage.load_preferences(workdir / "label" / "preferences.h5", trajs=trajs)
    assert prefs.y.shape == (2, 20, 4) and meta["segment_len"] == 8
    summary = json.loads((workdir / "label" / "summary.json").read_text())
    assert summary["sets_per_user"] == [20, 20]
    assert json.loads((workdir / "config.json").read_text())["collect"]["total_steps"] == 4000
    mtime = (workdir / "collect" / "trajectories.h5").stat().st_mtime
    assert cli.main(["label", "--workdir", str(workdir), *TINY]) == 0
    out = capsys.readouterr().out
    assert "[collect] already done" in out and "[label] already done" in out
    assert (workdir / "collect" / "trajectories.h5").stat().st_mtime == mtime
    # a finished stage made with other settings is never silently reused
    assert cli.main(["label", "--workdir", str(workdir), *TINY, "--set", "label.n_pairs=5"]) == 2
    err = capsys.readouterr().err
    assert "label.n_pairs: 4 -> 5 (stage 'label' is done)" in err and "new --workdir" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "label.flip_ratio=2"], "flip_ratio=2.0"),
        (["--set", "collect.n_envs=0"], "n_envs=0"),
        (["--set", "nope.x=1"], "unknown section 'nope'"),
        (["--env", "nope"], "unknown env 'nope'"),
        (["--set", "online_methods=rc"], "online_methods=('rc',) invalid"),
        (["--set", "td3.oracle.n_envs=0"], "n_envs=0 must be a positive integer"),
        (["--set", "td3bc.safe_vpl.beta_reg=-1"], "beta_reg=-1.0 must be >= 0"),
        (["--set", "td3bc.oracle.control_interval=0"], "control_interval=0 must be a positive"),
    ],
)
def test_bad_settings_fail_at_start_up(tmp_path, capsys, args, message):
    assert cli.main(["run", "--workdir", str(tmp_path / "w"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_overrides_keep_types():
    cfg = apply_overrides(pipeline_config(), ["collect.lr=1", "collect.hidden=[8, 8]"])
    assert cfg.collect.lr == 1.0 and isinstance(cfg.collect.lr, float)
    assert cfg.collect.hidden == (8, 8)


def test_changed_settings_clash_with_finished_sweep_programs(tmp_path):
    run, old = RunDir(tmp_path / "run"), pipeline_config().to_dict()
    for name in ("sweep-vae/hidden=(64,64)", "sweep-iql/vae", "sweep-rc/base",
                 "sweep-down-oracle/base"):  # fmt: skip
        run.mark_done(name, {})
    run.stage("sweep-cpl/base")  # started, not finished: nothing to clash with

    def check(*overrides):
        check_settings(run, old, apply_overrides(pipeline_config(), list(overrides)))

    with pytest.raises(ValueError, match="new --workdir") as err:
        check("vae.kl_weight=0.5")
    message = str(err.value)
    assert message.count("\n  ") == 2, message  # the two programs standing for vpl/
    assert "vae.kl_weight: 0.001 -> 0.5 (stage 'sweep-vae/hidden=(64,64)' is done)" in message
    assert "vae.kl_weight: 0.001 -> 0.5 (stage 'sweep-iql/vae' is done)" in message
    with pytest.raises(ValueError, match=r"rc.lr: .* \(stage 'sweep-rc/base' is done\)"):
        check("rc.lr=0.5")
    with pytest.raises(ValueError, match=r"\(stage 'sweep-down-oracle/base' is done\)"):
        check("td3bc.oracle.lr=0.5")
    check("td3bc.rc.lr=0.5", "cpl.alpha=0.5", "sopl.lr=0.5")  # no finished program uses them


SKILLS_TINY = [
    "--set", "vae.steps=20", "--set", "vae.chunk=10", "--set", "vae.hidden=16",
    "--set", "vae.decoder_hidden=(16,)", "--set", "vae.batch_size=8",
    "--set", "iql.steps=20", "--set", "iql.chunk=10", "--set", "iql.hidden=(16, 16)",
    "--set", "iql.batch_size=32", "--set", "eval_episodes=2",
]  # fmt: skip


PREFS_TINY = [
    "--set", "value.steps=20", "--set", "value.chunk=10",
    "--set", "cpl_vae.steps=20", "--set", "cpl_vae.chunk=10", "--set", "cpl_vae.hidden=16",
    "--set", "cpl_vae.decoder_hidden=(16,)", "--set", "cpl_vae.batch_size=8",
    "--set", "cpl.steps=20", "--set", "cpl.chunk=10", "--set", "cpl.hidden=(16,)",
    "--set", "rc.epochs=1", "--set", "rc.chunk=10", "--set", "rc.hidden=(16,)",
    "--set", "sopl.epochs=1", "--set", "sopl.chunk=10", "--set", "sopl.hidden=(16,)",
]  # fmt: skip


def test_skills_stage_runs_every_methods_stages(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "run"
    methods = ["--set", "methods=safe-vpl,safe-cpl,rc,sopl"]
    args = ["skills", "--workdir", str(workdir), *TINY, *SKILLS_TINY, *PREFS_TINY, *methods]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "[vpl] VAE held-out preference accuracy" in out and "latent of user 1" in out
    assert "(regret labels" in out and "[cpl] held-out accuracy per user" in out
    assert "[reward-rc]" in out and "[reward-sopl]" in out
    for stage in ("vpl", "cpl"):
        summary = json.loads((workdir / stage / "summary.json").read_text())
        assert np.asarray(summary["return_latent_by_user"]).shape == (2, 2)
        assert np.asarray(summary["cost_latent_by_user"]).shape == (2, 2)
    for stage in ("label", "label-regret", "vpl", "cpl", "reward-rc", "reward-sopl"):
        assert (workdir / stage / "DONE.json").exists()
    # regret labels share the partial-return labels' segments (same RNG stream)
    trajs = storage.load_trajectories(workdir / "collect" / "trajectories.h5")
    partial, _ = storage.load_preferences(workdir / "label" / "preferences.h5", trajs=trajs)
    regret, _ = storage.load_preferences(workdir / "label-regret" / "preferences.h5", trajs=trajs)
    np.testing.assert_array_equal(partial.starts1, regret.starts1)
    assert cli.main(args) == 0  # everything done: skipped
    assert capsys.readouterr().out.count("already done") == 7
    for stage, names in (("vpl", ("skill", "vae")), ("cpl", ("skill", "vae")),
                         ("reward-rc", ("reward",)), ("reward-sopl", ("reward",))):  # fmt: skip
        for name in names:
            assert json.loads((workdir / stage / f"{name}.json").read_text())["version"] == 1
    # every method's downstream stage (the new TD3+BC-Lagrangian too) acts through the saved
    # artifacts: no earlier stage's training or evaluation code runs
    _forbid(monkeypatch, *TRAINING)
    everything = ("safe-vpl", "safe-cpl", "oracle", "task-only", "rc", "sopl", "td3bc-lag")
    run = ["run", *args[1:], *_downstream_tiny(everything, steps=200)]
    assert cli.main(run) == 0
    out = capsys.readouterr().out
    assert "[vpl] already done" in out and "| td3bc-lag |" in out
    for m in everything:
        assert len(json.loads((workdir / f"down-{m}" / "summary.json").read_text())["return"]) == 2


def _forbid(monkeypatch, *targets):
    """Makes every ``module:name`` raise if called (a training or evaluation entry point)."""
    for target in targets:
        module, name = target.split(":")

        def called(*args, _name=target, **kwargs):
            raise AssertionError(f"{_name} was called")

        monkeypatch.setattr(importlib.import_module(module), name, called)


TRAINING = (  # every training / skill-evaluation entry point of the stages before downstream
    "scpr_jax.data.collect:collect", "scpr_jax.data.value:fit_user_values",
    "scpr_jax.skills.train_vae:train_vae", "scpr_jax.skills.train_vae:evaluate",
    "scpr_jax.skills.vpl:train_skills", "scpr_jax.skills.train_cpl:train_cpl",
    "scpr_jax.skills.train_cpl:evaluate", "scpr_jax.skills.train_rewards:train_reward_model",
    "scpr_jax.skills.evaluate:latent_returns", "scpr_jax.stages.skills:vpl_skills",
    "scpr_jax.stages.skills:cpl_skills", "scpr_jax.stages.skills:reward_model",
    "scpr_jax.stages.skills:train_vae", "scpr_jax.stages.skills:train_skills",
    "scpr_jax.stages.skills:train_cpl", "scpr_jax.stages.skills:train_reward_model",
    "scpr_jax.stages.skills:latent_returns",
)  # fmt: skip


def test_methods_setting_is_checked(tmp_path, capsys):
    args = ["skills", "--workdir", str(tmp_path / "w"), "--set", "methods=safe-vpl,nope"]
    assert cli.main(args) == 2
    assert "methods=('safe-vpl', 'nope') invalid" in capsys.readouterr().err


def _downstream_tiny(methods, steps=400):
    args = ["--set", f"methods={','.join(methods)}", "--set", "downstream.seeds=(0, 1)"]
    args += ["--set", "downstream.eval_episodes=20"]
    for m in methods:
        section = f"td3bc.{m.replace('-', '_')}"
        for setting in (
            f"steps={steps}", "chunk=200", "eval_every=200", "eval_episodes=4",
            "hidden=(32, 32)", "batch_size=64",
        ):  # fmt: skip
            args += ["--set", f"{section}.{setting}"]
    return args


def _online_tiny(methods, steps=600):
    args = ["--set", f"online_methods={','.join(methods)}"]
    for m in methods:
        section = f"td3.{m.replace('-', '_')}"
        for setting in (
            f"steps={steps}", "chunk=200", "warmup_steps=200", "n_envs=2", "buffer_size=600",
            "eval_every=200", "eval_episodes=4", "hidden=(32, 32)", "batch_size=32",
        ):  # fmt: skip
            args += ["--set", f"{section}.{setting}"]
    return args


def test_main_job_end_to_end_tiny(tmp_path, capsys):
    """collect -> label -> skills/rewards -> downstream -> report on a tiny preset, then
    `scpr online` on the same run directory (reusing its skills)."""
    workdir = tmp_path / "run"
    methods = ("safe-vpl", "oracle", "task-only", "rc")
    args = ["run", "--workdir", str(workdir), *TINY, *SKILLS_TINY, *PREFS_TINY]
    assert cli.main([*args, *_downstream_tiny(methods)]) == 0
    out = capsys.readouterr().out
    assert "| Method | Rew (norm) | Cost (norm) |" in out
    table = json.loads((workdir / "report" / "table.json").read_text())
    rows = table["rows"]
    assert list(rows) == list(methods)
    for name in ("table.md", "curves.png", "scatter.png", "config.json"):
        assert (workdir / "report" / name).stat().st_size > 0
    oracle, task_only = rows["oracle"], rows["task-only"]
    assert oracle["n_seeds"] == 2 and task_only["cost"]["mean"] > 0
    assert oracle["cost"]["mean"] < task_only["cost"]["mean"], (oracle, task_only)
    summary = json.loads((workdir / "down-safe-vpl" / "summary.json").read_text())
    assert np.asarray(summary["curves"]["return"]).shape == (2, 2)  # seeds x evaluations

    online = ("safe-vpl", "oracle", "task-only")
    args = [*args, *_downstream_tiny(methods), *_online_tiny(online)]
    assert cli.main(["online", *args[1:]]) == 0
    out = capsys.readouterr().out
    assert "[vpl] already done" in out and "[online-oracle] 2 seeds" in out
    table = json.loads((workdir / "report-online" / "table.json").read_text())
    assert list(table["rows"]) == list(online)
    assert table["rows"]["task-only"]["n_seeds"] == 2
    summary = json.loads((workdir / "online-safe-vpl" / "summary.json").read_text())
    assert np.asarray(summary["curves"]["return"]).shape == (2, 3)  # seeds x evaluations
    assert cli.main(["online", *args[1:]]) == 0  # all done: skipped
    assert capsys.readouterr().out.count("already done") == 6


def test_sweep_command_splits_static_settings_and_vmaps_the_rest(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["sweep", "--workdir", str(workdir), *TINY, *_downstream_tiny(("oracle",), steps=200)]
    args += ["--set", "td3bc.oracle.control_interval=2"]  # rollouts hold u for 2 steps
    axes = ["--sweep", "bc_alpha=2.5,20", "--sweep", "downstream.oracle_cost_weight=0,10",
            "--sweep", "batch_size=32,64"]  # fmt: skip
    assert cli.main([*args, "--stage", "down-oracle", "--seeds", "0:2", *axes]) == 0
    results = json.loads((workdir / "sweep-down-oracle" / "results.json").read_text())
    members = results["members"]
    assert len(members) == 16 and len(results["table"]) == 8
    got = {(m["td3bc.oracle.batch_size"], m["q_scale"], m["omega"], m["seed"]) for m in members}
    assert got == {
        (b, a, w, s) for b in (32, 64) for a in (2.5, 20.0) for w in (0, 10) for s in (0, 1)
    }
    done = json.loads((workdir / "sweep-down-oracle" / "td3bc.oracle.batch_size=64" /
                       "DONE.json").read_text())  # fmt: skip
    assert done["summary"]["hparams"] == {  # the Oracle's cost weight is the state's omega
        "q_scale": [2.5] * 4 + [20.0] * 4,
        "omega": [0.0, 0.0, 10.0, 10.0] * 2,
    }
    assert "| td3bc.oracle.batch_size | q_scale | omega | seeds | Return | Cost |" in (
        capsys.readouterr().out
    )
    changed = [a.replace("bc_alpha=2.5,20", "bc_alpha=2.5,30") for a in axes]
    assert cli.main([*args, "--stage", "down-oracle", "--seeds", "0:2", *changed]) == 2
    assert "was run for other members" in capsys.readouterr().err  # not silently reused
    bad = [*args, "--stage", "down-oracle", "--sweep", "iql.steps=1,2"]
    assert cli.main(bad) == 2
    assert "cannot sweep ['iql.steps']" in capsys.readouterr().err
    assert cli.main([*args, "--stage", "down-oracle", "--seeds", "x"]) == 2
