"""Errors that are the user's to fix: the CLI prints them without a traceback and exits 2."""


class UserError(Exception):
    """A bad argument, file or setting. The message must name the thing, the value and what is allowed."""


class TrainingStopped(Exception):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""
