"""The exceptions a user sees, and the exit status each one means.

Every library error a command can meet subclasses UserError, so that `shg_jax.cli.command`,
the one wrapper of every command line, turns all of them the same way into one line
(`error: ...`, naming the flag, field or file and what to do) and an exit status:

    2   bad input: a flag, a config field, a file, prepared data, a checkpoint to open
    1   a run that cannot go on: a non-finite loss, a busy workdir, a refused resume, a
        checkpoint that cannot be written
"""


class UserError(Exception):
    """Bad input or a fixable state; the message names the file or field and what to do."""

    exit_status = 2


class RunStopped(UserError):
    """A run that started and cannot go on; the message says why and what is kept."""

    exit_status = 1
