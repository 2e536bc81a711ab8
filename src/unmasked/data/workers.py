"""Data loader worker set-up shared by every DataLoader in the package."""

from __future__ import annotations

import re
import signal
from contextlib import contextmanager

from unmasked.errors import UserError

# torch re-raises a worker's exception in the main process as `ExcType(msg)`, where msg is
# "Caught ExcType in DataLoader worker process N.\nOriginal Traceback ...", ending with the line
# traceback.format_exception_only wrote: "unmasked.errors.UserError: <the original message>".
_WORKER_PREFIX = "Caught UserError in DataLoader worker process"
_ORIGINAL = re.compile(r"\n(?:[\w.]+\.)?UserError: (.*?)\s*\Z", re.DOTALL)


def ignore_interrupts(worker_id: int) -> None:
    """worker_init_fn: Ctrl-C reaches every process of the terminal's group; the workers leave it to
    the main process (which stops them when it stops), so one interrupt prints one line, not a
    KeyboardInterrupt traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_message(text: str) -> str:
    """The message a worker's UserError was raised with, from the text torch re-raised it with
    (the text itself when it came from this process)."""
    if not text.startswith(_WORKER_PREFIX):
        return text
    m = _ORIGINAL.search(text)
    return m.group(1) if m else text


@contextmanager
def user_errors_stay_one_line():
    """Around the iteration of a DataLoader with workers: a UserError raised in a worker (e.g.
    --strict refusing a file) reaches the user as the one line it was, not a worker traceback."""
    try:
        yield
    except UserError as e:
        if not str(e).startswith(_WORKER_PREFIX):
            raise
        raise UserError(worker_message(str(e))) from None
