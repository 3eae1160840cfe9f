"""Progress output: a bar on a terminal, plain timed lines in logs, nothing for restored stages."""

import io

import pytest

from scpr_jax.errors import SettingsError
from scpr_jax.progress import Lines, progress, progress_mode


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_mode_follows_the_terminal_unless_set():
    assert progress_mode({}, io.StringIO()) == ("lines", 30.0)
    assert progress_mode({}, _Tty()) == ("bar", 30.0)
    assert progress_mode({"SCPR_PROGRESS": "lines", "SCPR_PROGRESS_EVERY": "5"}, _Tty()) == (
        "lines",
        5.0,
    )
    assert progress_mode({"SCPR_PROGRESS": "off"}, _Tty())[0] == "off"


@pytest.mark.parametrize(
    "environ, named",
    [
        ({"SCPR_PROGRESS": "tqdm"}, "'tqdm'"),
        ({"SCPR_PROGRESS_EVERY": "0"}, "'0'"),
        ({"SCPR_PROGRESS_EVERY": "soon"}, "'soon'"),
    ],  # fmt: skip
)
def test_bad_settings_name_the_value(environ, named):
    with pytest.raises(SettingsError, match=named):
        progress_mode(environ, io.StringIO())


def test_lines_every_n_seconds_with_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    lines = Lines("[x] updates", 30.0, clock=lambda: now[0], out=out)
    for t, step in [(0, 500), (10, 1000), (31, 1500), (40, 2000), (50, 3000)]:
        now[0] = float(t)
        lines.update(step, 3000, {"loss": 0.25})
    printed = out.getvalue().splitlines()
    # the first update, the first one >= 30 s later, and the last step
    assert [p.split(" (")[0].split(",")[0] for p in printed] == [
        "[x] updates: 500/3000",
        "[x] updates: 1500/3000",
        "[x] updates: 3000/3000",
    ]
    # rate from the first update (its time holds compilation): 1000 updates in 31 s
    assert "32.3 it/s" in printed[1] and "ETA 0:46" in printed[1] and "(loss=0.25)" in printed[1]
    assert "50 it/s" in printed[2] and "done in 0:50" in printed[2]


@pytest.mark.parametrize("mode", ["lines", "bar", "off"])
def test_a_restored_stage_prints_nothing(mode, monkeypatch, capsys):
    monkeypatch.setenv("SCPR_PROGRESS", mode)
    with progress("[vpl] IQL updates"):
        pass  # the final checkpoint was restored: no update left
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_lines_show_only_the_chosen_metrics(monkeypatch, capsys):
    monkeypatch.setenv("SCPR_PROGRESS", "lines")
    with progress("[down] TD3+BC updates", shown=("eval/return",)) as update:
        update(1000, 1000, {"eval/return": 12.5, "critic_loss": 3.0})
    out = capsys.readouterr().out
    assert out.startswith("[down] TD3+BC updates: 1000/1000") and "eval/return=12.5" in out
    assert "critic_loss" not in out and "\r" not in out
