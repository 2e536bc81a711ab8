"""Data loader worker set-up shared by every DataLoader in the package."""

from __future__ import annotations

import signal


def ignore_interrupts(worker_id: int) -> None:
    """worker_init_fn: Ctrl-C reaches every process of the terminal's group; the workers leave it to
    the main process (which stops them when it stops), so one interrupt prints one line, not a
    KeyboardInterrupt traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
