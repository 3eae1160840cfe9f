"""Reliability of a run directory: settings fingerprints, one writer, checked input, short
errors with distinct exit codes (README: guarantees). Fault injection: tests/test_faults.py."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scpr_jax import artifacts, cli, runs
from scpr_jax.config import apply_overrides, pipeline_config, validate
from scpr_jax.errors import EXIT_CODES, RunDirBusy, SettingsError
from scpr_jax.runs import RunDir
from scpr_jax.stages import fingerprint as fp


def _cfg(*overrides):
    return apply_overrides(pipeline_config(), list(overrides))


def test_a_stage_started_with_other_settings_is_refused_naming_them(tmp_path):
    run = RunDir(tmp_path)
    fp.claim(run, "down-oracle", _cfg("td3bc.oracle.lr=1e-3"))  # started, then killed
    (run.stage("down-oracle") / "ckpt").mkdir()
    fp.claim(run, "down-oracle", _cfg("td3bc.oracle.lr=1e-3"))  # same settings: resumes
    with pytest.raises(SettingsError, match=r"td3bc.oracle.lr: 0.001 -> 0.0003"):
        fp.claim(run, "down-oracle", _cfg())
    with pytest.raises(SettingsError, match=r"down-oracle was started with other settings"):
        fp.check_run(run, _cfg())
    fp.check_run(run, _cfg("td3bc.oracle.lr=1e-3", "td3bc.rc.lr=1"))  # another method's: fine
    record = json.loads((tmp_path / "down-oracle" / fp.FINGERPRINT).read_text())
    assert record["settings"]["td3bc.oracle.lr"] == 0.001 and "rc.weight" not in record["settings"]
    assert set(record["upstream"]) == {"collect"} and len(record["sha256"]) == 64


def test_reward_term_settings_belong_to_the_downstream_stage_only():
    cfg = _cfg("sopl.combine=standardised", "sopl.weight=1.0")
    reward, down = fp.own_settings(cfg, "reward-sopl"), fp.own_settings(cfg, "down-sopl")
    assert "sopl.epochs" in reward and not {"sopl.combine", "sopl.weight"} & set(reward)
    assert down["sopl.combine"] == "standardised" and down["sopl.weight"] == 1.0
    assert "sopl.combine" not in fp.own_settings(cfg, "down-rc")
    with pytest.raises(SettingsError, match=r"sopl.combine='scaled' invalid; must be one of"):
        validate(_cfg("sopl.combine=scaled"))


def test_a_redone_upstream_stage_invalidates_the_stages_built_on_it(tmp_path):
    run = RunDir(tmp_path)
    for stage in ("collect", "label", "vpl", "down-safe-vpl"):
        fp.claim(run, stage, _cfg())
        (run.stage(stage) / "train.csv").write_text("step\n")  # each has started
    (tmp_path / "label" / fp.FINGERPRINT).unlink()  # label/ deleted and redone ...
    fp.claim(run, "label", _cfg("label.n_pairs=5"))  # ... with other labels
    for stage in ("vpl", "down-safe-vpl"):
        with pytest.raises(SettingsError, match=r"label.n_pairs: 16 -> 5 \(via upstream stage"):
            fp.claim(run, stage, _cfg("label.n_pairs=5"))
    with pytest.raises(SettingsError, match="vpl was started"):
        fp.check_run(run, _cfg("label.n_pairs=5"))
    # what a stage reads follows the methods registry: Safe-CPL reads the regret labels
    assert fp.consumes(_cfg(), "down-safe-cpl") == ("collect", "label-regret", "cpl")
    assert fp.consumes(_cfg("label.kind=regret"), "cpl") == ("label",)
    assert fp.consumes(_cfg(), "sweep-iql/hidden=(8,8)") == ("label",)


def test_a_redone_upstream_with_other_outputs_is_refused_even_with_the_same_settings(tmp_path):
    run, cfg = RunDir(tmp_path), _cfg()
    vpl = run.stage("vpl")  # a finished skill stage: its artifact's checksum is its content

    def finish(sha):
        (vpl / "skill.json").write_text(json.dumps({"format": artifacts.FORMAT, "sha256": sha}))
        run.mark_done("vpl", {"summary": {}})

    finish("aaa")
    fp.claim(run, "down-safe-vpl", cfg)
    (run.stage("down-safe-vpl") / "train.csv").write_text("step\n")  # it has started
    finish("aaa")  # redone with the same outputs (same host, same settings): fine
    fp.claim(run, "down-safe-vpl", cfg)
    finish("bbb")  # redone on another host: other outputs
    with pytest.raises(SettingsError, match="outputs of upstream stage 'vpl' changed"):
        fp.claim(run, "down-safe-vpl", cfg)
    with pytest.raises(SettingsError, match="outputs of upstream stage 'vpl' changed"):
        fp.check_run(run, cfg)


def test_a_stage_that_never_produced_anything_takes_the_new_settings(tmp_path):
    run = RunDir(tmp_path)
    fp.claim(run, "down-rc", _cfg("td3bc.rc.lr=1e-3"))  # claimed, stopped before any work
    fp.check_run(run, _cfg())
    fp.claim(run, "down-rc", _cfg())
    assert fp.record_of(run, "down-rc")["settings"]["td3bc.rc.lr"] == 0.0003
    (run.stage("down-rc") / "ckpt").mkdir()
    with pytest.raises(SettingsError, match="td3bc.rc.lr: 0.0003 -> 0.001"):
        fp.claim(run, "down-rc", _cfg("td3bc.rc.lr=1e-3"))
    legacy = run.stage("down-oracle")  # an older scpr-jax's half-finished stage
    (legacy / "ckpt").mkdir()
    with pytest.raises(SettingsError, match="older scpr-jax, without a record"):
        fp.claim(run, "down-oracle", _cfg())


def test_a_sweep_program_resumed_for_other_members_is_refused(tmp_path):
    run, cfg = RunDir(tmp_path), _cfg()
    members = {"seeds": [0, 0], "hparams": {"q_scale": [2.5, 20.0]}}
    fp.claim(run, "sweep-down-oracle/base", cfg, {"members": members})
    (run.stage("sweep-down-oracle/base") / "ckpt").mkdir()
    other = {"seeds": [0, 0], "hparams": {"q_scale": [2.5, 30.0]}}
    with pytest.raises(SettingsError, match=r"members: .*20.0.* -> .*30.0"):
        fp.claim(run, "sweep-down-oracle/base", cfg, {"members": other})


def test_leftover_temp_files_are_removed_when_a_stage_starts(tmp_path):
    run = RunDir(tmp_path)
    stage = run.stage("collect")
    for name in (".trajectories.h5.abc.tmp", ".tmp-xyz.h5"):
        (stage / name).write_bytes(b"half")
    (stage / "keep.json").write_text("{}")
    fp.claim(run, "collect", _cfg())
    assert sorted(p.name for p in stage.iterdir()) == [fp.FINGERPRINT, "keep.json"]


def test_a_second_command_on_one_run_directory_exits_naming_the_holder(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from scpr_jax.runs import RunDir
            RunDir({str(tmp_path)!r}).lock()
            print("locked", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            RunDir(tmp_path).lock()
        assert cli.main(["run", "--workdir", str(tmp_path), "--set", "methods=oracle"]) == 3
        err = capsys.readouterr().err
        assert f"in use by another scpr command (pid {holder.pid})" in err
        assert "Traceback" not in err and not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    RunDir(tmp_path).lock()  # free again once the holder is gone


@pytest.mark.parametrize(
    "setting, message",
    [
        ("seed=abc", "seed='abc': seed must be an integer"),
        ("seed=1.5", "seed=1.5: seed must be an integer"),
        ("seed=True", "seed=True: seed must be an integer"),
        ("collect.lr=abc", "collect.lr='abc': collect.lr must be a number"),
        ("label.segment_len=300", "label.segment_len=300 exceeds the episode length 250"),
        ("td3bc.safe-vpl.beta_reg=1", "unknown section 'safe-vpl'; did you mean 'safe_vpl'"),
        ("collect.totl_steps=3", "unknown setting 'totl_steps'; did you mean 'total_steps'"),
        ("rc.weight=1.5", "rc.weight=1.5"),
        ("td3bc.safe_vpl.beta_reg=-1", "td3bc.safe_vpl.beta_reg=-1.0 must be >= 0"),
        ("label.n_users=9", None),  # valid on Ball-Run (speed goals spaced between the two)
        ("td3bc.oracle.batch_size=999999", "td3bc.oracle.batch_size=999999 exceeds D_tau's"),
        ("seed.x.y=1", "seed is a setting, not a section"),
        ("seed=1e300", "must be an integer in [0, 2**31)"),
        ("label.n_sets=2", None),  # one set held out, one trained on
    ],
)
def test_settings_are_checked_before_any_work_naming_them(tmp_path, capsys, setting, message):
    if message is None:
        validate(_cfg(setting))
        return
    assert cli.main(["run", "--workdir", str(tmp_path / "w"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "w").exists()  # nothing written, not even config.json


def test_cross_task_checks_and_integral_floats():
    assert _cfg("collect.total_steps=1e3").collect.total_steps == 1000
    cfg = pipeline_config("ball-reach")
    with pytest.raises(SettingsError, match="label.n_users=5: .* has only 4 distinct user goals"):
        validate(apply_overrides(cfg, ["label.n_users=5"]))


def test_os_errors_end_in_one_line_with_their_exit_code(tmp_path, capsys, monkeypatch):
    target = tmp_path / "file"
    target.write_text("not a directory")
    assert cli.main(["run", "--workdir", str(target)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runs, "atomic_write_bytes", full)
    assert cli.main(["run", "--workdir", str(tmp_path / "w"), "--set", "methods=oracle"]) == 74
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free some space" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(OSError):  # --debug shows the traceback
        cli.main(["--debug", "run", "--workdir", str(tmp_path / "w"), "--set", "methods=oracle"])


def test_the_readme_documents_every_exit_code():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for code in EXIT_CODES:
        assert f"\n| {code} | " in readme, code


KEYS = sorted(fp.flatten(pipeline_config().to_dict()))
VALUES = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=12),
    st.sampled_from(["True", "None", "()", "(1, 2)", "[8, 8]", "'x'", "1e3", "rc,oracle", "{}"]),
)  # fmt: skip
MUTATED_KEYS = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k.replace("_", "-")),
    st.sampled_from(KEYS).map(lambda k: k[:-1]),
    st.text(alphabet="abc._-=", max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=MUTATED_KEYS, value=VALUES)
def test_fuzzed_set_values_give_a_settings_error_or_a_valid_config(key, value):
    """Whatever ``--set key=value`` says, the parser and the checks answer with a
    SettingsError (a clear message) or a config that validates: never another exception."""
    try:
        cfg = apply_overrides(pipeline_config(), [f"{key}={value}"])
        validate(cfg)
    except SettingsError as err:
        assert str(err)
