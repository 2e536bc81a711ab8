"""The OS error behind a failed write inside torch.save or safetensors, which do not raise OSError.

torch.save's zip writer reports a full disk as `RuntimeError: [enforce fail at inline_container.cc]
... unexpected pos N vs M` (the errno is lost); safetensors raises `SafetensorError: ... (os error
28)`. Turned into OSError, both reach the same handlers as any other failed write: one message
naming the file, the step and the OS error.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

try:
    from safetensors import SafetensorError
except ImportError:  # pragma: no cover - older safetensors
    SafetensorError = ()

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
