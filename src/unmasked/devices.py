"""Turn a --device string into a torch.device, or a clear error naming what is allowed."""

from __future__ import annotations

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 autocast on a CUDA device that has it, fp16 (with a gradient scaler) on one
    without (V100, T4), fp32 on a CPU; any other value is kept."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision, or None for plain fp32."""
    return AUTOCAST_DTYPES.get(precision)
