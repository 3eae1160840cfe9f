"""The errors a user can act on, each with the exit code `scpr` ends with (README: exit codes).

Every class subclasses the builtin a caller would catch anyway (ValueError for bad settings
and damaged files, FloatingPointError for non-finite values), so library users need not
import this module; the command maps them to one or two lines and a distinct exit code.
"""

from __future__ import annotations


class ScprError(Exception):
    """Base of the errors below; ``exit_code`` is what `scpr` exits with."""

    exit_code = 1


class SettingsError(ScprError, ValueError):
    """A setting is invalid, or differs from the one a run directory's stage was made with."""

    exit_code = 2


class RunDirBusy(ScprError, RuntimeError):
    """Another command holds the run directory's lock."""

    exit_code = 3


class IntegrityError(ScprError, ValueError):
    """A file of a run directory is missing, damaged, truncated or made for something else."""

    exit_code = 4


class NonFiniteError(ScprError, FloatingPointError):
    """Training or data produced NaN / inf; nothing non-finite is saved as a result."""

    exit_code = 5


EXIT_CODES = {  # exit code -> meaning (the README's table)
    0: "success",
    1: "an unexpected error (a bug: the traceback is shown)",
    2: "bad settings or command line, or settings that differ from the run directory's",
    3: "the run directory is in use by another command",
    4: "a missing, damaged or mismatched file (dataset, artifact, checkpoint, log)",
    5: "NaN or inf in training or data",
    74: "an operating-system error: disk full, permission denied, not a directory, ...",
    130: "interrupted (Ctrl-C / SIGTERM); re-run the same command to resume",
}
