"""Where a committed result came from: the code's commit, the machine and the library versions.

Written beside every artifact that leaves a run folder for the repository (`study --results-dir`,
`demo --transcript`), so that each number there can be traced to the code and the hardware that
produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from unmasked import __version__

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # src/unmasked -> the checkout


def _git(*args: str) -> str | None:
    try:  # Popen: a read-only query, not one of the commands `study` starts (its tests watch subprocess.run)
        with subprocess.Popen(["git", "-C", str(PACKAGE_ROOT), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) as proc:
            out, _ = proc.communicate(timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() if proc.returncode == 0 else None


def commit() -> dict:
    """{"commit": hash or None, "dirty": whether tracked files differ from it}."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head, "dirty": bool(status)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpus": gpus, "platform": platform.platform()}


def record() -> dict:
    return {**commit(), "machine": machine(), "torch": torch.__version__, "python": sys.version.split()[0],
            "unmasked": __version__}


def one_line(rec: dict) -> str:
    """'commit 1a2b3c4 (uncommitted changes), Intel Xeon ... (2 threads), no GPU, torch 2.5.1'"""
    c = rec.get("commit")
    code = f"commit {c[:10]}" + (" (with uncommitted changes)" if rec.get("dirty") else "") if c else "no git commit"
    m = rec["machine"]
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    return (f"{code}; {m['cpu']} ({m['torch_threads']} torch threads, {m['cpu_count']} CPUs); "
            f"{gpu}; torch {rec['torch']}")
