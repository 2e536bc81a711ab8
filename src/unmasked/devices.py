"""Turn a --device string into a torch.device, or a clear error naming what is allowed; resolve
--precision for a device (`choose_precision`: the one place where 'auto' is decided)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unmasked.errors import UserError

ALLOWED = "auto, cpu, cuda or cuda:N"


def resolve_device(arg: str = "auto", local_rank: int | None = None) -> torch.device:
    """`auto` picks CUDA when present. A bare `cuda` gets an index (torchrun's LOCAL_RANK, else the
    current device), because torch.cuda.set_device refuses a device without one."""
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(arg)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {arg!r}: not a device; expected {ALLOWED}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {arg!r}: unsupported device type {dev.type!r}; expected {ALLOWED}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg}: CUDA is not available on this machine; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        elif local_rank is not None and dev.index != local_rank:
            raise UserError(f"--device {arg}: under torchrun each process uses the GPU of its LOCAL_RANK "
                            f"({local_rank} here); pass --device cuda or auto")
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                            f"expected an index below that")
    return dev


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DESCRIPTIONS = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a gradient scaler"}

# A CPU runs bf16 matrix products fast only with AVX-512 BF16 or AMX; elsewhere oneDNN emulates them
# (measured on a 2-thread AVX2 EPYC: about 50x slower than fp32). With the instructions, a timed
# product confirms it before auto picks bf16 (the threshold leaves out a product barely faster).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
FAST_BF16_RATIO = 1.5
PROBE_FILE = "cpu-bf16-probe.json"
CPUINFO = Path("/proc/cpuinfo")  # Linux


@dataclass(frozen=True)
class Precision:
    """A resolved precision ('fp32', 'bf16' or 'fp16') and why it was chosen."""

    name: str
    reason: str

    def line(self) -> str:
        return f"precision {DESCRIPTIONS[self.name]} ({self.reason})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a new run trains in: `choose_precision`'s name."""
    return choose_precision(precision, device).name


def choose_precision(precision: str, device: torch.device, *, recorded: bool = False,
                     saved_auto: bool = False) -> Precision:
    """The one place where --precision is resolved. 'auto': on CUDA, bf16 autocast where the GPU has
    it, fp16 with a gradient scaler on one without (V100, T4); on a CPU, bf16 autocast where its bf16
    matrix products are fast (`cpu_bf16`), fp32 elsewhere. Any other value is kept.
    `recorded`: the value comes from a resumed run's config, not from the command line.
    `saved_auto`: resuming a run whose config still says 'auto' (saved before runs recorded the
    resolved precision), which trained as 'auto' then meant, fp32 on a CPU: it resumes so."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return Precision(precision, "recorded in the run" if recorded else "given by --precision")
    if torch.device(device).type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "auto: the GPU has bf16")
        return Precision("fp16", "auto: the GPU has no bf16")
    if saved_auto:
        return Precision("fp32", "auto, as this run trained: it was saved before runs recorded their "
                                 "precision, when auto meant fp32 on a CPU; --precision auto chooses again")
    fast, why = cpu_bf16()
    return Precision("bf16" if fast else "fp32", f"auto: {why}")


def cpu_bf16() -> tuple[bool, str]:
    """(whether bf16 matrix products are fast on this CPU, why): the instructions torch reports
    (`cpu_bf16_flags`), confirmed by a timed product (`bf16_speedup`, cached per machine)."""
    flags = cpu_bf16_flags()
    if not flags:
        return False, "this CPU has neither AVX-512 BF16 nor AMX, so bf16 would be emulated"
    ratio = cached_bf16_speedup()
    has = " and ".join(f.replace("_", "-").upper() for f in flags)
    if ratio >= FAST_BF16_RATIO:
        return True, f"this CPU has {has}; a bf16 matrix product ran {ratio:.1f}x the fp32 one"
    return False, (f"this CPU has {has}, but a bf16 matrix product ran only {ratio:.2f}x the fp32 one "
                   f"(bf16 needs {FAST_BF16_RATIO}x)")


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 matrix-product instructions (amx_bf16, avx512_bf16) as torch's cpuinfo sees
    them; /proc/cpuinfo's flags where torch has no torch.cpu.get_capabilities (older torch)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        try:
            found = capabilities()
            return [f for f in CPU_BF16_FLAGS if found.get(f)]
        except Exception:  # noqa: BLE001 - an unreadable capability table: read the kernel's flags
            pass
    try:
        text = CPUINFO.read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in CPU_BF16_FLAGS if f in flags]


def cpu_model() -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_cache_file() -> Path:
    """In the per-user cache folder the raw-pixel results use ($UNMASKED_CACHE, else
    $XDG_CACHE_HOME/unmasked, else ~/.cache/unmasked)."""
    root = os.environ.get("UNMASKED_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unmasked"
    return base / PROBE_FILE


def cached_bf16_speedup() -> float:
    """`bf16_speedup`, measured once per CPU model, torch version and thread count and kept in
    `probe_cache_file()` (a cache: an unreadable or unwritable file only means measuring again)."""
    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = probe_cache_file()
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    ratio = cache.get(key)
    if isinstance(ratio, (int, float)) and ratio > 0:
        return float(ratio)
    ratio = bf16_speedup()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**cache, key: round(ratio, 3)}, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass
    return ratio


def bf16_speedup(n: int = 1024, seconds: float = 0.2) -> float:
    """How many times faster a bf16 n x n matrix product runs than an fp32 one on this CPU's threads:
    the ratio of median times, the two interleaved (at least 3 pairs, then pairs for `seconds`).
    Its own random generator: the probe leaves the global RNG as it was."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    pairs = ((a, b), (a.bfloat16(), b.bfloat16()))

    def timed(x, y) -> float:
        t0 = time.perf_counter()
        torch.mm(x, y)
        return time.perf_counter() - t0

    for x, y in pairs:  # warm-up: the first call picks and prepares the kernel
        timed(x, y)
    times: tuple[list[float], list[float]] = ([], [])
    end = time.perf_counter() + seconds
    while len(times[0]) < 3 or (time.perf_counter() < end and len(times[0]) < 100):
        for k, (x, y) in enumerate(pairs):
            times[k].append(timed(x, y))
    return statistics.median(times[0]) / max(statistics.median(times[1]), 1e-12)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision, or None for plain fp32."""
    return AUTOCAST_DTYPES.get(precision)
