"""One process per run folder: an exclusive `fcntl.flock` on `<run>/.lock`, held while a run or an
evaluation writes into the folder.

The kernel drops a flock when its holder exits, however it exits, so a lock file left by a crash
(or by SIGKILL) never blocks: only a live holder does. The file itself is never deleted (deleting
it while another process opens it would let two processes lock two different files); it holds the
holder's pid and command, for the refusal message. Within one process the lock is re-entrant
(`unmasked demo` pretrains and then evaluates the same folder).
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from unmasked.errors import UserError

LOCK_FILE = ".lock"

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# folder (absolute) -> [fd, holders] for the locks this process holds
_held: dict[str, list[int]] = {}


def _key(folder: Path) -> str:
    return os.path.abspath(folder)


def lock_holder(folder: str | Path) -> str | None:
    """What the lock file of `folder` says about its holder (pid and command), if anything."""
    try:
        return (Path(folder) / LOCK_FILE).read_text().strip() or None
    except OSError:
        return None


def in_use_by(folder: str | Path) -> str | None:
    """The holder (pid and command) when another process holds the folder's lock, else None.
    Creates nothing: for checks before a folder is cleared."""
    if fcntl is None or _key(Path(folder)) in _held:  # pragma: no cover
        return None
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return lock_holder(folder) or "pid unknown"
    finally:
        os.close(fd)
    return None


class RunLock:
    """The lock on one run folder; `release` (or garbage collection) lets go of it."""

    def __init__(self, folder: str | Path, what: str, must_write: bool = True):
        self.folder = Path(folder)
        self.what = what
        # False for evaluations: in a folder nobody can write, there is nothing to mix up, and the
        # evaluation still prints its result
        self.must_write = must_write
        self.held = False

    def acquire(self) -> RunLock:
        key = _key(self.folder)
        if key in _held:
            _held[key][1] += 1
            self.held = True
            return self
        if fcntl is None:  # pragma: no cover
            return self
        if not self.must_write and not self.folder.is_dir():
            return self  # nothing to lock; the evaluation names the missing folder itself
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            if not self.must_write:
                return self
            raise UserError(f"{self.folder}: the run folder is not writable: cannot create its lock file "
                            f"{LOCK_FILE} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{self.folder}: cannot lock {LOCK_FILE} ({e.strerror or e})") from None
            holder = lock_holder(self.folder) or "pid unknown"
            raise UserError(
                f"{self.folder} is in use by another unmasked process ({holder}); one run or evaluation "
                f"writes into a run folder at a time. Wait for it to end, or choose another folder for "
                f"this {self.what}"
            ) from None
        # who holds it, for the message another process prints
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {self.what}\n".encode())
        _held[key] = [fd, 1]
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = _key(self.folder)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # closing the last descriptor drops the flock

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


@contextmanager
def run_lock(folder: str | Path, what: str, must_write: bool = True):
    """Hold the run folder's lock for the body; refuses (UserError) while another process holds it."""
    lock = RunLock(folder, what, must_write).acquire()
    try:
        yield lock
    finally:
        lock.release()


def run_folder_of(path: str | Path) -> Path:
    """The folder an evaluation writes into: the run folder itself, or the folder of a file in it."""
    p = Path(path)
    return p if p.is_dir() else p.parent
