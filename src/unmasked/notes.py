"""Notes and warnings for the person running a command: one clean line on stderr each.

Python's `warnings` print the source file, the line number and the source line under the
message, which reads as a bug report; they stay for programmers (deprecations, misuse of the
library). What a user should read goes through these two functions instead.
"""

from __future__ import annotations

import sys


def note(message: str) -> None:
    """Something the tool chose for the user (a recipe, a fallback): `unmasked: note: ...`."""
    print(f"unmasked: note: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something the user may want to act on (a skipped file, a value ignored): `unmasked: warning: ...`."""
    print(f"unmasked: warning: {message}", file=sys.stderr, flush=True)


def tolerate_any_encoding() -> None:
    """An ASCII-only stdout (PYTHONIOENCODING=ascii, a C locale) must not crash a summary that names
    a non-ASCII path: characters it cannot encode are written as backslash escapes instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent on replaced streams (StringIO)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
