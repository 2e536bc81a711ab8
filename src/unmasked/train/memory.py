"""Memory preflight: will a training step fit on the device, and if not, what would make it fit.

Before the first step the objective's forward pass runs on a probe micro-batch of 2 blank images
(and one of 4 under autocast) while a saved-tensor hook records every tensor autograd keeps for
the backward pass. Those are the activations, which grow linearly in the micro-batch: the probes
give the slope (bytes per image) and the intercept (batch-independent copies such as autocast's
bf16 weights). Gradients and AdamW's two moments are added from the parameter count (allocated at
the first step), and the total is compared with what the device has free: MemAvailable (and a
cgroup limit) for the host, torch.cuda.mem_get_info on a GPU. The probes change no weights,
statistics or random state, so a run with the preflight trains exactly as one without it.

The estimate is checked against a measured step in tests/train/test_memory.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from unmasked.errors import UserError
from unmasked.notes import note
from unmasked.rng import BatchRandom

# Activations at the peak (the start of the backward pass) plus the gradients of the first layers
# it produces, and allocator slack: measured peak / saved tensors was 1.0-1.3 on CPU (test_memory).
ACTIVATION_FACTOR = 1.4
# Gradients (1x), AdamW's exp_avg and exp_avg_sq (2x), and the foreach/fused update's temporaries
# (about 1x) of the trained parameters.
OPTIMIZER_FACTOR = 4
# Use at most this share of what the device reports free (the OS and other processes move too).
HEADROOM = 0.9
# What the first step touches besides tensors: on a host, the backward pass's code pages and the
# allocator's arenas (measured: 10-40 MB); on a GPU, cuBLAS/cuDNN workspaces.
OVERHEAD = {"cpu": 64e6, "cuda": 256e6}
PROBE_SIZES = (2, 4)  # BatchNorm in training mode needs at least 2 samples


@dataclass
class StepMemory:
    """Estimated memory one optimiser step adds to what is already allocated, in bytes."""

    fixed: float  # gradients + optimiser state + batch-independent copies
    per_image: float  # kept activations per image of this process's micro-batch
    processes: int = 1  # processes sharing the memory (CPU processes on one host)
    overhead: float = 0.0  # besides tensors (OVERHEAD)

    def need(self, local_micro: int) -> float:
        return self.processes * (self.fixed + self.overhead + ACTIVATION_FACTOR * self.per_image * local_micro)


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


# -- what the device has -----------------------------------------------------------------------
def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# The filesystem root the cgroup files are read under (tests point it at a fake tree).
CGROUP_ROOT = Path("/")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as 2^63 - 1 rounded down to a page


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cgroup_mounts(root: Path) -> dict[str, tuple[Path, str]]:
    """'v2' and/or 'memory' (v1) -> (mount point, the cgroup path mounted there), from mountinfo."""
    mounts: dict[str, tuple[Path, str]] = {}
    for line in (_read(root / "proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2].split(",")
        point = root / fields[4].lstrip("/")
        if fstype == "cgroup2":
            mounts.setdefault("v2", (point, fields[3]))
        elif fstype == "cgroup" and "memory" in options:
            mounts.setdefault("memory", (point, fields[3]))
    return mounts


def _cgroup_dirs(root: Path) -> list[tuple[str, Path, Path]]:
    """(version, this process's cgroup folder, its mount point) for the memory controller."""
    mounts = _cgroup_mounts(root)
    found = []
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        key = "v2" if controllers == "" else ("memory" if "memory" in controllers.split(",") else None)
        if key is None:
            continue
        point, mounted = mounts.get(key, (root / ("sys/fs/cgroup" if key == "v2" else "sys/fs/cgroup/memory"), "/"))
        rel = os.path.relpath(path, mounted) if path.startswith(mounted) else path.lstrip("/")
        folder = (point / rel).resolve() if rel not in (".", "") else point
        found.append(("v2" if key == "v2" else "v1", folder, point))
    return found


def _inactive_file(folder: Path, names: tuple[str, ...]) -> int:
    """Page cache the kernel reclaims before it kills: not counted as used."""
    for line in (_read(folder / "memory.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key in names:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _room(folder: Path, version: str) -> int | None:
    """limit - usage in one cgroup folder, or None where it sets no limit."""
    names = (("memory.max", "memory.current", ("inactive_file",)) if version == "v2" else
             ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "inactive_file")))
    limit = (_read(folder / names[0]) or "").strip()
    if not limit or limit == "max":
        return None
    try:
        limit_b = int(limit)
        used = int((_read(folder / names[1]) or "0").strip() or 0)
    except ValueError:
        return None
    if limit_b >= UNLIMITED:
        return None
    return limit_b - max(0, used - _inactive_file(folder, names[2]))


def _cgroup_available(root: Path | None = None) -> int | None:
    """Room left under the tightest cgroup memory limit that applies (containers, batch schedulers):
    cgroup v2 (memory.max) and v1 (memory.limit_in_bytes), on this process's cgroup and on every
    cgroup above it up to the mount point (a limit on a parent applies to its children)."""
    root = CGROUP_ROOT if root is None else root
    rooms = []
    for version, folder, point in _cgroup_dirs(root):
        level = folder
        while True:
            room = _room(level, version)
            if room is not None:
                rooms.append(room)
            if level == point or point not in level.parents:
                break
            level = level.parent
        if version == "v1":  # the kernel's own sum of the limits above (when use_hierarchy is on)
            for line in (_read(folder / "memory.stat") or "").splitlines():
                if line.startswith("hierarchical_memory_limit "):
                    try:
                        limit = int(line.split()[1])
                    except (ValueError, IndexError):
                        break
                    used = int((_read(folder / "memory.usage_in_bytes") or "0").strip() or 0)
                    if limit < UNLIMITED:
                        rooms.append(limit - max(0, used - _inactive_file(folder, ("total_inactive_file",))))
    return min(rooms) if rooms else None


def host_available_bytes() -> int | None:
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(values) if values else None


def available_bytes(device: torch.device) -> int | None:
    """Free memory for this process's step: host RAM on a CPU, the GPU's free memory on CUDA."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the probes' blocks are free again
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        return host_available_bytes()
    return None


# -- measuring ---------------------------------------------------------------------------------
def _saved_bytes(objective, augments, images: torch.Tensor, rng: BatchRandom, autocast_dtype) -> int:
    """Bytes of the tensors autograd saves in one forward pass (each storage once, parameters not)."""
    params = {t.untyped_storage().data_ptr() for t in list(objective.parameters()) + list(objective.buffers())}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        views = [aug(images, rng) for aug in augments]
        with torch.autocast(images.device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss, _ = objective(views, rng)
    del loss, views
    return sum(saved.values())


def measure(objective, augments, *, channels: int, base_size: int, device: torch.device, autocast_dtype,
            seed: int = 0, rank: int = 0, world: int = 1, grad_checkpoint: bool | None = None) -> StepMemory:
    """Probe the forward pass at PROBE_SIZES images per process; weights, BatchNorm statistics and
    random state are left as they were. grad_checkpoint: measure with checkpointing on/off."""
    buffers = {k: v.clone() for k, v in objective.named_buffers()}
    encoder = objective.encoder
    was_ckpt = getattr(encoder, "grad_checkpointing", False)
    if grad_checkpoint is not None:
        encoder.set_grad_checkpointing(grad_checkpoint)
    was_training = objective.training
    objective.train()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            # in fp32 nothing saved is independent of the batch, so one probe gives the slope;
            # under autocast the bf16 weight copies are, and a second probe separates them
            probes = PROBE_SIZES if autocast_dtype is not None else PROBE_SIZES[:1]
            sizes = []
            for n in probes:
                images = torch.zeros(n, channels, base_size, base_size, dtype=torch.uint8, device=device)
                rng = BatchRandom(seed, 0, 0, n * world, device, rank, world)
                sizes.append(_saved_bytes(objective, augments, images, rng, autocast_dtype))
    finally:
        with torch.no_grad():
            for k, v in objective.named_buffers():
                v.copy_(buffers[k])
        encoder.set_grad_checkpointing(was_ckpt)
        objective.train(was_training)
    if len(sizes) == 1:
        per_image, intercept = sizes[0] / probes[0], 0.0
    else:
        (n0, n1), (s0, s1) = probes, sizes
        per_image = max(0.0, (s1 - s0) / (n1 - n0))
        intercept = max(0.0, s0 - per_image * n0)
    trained = sum(p.numel() * p.element_size() for p in objective.student.parameters() if p.requires_grad)
    return StepMemory(fixed=OPTIMIZER_FACTOR * trained + intercept, per_image=per_image,
                      overhead=OVERHEAD.get(device.type, 0.0))


def min_over_processes(value: int) -> int:
    """The smallest value over all processes, so every process makes the same decision."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    backend = dist.get_backend()
    t = torch.tensor([value], dtype=torch.float64,
                     device=torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def local_processes(device: torch.device) -> int:
    """Processes that share this device's memory: every local process on a CPU, one per GPU."""
    if device.type != "cpu":
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


# -- deciding ----------------------------------------------------------------------------------
def fitting_accum_steps(mem: StepMemory, budget: float, batch: int, world: int, min_micro: int = 1,
                        floor_per_process: bool = False) -> int | None:
    """The fewest micro-batches per step (dividing the batch evenly over processes) that fit, each
    micro-batch at least `min_micro` images (on every process, if `floor_per_process`)."""
    for n in range(1, batch + 1):
        if batch % n or (batch // n) % world:
            continue
        if batch // n // (world if floor_per_process else 1) < min_micro:
            break
        if mem.need(batch // n // world) <= budget:
            return n
    return None


def fitting_batch_size(mem: StepMemory, budget: float, world: int) -> int | None:
    """The largest power-of-two global batch (without accumulation) that fits."""
    room = budget / mem.processes - mem.fixed - mem.overhead
    if room <= 0 or mem.per_image <= 0:
        return None
    local = int(room / (ACTIVATION_FACTOR * mem.per_image))
    if local < 1:
        return None
    return 2 ** (local.bit_length() - 1) * world


def is_out_of_memory(e: BaseException) -> bool:
    """A real allocation failure: CUDA OOM, Python's MemoryError, or torch's CPU allocator's."""
    if isinstance(e, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e))


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"the GPU ({torch.cuda.get_device_name(device)})"
    room, meminfo = _cgroup_available(), _meminfo_available()
    if room is not None and (meminfo is None or room < meminfo):  # the limit, not the machine, decides
        return "the host (under this process's cgroup memory limit)"
    return "the host"


def preflight(cfg, objective, augments, *, channels: int, base_size: int, device: torch.device, env,
              autocast_dtype, auto_accum: bool) -> int:
    """Refuse (UserError) a step that will not fit; return the --accum-steps to train with (the
    fewest that fit when `auto_accum`). Skipped with --no-memory-check or when the free memory is
    unknown."""
    if not getattr(cfg, "memory_check", True):
        return cfg.accum_steps
    free = available_bytes(device)
    if free is None:
        return cfg.accum_steps
    probe = dict(channels=channels, base_size=base_size, device=device, autocast_dtype=autocast_dtype,
                 seed=cfg.seed, rank=env.rank, world=env.world)
    mem = measure(objective, augments, **probe)
    mem.processes = local_processes(device)
    free = min_over_processes(available_bytes(device) or free)
    budget = HEADROOM * free
    batch, world = cfg.batch_size, env.world
    need = mem.need(batch // cfg.accum_steps // world)
    if need <= budget:
        return cfg.accum_steps
    # BatchNorm in LUT's heads, or DINOv2's KoLeo term, cannot train on micro-batches of one image
    min_micro = getattr(objective, "min_micro_batch", 1)
    accum = fitting_accum_steps(mem, budget, batch, world, min_micro,
                                getattr(objective, "micro_batch_floor_per_process", False))
    lift = getattr(objective, "micro_batch_floor_lift", None)
    unfloored = fitting_accum_steps(mem, budget, batch, world) if lift and min_micro > 1 else None
    if auto_accum and accum is not None:
        note(f"--accum-steps auto: {accum} micro-batches of {batch // accum} images per step (the global "
             f"batch stays {batch}); the step needs about {gb(mem.need(batch // accum // world))} of the "
             f"{gb(free)} free on {_device_label(device)}, where one batch of {batch} would need "
             f"{gb(need)}")
        return accum

    options = []
    if accum is not None:
        options.append(f"--accum-steps {accum} (micro-batches of {batch // accum}, the same global batch of "
                       f"{batch}; about {gb(mem.need(batch // accum // world))})")
    smaller = fitting_batch_size(mem, budget, world)
    if smaller is not None and smaller < min_micro:
        smaller = None
    if smaller is not None and smaller < batch:
        options.append(f"--batch-size {smaller} (about {gb(mem.need(smaller // world))})")
    if not getattr(objective.encoder, "grad_checkpointing", True):
        ckpt = _with_grad_checkpointing(mem, measure(objective, augments, grad_checkpoint=True, **probe),
                                        len(objective.encoder.blocks))
        local = batch // cfg.accum_steps // world
        if ckpt.need(local) <= budget:
            options.append(f"--grad-checkpoint (recomputes activations in the backward pass; about "
                           f"{gb(ckpt.need(local))})")
    if unfloored is not None and unfloored != accum:
        options.append(f"{lift} --accum-steps {unfloored} (micro-batches of {batch // unfloored}, which only "
                       f"{lift} allows; about {gb(mem.need(batch // unfloored // world))})")
    if accum is not None:
        options.append("--accum-steps auto (picks the accumulation itself)")
    what = (f"a step with micro-batches of {batch // cfg.accum_steps} image(s) (--batch-size {batch} / "
            f"--accum-steps {cfg.accum_steps}{f' over {world} processes' if world > 1 else ''}, "
            f"{'bf16' if autocast_dtype is not None else 'fp32'}) needs about {gb(need)}: {gb(mem.fixed)} of "
            f"gradients and optimiser state and {gb(mem.per_image)} of activations per image"
            f"{f', for each of {mem.processes} processes' if mem.processes > 1 else ''}; {_device_label(device)} "
            f"has {gb(free)} free")
    if not options:
        fix = ("nothing smaller of these fits: choose a smaller --model or --img-size (or a larger --patch-size)"
               if mem.need(max(1, min_micro // world)) > budget else "choose a smaller --model or --img-size")
        raise UserError(f"out of memory ahead: {what}. {fix}; or skip this estimate with --no-memory-check")
    raise UserError(f"out of memory ahead: {what}. Options that fit: {'; '.join(options)}. Or skip this estimate "
                    "with --no-memory-check")


def _with_grad_checkpointing(plain: StepMemory, measured: StepMemory, depth: int) -> StepMemory:
    """Checkpointed blocks keep only their inputs, which the saved-tensor hook does not see, and the
    backward pass recomputes one block at a time: add about two blocks' activations to what it saw."""
    block = max(0.0, plain.per_image - measured.per_image) / max(depth, 1)
    return StepMemory(fixed=measured.fixed, per_image=measured.per_image + 2 * block, processes=plain.processes,
                      overhead=measured.overhead)


def out_of_memory_message(cfg, step: int, error: BaseException, checkpoint: Path) -> str:
    """A real out-of-memory error during training, named with the step, the batch and the options."""
    micro = cfg.batch_size // cfg.accum_steps
    options = []
    if cfg.batch_size % (2 * cfg.accum_steps) == 0:
        options.append(f"--accum-steps {2 * cfg.accum_steps} (the same global batch)")
    if cfg.batch_size > 1:
        options.append(f"--batch-size {cfg.batch_size // 2}")
    if not cfg.grad_checkpoint:
        options.append("--grad-checkpoint")
    options.append("--accum-steps auto")
    kept = (f"the last good checkpoint {checkpoint} is kept" if Path(checkpoint).is_file()
            else "no checkpoint had been written yet")
    details = str(error).splitlines()[0][:200] if str(error) else "no details"
    return (f"out of memory at step {step} ({type(error).__name__}: {details}) with micro-batches of "
            f"{micro} image(s) (--batch-size {cfg.batch_size} / --accum-steps {cfg.accum_steps}); {kept}. To fit: "
            f"{'; '.join(options)}")
