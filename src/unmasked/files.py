"""Files, written and read safely: the one place for generic I/O, below every other module.

Writes are atomic (temp file beside the target, fsync, rename): a crash leaves the old file or the
new one, never a partial one. A write failing inside torch.save or safetensors, which do not raise
OSError, becomes the OSError behind it: torch.save's zip writer reports a full disk as
`RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos N vs M` (the errno is lost),
safetensors as `SafetensorError: ... (os error 28)`. Reads of the small JSON files beside a run
(config.json, encoder.json, knn.json, ...) turn a torn or hand-edited file into a one-line error
naming it, never a JSONDecodeError traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path

from unmasked.errors import UserError
from unmasked.notes import warn

try:
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover - older safetensors
    SafetensorError = ()

# what a failed write raises: torch.save's full disk is a RuntimeError (inline_container)
WRITE_ERRORS = (OSError, RuntimeError) + ((SafetensorError,) if SafetensorError else ())

_TORCH_WRITER = ("inline_container", "PytorchStreamWriter", "unexpected pos")
_OS_ERROR_CODE = re.compile(r"os error (\d+)")
_PROBE_BYTES = 1 << 20


def _probe_write(tmp: Path) -> OSError | None:
    """Append to the half-written temp file: when the disk is still full (or a quota or file-size
    limit still binds), the OS names the reason that torch's writer dropped."""
    try:
        with open(tmp, "ab") as f:
            f.write(b"\0" * _PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e
    return None


def as_os_error(exc: BaseException, path: Path, tmp: Path | None = None) -> OSError | None:
    """An OSError (filename = `path`) for a write failure raised as another type, else None."""
    if isinstance(exc, SafetensorError):
        m = _OS_ERROR_CODE.search(str(exc))
        code = int(m.group(1)) if m else errno.EIO
        reason = os.strerror(code) if m else f"safetensors: {exc}"
        return OSError(code, reason, str(path))
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITER):
        probe = _probe_write(tmp) if tmp is not None else None
        if probe is not None and probe.errno is not None:
            return OSError(probe.errno, probe.strerror or os.strerror(probe.errno), str(path))
        return OSError(errno.EIO, f"torch.save failed: {exc}", str(path))
    return None


# -- atomic writes -----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _staged(path: Path, write_fn) -> str:
    """Write via `write_fn(file_path)` into a synced temp file beside `path`; returns its name. On
    failure the temp file is removed and the error names `path` (not the temp file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private (0600); give the usual mode
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return tmp
    except BaseException as e:
        as_os = as_os_error(e, path, Path(tmp))  # before the temp file goes: it may name the reason
        _remove(tmp)
        if as_os is not None:
            raise as_os from e
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):
            # a write into the temp file names no file, or the temp file: name the one being saved
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write(path: Path, write_fn) -> None:
    """Write via `write_fn(file_path)` into a temp file beside `path`, then rename over it.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    tmp = _staged(path, write_fn)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


def _write_text_file(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _text_writer(text: str):
    return lambda tmp: _write_text_file(tmp, text)  # looked up at call time (the tests' full-disk seam)


def atomic_write_texts(texts: dict[Path, str]) -> None:
    """Files that belong together (a report's .md, .html and .json): every one is written to a
    temp file first, and they are renamed only when all were written, so a full disk leaves the
    earlier set whole (not a new .md beside an old .html). A failure names the file it hit."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in texts.items():
            path = Path(path)
            temps.append((_staged(path, _text_writer(text)), path))
    except BaseException:
        for tmp, _ in temps:
            _remove(tmp)
        raise
    for tmp, path in temps:
        os.replace(tmp, path)
    for folder in {path.parent for _, path in temps}:
        _fsync_dir(folder)


# atomic_write's temp names: "." + file name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writes that never finished (the writer was SIGKILLed: no handler ran).

    Only call this while holding the folder's run lock: then no live process is writing them.
    """
    folder = Path(folder)
    try:
        stale = [p for p in folder.iterdir() if _TEMP_NAME.match(p.name) and p.is_file()]
    except OSError:
        return []
    removed, size = [], 0
    for p in stale:
        try:
            n = p.stat().st_size
            p.unlink()
        except OSError:
            continue
        removed.append(p)
        size += n
    if removed:
        warn(f"{folder}: removed {len(removed)} temp file(s) ({size / 1e6:.1f} MB) left by an "
             f"interrupted write: {', '.join(p.name for p in removed)}")
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, _text_writer(text))


# -- reading JSON side files -------------------------------------------------------------


def read_json(path: Path, fix: str = "restore it, or delete it if it is a result that can be recomputed"):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({type(e).__name__}: {str(e).splitlines()[0]}); the file is torn "
                        f"or was edited; {fix}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None


def require_keys(data, keys: tuple[str, ...], path: Path) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; is it a file written by unmasked?")
    return data


def read_json_or_none(path: Path):
    """The file's JSON, or None when it is missing or does not parse (for state that is recomputed
    when absent, e.g. a study's view of a run)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
