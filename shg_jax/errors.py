"""The one exception type a user sees: bad input, or a state the user can change.

Every library error a command can meet (a missing checkpoint, unprepared data, a bad
detections file, an unreadable photo, a non-finite loss...) subclasses UserError, so that
each command line turns all of them the same way into one line naming the file or field and
what to do, and exit status 2 (`shg_jax.cli.guard`).
"""


class UserError(Exception):
    """Bad input or a fixable state; the message names the file or field and what to do."""
