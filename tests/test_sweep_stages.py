"""`scpr sweep` of the data and skill stages on a tiny preset: grids, members, errors."""

import json

import jax
import numpy as np
import pytest
from conftest import assert_tree_close
from test_stages import PREFS_TINY, SKILLS_TINY, TINY

from scpr_jax import cli, methods
from scpr_jax.config import apply_overrides, pipeline_config
from scpr_jax.envs import make, make_task
from scpr_jax.runs import RunDir
from scpr_jax.stages import run_stage
from scpr_jax.stages import sweep as lib
from scpr_jax.stages.common import load_data, stage_key
from scpr_jax.stages.sweep_plans import dynamic_settings, stage_programs
from scpr_jax.train import Members
from scpr_jax.train.sweep import sweepable

ARGS = [*TINY, *SKILLS_TINY, *PREFS_TINY]


def tiny_config():
    return apply_overrides(pipeline_config().unlock(), ARGS[1::2]).lock()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One run directory with D_tau and both label kinds, shared by every sweep here."""
    root = tmp_path_factory.mktemp("sweep") / "run"
    assert cli.main(["label", "--workdir", str(root), *ARGS]) == 0
    run_stage("label_regret", RunDir(root), tiny_config())
    return root


def outputs(params) -> dict:
    """Parameters without the attention key biases: softmax ignores them, so their gradient
    is float noise that Adam scales to steps of order lr, different in every program."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {k: x for p, x in flat if "['key']['bias']" not in (k := jax.tree_util.keystr(p))}


def sweep(workdir, stage, *axes, seeds="0:2"):
    args = ["sweep", "--workdir", str(workdir), *ARGS, "--stage", stage, "--seeds", seeds]
    assert cli.main([*args, *(a for axis in axes for a in ("--set", axis))]) == 0
    out = workdir / f"sweep-{stage}"
    assert (out / "results.md").read_text().startswith("| ")
    return json.loads((out / "results.json").read_text())


def test_vae_sweep_member_equals_a_separate_run(workdir):
    from scpr_jax.skills.train_vae import train_vae

    results = sweep(workdir, "vae", "kl_weight=0.01,1.0")
    members = results["members"]
    assert [(m["kl_weight"], m["seed"]) for m in members] == [
        (0.01, 0),
        (0.01, 1),
        (1.0, 0),
        (1.0, 1),
    ]
    assert [t["kl_weight"] for t in results["table"]] == ["0.01", "1.0"]
    assert all(t["seeds"] == 2 for t in results["table"])
    # the finished program restores its state: every member holds its own kl_weight
    cfg = tiny_config()
    trajs, prefs = load_data(RunDir(workdir), cfg, "label")
    task, key = make_task(cfg.env), stage_key(cfg, "vae")
    swept = Members((0, 1, 0, 1), {"kl_weight": (0.01, 0.01, 1.0, 1.0)})
    state, _ = train_vae(key, trajs, prefs, task, cfg.vae, workdir / "sweep-vae/base", seeds=swept)
    np.testing.assert_allclose(state.kl_weight, [0.01, 0.01, 1.0, 1.0], rtol=1e-6)
    # member 3 (seed 1, kl_weight 1) is a separate run of seed 1 with kl_weight=1
    one_cfg = apply_overrides(cfg.unlock(), ["vae.kl_weight=1.0"]).lock()
    one, summary = train_vae(key, trajs, prefs, task, one_cfg.vae, workdir / "one", seeds=1)
    member = jax.tree.map(lambda x: x[3], state)
    assert_tree_close(outputs(member.params), outputs(one.params), 1e-4)
    assert member.kl_weight == one.kl_weight and member.step == one.step
    assert summary["accuracy"] == pytest.approx(members[3]["accuracy"], abs=1e-6)
    # and the swept value matters: same seed, other kl_weight, other parameters
    enc = jax.tree.leaves(state.params.encoder)[0]
    assert not np.allclose(enc[1], enc[3])


def test_cpl_sweep_splits_widths_and_vmaps_alpha(workdir):
    results = sweep(workdir, "cpl", "alpha=0.1,0.5", "hidden=[(16,),(8,)]")
    assert len(results["members"]) == 8 and len(results["table"]) == 4
    assert {(tuple(m["cpl.hidden"]), m["alpha"]) for m in results["members"]} == {
        (h, a) for h in ((16,), (8,)) for a in (0.1, 0.5)
    }
    done = json.loads((workdir / "sweep-cpl" / "cpl.hidden=(8,)" / "DONE.json").read_text())
    assert done["summary"]["hparams"] == {"alpha": [0.1, 0.1, 0.5, 0.5]}
    assert all(0 <= m["accuracy"] <= 1 for m in results["members"])
    assert (workdir / "sweep-cpl" / "vae" / "ckpt").is_dir()  # the frozen VAE (cpl not done)


def test_iql_sweep_reports_final_losses_per_member(workdir):
    results = sweep(workdir, "iql", "expectile=0.7,0.9", seeds="3")
    assert [(m["seed"], m["expectile"]) for m in results["members"]] == [(3, 0.7), (3, 0.9)]
    for m in results["members"]:
        assert np.isfinite([m["q_loss"], m["v_loss"], m["policy_loss"]]).all()
    assert results["members"][0]["v_loss"] != results["members"][1]["v_loss"]
    assert (workdir / "sweep-iql" / "vae" / "DONE.json").exists()  # its frozen VAE: a program


@pytest.mark.parametrize("kind", ["rc", "sopl"])
def test_reward_sweep_is_one_program(workdir, kind):
    results = sweep(workdir, kind, "lr=1e-4,1e-3", "l2_weight=0.0,0.1", seeds="0")
    assert len(results["members"]) == 4 and len(results["table"]) == 4
    assert [p.name for p in (workdir / f"sweep-{kind}").iterdir() if p.is_dir()] == ["base"]
    assert all(0 <= m["accuracy"] <= 1 for m in results["members"])


def test_collect_sweep_vmaps_the_cost_penalty(workdir):
    results = sweep(workdir, "collect", "cost_penalty=0,10")
    assert [(m["cost_penalty"], m["seed"]) for m in results["members"]] == [
        (0.0, 0), (0.0, 1), (10.0, 0), (10.0, 1)
    ]  # fmt: skip
    for m in results["members"]:
        assert 0 <= m["unsafe_fraction"] <= 1 and np.isfinite(m["episode_return_first_half"])
    assert "| cost_penalty | seeds | Unsafe_fraction |" in (
        (workdir / "sweep-collect" / "results.md").read_text()
    )


DYNAMIC = {  # what each stage's state makes sweepable, as documented in the README
    "collect": {"lr", "gamma", "tau", "cost_penalty", "resample_prob"},
    "vae": {"lr", "kl_weight"},
    "iql": {"lr", "gamma", "expectile", "temperature", "max_weight", "tau"},
    "cpl": {"alpha", "lam", "lr"},
    "rc": {"lr", "l2_weight"},
    "sopl": {"lr", "l2_weight"},
}


@pytest.mark.parametrize("stage", list(DYNAMIC))
def test_dynamic_settings_are_the_leaves_they_initialise(workdir, stage):
    """A setting is vmapped only if the state leaf of its name starts at its config value."""
    cfg = tiny_config()
    init, _ = stage_programs(RunDir(workdir), cfg, stage)
    names = dynamic_settings(init, cfg[stage])
    assert set(names) == DYNAMIC[stage]
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state = jax.jit(jax.vmap(init(cfg[stage])))(keys)
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        name = str(getattr(path[-1], "name", getattr(path[-1], "key", "")))
        if name in names and np.shape(leaf) == (2,):
            np.testing.assert_allclose(leaf, cfg[stage][name], rtol=1e-6, err_msg=name)


def test_downstream_hand_lists_name_real_leaves():
    from scpr_jax.agents.td3 import td3_init
    from scpr_jax.downstream.online import online_init
    from scpr_jax.skill import identity_skill

    cfg, keys = pipeline_config(), jax.random.split(jax.random.PRNGKey(0), 2)
    env = make("ball-run/downstream")
    skill = identity_skill(env.task.obs_size, env.action_size)

    def offline(k):
        return td3_init(k, env.obs_size, env.action_size, env.action_size, cfg.td3bc.oracle, 1.0)

    leaves = sweepable(jax.eval_shape(jax.vmap(offline), keys), 2)
    down, online_map = methods.TD3BC.leaves, methods.base.TD3_LEAVES  # the learners' lists
    assert set(down.values()) | {"omega"} <= set(leaves)  # + reward weight
    assert set(down) <= set(cfg.td3bc.oracle)
    online = jax.vmap(lambda k: online_init(k, env, skill, cfg.td3.oracle))
    online_leaves = set(sweepable(jax.eval_shape(online, keys), 2))
    assert set(online_map.values()) | {"cost_weight"} <= online_leaves
    assert set(online_map) <= set(cfg.td3.oracle)
    omega = {m.name: m.omega for m in methods.REGISTRY.values() if m.omega}
    assert set(omega) == {"oracle", "rc", "sopl"}
    for method, key in omega.items():  # the settings omega stands for exist
        section, name = key.split(".")
        assert name in cfg[section], (method, key)


def test_set_splits_overrides_from_axes():
    cfg = pipeline_config()
    items = ["collect.hidden=(32, 32)", "hidden=[(16,),(8,)]", "methods=oracle", "kl_weight=0.1",
             "eval_episodes=2", "kl_weight=0.01,0.1", "lr=[1e-3]"]  # fmt: skip
    overrides, axes = lib.split_sets(items, "vae", cfg)
    assert overrides == ["collect.hidden=(32, 32)", "methods=oracle", "vae.kl_weight=0.1",
                         "eval_episodes=2"]  # fmt: skip
    assert axes == ["vae.hidden=[(16,),(8,)]", "vae.kl_weight=0.01,0.1", "vae.lr=[1e-3]"]
    assert lib.parse_axes(axes, "vae", cfg)["vae.hidden"] == [(16,), (8,)]


@pytest.mark.parametrize(
    "stage, axis, message",
    [
        ("nope", "lr=1,2", "unknown sweep stage 'nope'; valid: collect, vae, iql, cpl, rc, sopl, "
         "down-safe-vpl"),
        ("vae", "cpl.alpha=0.1,0.2", "it belongs to stage 'cpl' (sweep it with --stage cpl)"),
        ("vae", "alpha=0.1,0.2", "unknown setting 'vae.alpha'; 'alpha' is a setting of stage(s) "
         "cpl"),
        ("iql", "label.n_pairs=4,5", "it is an upstream setting"),
        ("down-oracle", "iql.steps=1,2", "cannot sweep ['iql.steps'] in a 'down-oracle' sweep"),
        ("rc", "downstream.oracle_cost_weight=0,1", "varies only rc.*"),
    ],
)  # fmt: skip
def test_bad_sweeps_fail_at_start_up(tmp_path, capsys, stage, axis, message):
    args = ["sweep", "--workdir", str(tmp_path / "w"), "--stage", stage, "--set", axis]
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
