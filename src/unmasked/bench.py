"""`unmasked bench`: time one full training step (forward, loss, backward, AdamW, EMA) on
synthetic data already on the device, after warm-up.

The step is the training loop's own (`train/step.py`'s `optimiser_step`), built from the same
pretraining options (`PretrainConfig`: the demo's model, every objective's options), so bench
times what `unmasked pretrain` runs; `BenchOptions` says how long and which path. Reports images/s,
TFLOP per step (counted with torch.utils.flop_counter over one step), achieved TFLOP/s, peak
memory, device and dtype. Three paths:

- optimised: what training runs (bf16 on CUDA, fused views, SDPA, fused AdamW, foreach EMA, and
  optionally torch.compile / CUDA graphs);
- plain: fp32, the two LUT views in separate calls, explicit-softmax attention, per-tensor AdamW
  and EMA: the exactness reference, meaningful on any machine, a CPU included;
- reference: the step as the published MAE/LUT code runs it with a current timm (fp16 autocast
  with a gradient scaler and the per-step gradient norm, separate view calls, SDPA, torch's
  default AdamW, a per-parameter EMA loop), the step behind the "fused attention" anchors of
  docs/speed.md, so that the 2x target is a ratio measured side by side on any GPU.

`--compare-plain` / `--compare-reference` time a baseline and the optimised path in one process;
`--compare-precision` the optimised path in fp32 and in bf16 autocast, the same way.
"""

from __future__ import annotations

import copy
import datetime
import gc
import itertools
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from unmasked.build import augment_spec, build_objective, model_name
from unmasked.config import PretrainConfig, resolve_defaults, validate
from unmasked.data.augment import BatchAugment
from unmasked.devices import autocast_dtype, resolve_device, resolve_precision
from unmasked.errors import UserError
from unmasked.notes import warn
from unmasked.objectives import registry
from unmasked.options import FLAG, PATH, opt, positive_int
from unmasked.train.compiling import compile_objective, eager_calls, uses_cuda_graphs
from unmasked.train.loop import optimizer_options
from unmasked.train.optim import build_optimizer, param_groups
from unmasked.train.step import StepParts, optimiser_step
from unmasked.train.step_values import StepSchedules

PATHS = ("optimised", "plain", "reference")
BASELINES = ("plain", "reference", "eager")

# What bench times when an option is not given (a ViT-B/16 step, as the published anchors); every
# other pretraining option keeps pretrain's default, resolved as for data of that image size.
BENCH_DEFAULTS = {"model": "vit_base", "img_size": 224, "patch_size": 16, "batch_size": 128, "channels": 3}
# The schedules (lr warm-up, EMA momentum, DINOv2's teacher temperature) are laid out as for a run
# of --epochs epochs of this many steps; bench's steps walk through them from step 0.
STEPS_PER_EPOCH = 100


@dataclass
class BenchOptions:
    steps: int = opt(20, "timed steps", rule=positive_int())
    warmup: int = opt(5, "untimed warm-up steps", rule=positive_int())
    # "optimised", "plain" or "reference" (see the module docstring); the command line's
    # --plain / --reference switches set it
    path: str = opt("optimised", "the step timed", rule=FLAG)
    with_augment: bool = opt(False, "include the batched augmentation of uint8 images", rule=FLAG)
    profile: str | None = opt(None, "also profile 5 steps: Chrome trace and op table in DIR, and on a GPU the "
                              "fraction of wall time spent in kernels", metavar="DIR", rule=PATH)
    compare_precision: bool = opt(False, "time the optimised step in fp32 and in bf16 autocast, steps interleaved, "
                                  "and print both rates and their ratio", rule=FLAG)


def bench_config(**options) -> PretrainConfig:
    """The pretraining config bench builds its step from: the options given, `BENCH_DEFAULTS`
    for those not given, the rest resolved as pretrain resolves them (small images: <= 64 px)."""
    cfg = PretrainConfig.flat(**{**BENCH_DEFAULTS, **{k: v for k, v in options.items() if v is not None}})
    if cfg.accum_steps == "auto":
        raise UserError("--accum-steps auto: bench has no memory preflight to choose it; give a number")
    cfg = resolve_defaults(cfg, cfg.img_size <= 64)
    cfg.in_chans = cfg.channels
    cfg.mean, cfg.std = [0.5] * cfg.channels, [0.25] * cfg.channels
    validate(cfg)
    return cfg


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _use_explicit_attention(module: torch.nn.Module, explicit: bool = True) -> dict:
    """Switch timm attention modules to the explicit softmax path; returns the previous settings."""
    old = {}
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            old[m] = m.fused_attn
            m.fused_attn = not explicit
    return old


def _restore_attention(old: dict) -> None:
    for m, v in old.items():
        m.fused_attn = v


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops a step dispatches, views excluded: on a GPU each is about one kernel
    launch, so the count shows what fusing views or compiling saves a launch-bound model."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def path_precision(path: str, precision: str, device: torch.device) -> str:
    """plain: fp32; reference: fp16 with a gradient scaler on CUDA, as the published code (fp32 on a
    CPU); optimised: --precision as training resolves it (devices.choose_precision)."""
    if path == "plain":
        return "fp32"
    if path == "reference":
        return "fp16" if device.type == "cuda" else "fp32"
    return resolve_precision(precision, device)


def _path_config(cfg: PretrainConfig, path: str, device: torch.device) -> PretrainConfig:
    """The baselines call views separately; optimised fuses them as training does (default: on
    CUDA)."""
    cfg = copy.deepcopy(cfg)
    if cfg.has_option("fuse_views"):
        fused = cfg.option("fuse_views")
        cfg.set_option("fuse_views", False if path != "optimised" else (
            fused if fused is not None else device.type == "cuda"))
    return cfg


def _path_optimizer(path: str, cfg: PretrainConfig, obj, device: torch.device) -> torch.optim.Optimizer:
    """optimised: the training loop's AdamW; plain: per-tensor AdamW; reference: torch's default
    implementation choice (foreach on CUDA). All with the run's parameter groups."""
    groups = optimizer_options(cfg, obj)
    if path == "optimised":
        return build_optimizer(obj.student, cfg.peak_lr(), cfg.weight_decay, device, **groups)
    impl = {"foreach": False} if path == "plain" else {}
    betas = groups.pop("betas")
    return torch.optim.AdamW(param_groups(obj.student, cfg.weight_decay, **groups), lr=cfg.peak_lr(),
                             betas=betas, **impl)


class _Runner:
    """One prepared training step (model, optimiser, synthetic batch) that can be timed."""

    def __init__(self, cfg: PretrainConfig, options: BenchOptions, device: torch.device):
        if options.path not in PATHS:
            raise ValueError(f"bench path {options.path!r}: expected one of {', '.join(PATHS)}")
        self.cfg = cfg = _path_config(cfg, options.path, device)
        self.options, self.device, self.path = options, device, options.path
        torch.manual_seed(cfg.seed)
        obj = build_objective(cfg).to(device).train()
        if cfg.grad_checkpoint:
            obj.encoder.set_grad_checkpointing(True)
        self.precision = path_precision(options.path, cfg.precision, device)
        optimizer = _path_optimizer(options.path, cfg, obj, device)
        if options.path == "plain":
            _use_explicit_attention(obj)
            obj.ema_kernels = "per-tensor"  # one lerp per tensor
        elif options.path == "reference":
            obj.ema_kernels = "published"  # mul_ + add_ per tensor
        if cfg.compile:
            compile_objective(obj, obj.student, cfg.compile_mode)
        self.total_steps = cfg.epochs * STEPS_PER_EPOCH
        schedules = StepSchedules.for_run(cfg, obj, self.total_steps, STEPS_PER_EPOCH)
        make_views, images = self._synthetic_input(obj)
        self.parts = StepParts(
            objective=obj, optimizer=optimizer, schedules=schedules, make_views=make_views,
            accum_steps=cfg.accum_steps, micro_batch=cfg.batch_size // cfg.accum_steps, seed=cfg.seed,
            device=device, autocast_dtype=autocast_dtype(self.precision), clip_grad=cfg.clip_grad,
            scaler=torch.amp.GradScaler(device.type) if self.precision == "fp16" else None,
            compile_mode=cfg.compile_mode if cfg.compile else None,
            published_grad_norm=options.path == "reference",
        )
        self.micro_batches = itertools.repeat(images)
        self.obj, self.loss, self.i = obj, None, 0

    def _synthetic_input(self, obj):
        """One synthetic input per view at the view's size (or uint8 images augmented each step)."""
        cfg, device = self.cfg, self.device
        b, c, s = cfg.batch_size // cfg.accum_steps, cfg.channels, cfg.img_size
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        view_specs = obj.view_specs(augment_spec(cfg))
        if self.options.with_augment:
            augments = [BatchAugment(v) for v in view_specs]
            images = torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, device=device, generator=g)
            return (lambda x, rng: [a(x, rng) for a in augments]), images
        views = [torch.randn(b, c, v.img_size, v.img_size, device=device, generator=g) for v in view_specs]
        return (lambda x, rng: views), None

    def step_fn(self, i: int) -> torch.Tensor:
        """The training step at index i (the schedules wrap around after their last step)."""
        return optimiser_step(self.parts, i, self.micro_batches, schedule_step=i % self.total_steps).loss

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self) -> float:
        """One step, synchronised; returns its wall time in seconds."""
        self.sync()
        t0 = time.perf_counter()
        self.loss = self.step_fn(self.i)
        self.sync()
        self.i += 1
        return time.perf_counter() - t0

    def warm_up(self) -> tuple[float, int, int | None]:
        """Untimed steps, then one step under a FLOP counter and (eager paths) one under an op
        counter; returns (warm-up seconds, FLOPs per step, ATen ops per step or None)."""
        t0 = time.perf_counter()
        for _ in range(self.options.warmup):
            self.step()
        warmup_s = time.perf_counter() - t0
        # FLOPs are counted with explicit attention: the counter does not see every fused SDPA
        # kernel (the CPU one), and the matrix products are the same work either way.
        # Counted on the eager modules: a compiled step may replay CUDA graphs the counter cannot see.
        old = _use_explicit_attention(self.obj)
        with eager_calls(self.obj), FlopCounterMode(display=False) as counter:
            self.step()
        _restore_attention(old)
        ops = None
        if not self.cfg.compile:  # a compiled step's launches are not ATen dispatches
            with _OpCounter() as op_counter:
                self.step()
            ops = op_counter.count
        return warmup_s, counter.get_total_flops(), ops

    def result(self, dt: float, flops: int, ops: int | None, warmup_s: float,
               peaks: tuple[float | None, float | None]) -> dict:
        cfg = self.cfg
        return {
            "objective": cfg.objective,
            "model": model_name(cfg) if any(v is not None for v in (cfg.width, cfg.depth, cfg.heads))
            else f"{cfg.model}/{cfg.patch_size}",
            "img_size": cfg.img_size,
            "batch_size": cfg.batch_size,
            "path": self.path,
            "options": _options(self, getattr(self.obj, "fuse_views", False)),
            "device": device_name(self.device),
            "device_type": self.device.type,
            "dtype": self.precision,
            "images_per_s": round(cfg.batch_size / dt, 1),
            "step_ms": round(dt * 1000, 2),
            "step_s": dt,  # unrounded: speed-ups are ratios of these, not of the rounded columns
            "flop_per_step": int(flops),
            "tflop_per_step": round(flops / 1e12, 4),
            "achieved_tflops": round(flops / dt / 1e12, 2),
            "aten_ops_per_step": ops,
            "peak_memory_gib": peaks[0],
            "peak_reserved_gib": peaks[1],
            "device_busy_fraction": None,
            "warmup_s": round(warmup_s, 1),
            "final_loss": float(self.loss.detach()),
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
        }


def _start_profiler_early(cfg: PretrainConfig, options: BenchOptions, device: torch.device) -> None:
    """The profiler misses the kernels of CUDA graphs captured before its first use (compile's
    reduce-overhead mode captures during warm-up): start it once, empty, before the graphs, and
    keep CUPTI alive after it, as torch itself does when inductor's global cudagraphs flag is set
    (a per-call mode does not set that flag)."""
    if not (options.profile and device.type == "cuda"):
        return

    if cfg.compile and uses_cuda_graphs(cfg.compile_mode):
        os.environ.setdefault("TEARDOWN_CUPTI", "0")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        pass


def bench(cfg: PretrainConfig, options: BenchOptions | None = None) -> dict:
    """Time `options.steps` steps of one path after warm-up: mean time per step."""
    options = options or BenchOptions()
    device = resolve_device(cfg.device)
    _start_profiler_early(cfg, options, device)
    runner = _Runner(cfg, options, device)
    warmup_s, flops, ops = runner.warm_up()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runner.sync()
    t0 = time.perf_counter()
    for _ in range(options.steps):
        runner.loss = runner.step_fn(runner.i)
        runner.i += 1
    runner.sync()
    dt = (time.perf_counter() - t0) / options.steps
    out = runner.result(dt, flops, ops, warmup_s, _peaks(device))
    if options.profile:
        out["device_busy_fraction"] = profile_steps(runner, Path(options.profile))
    return out


def _peaks(device: torch.device) -> tuple[float | None, float | None]:
    """Peak memory allocated and reserved (GiB) since the last reset of the CUDA peak counters (a
    CUDA-graph replay reuses its pool without allocating: see reserved); (None, None) off CUDA."""
    if device.type != "cuda":
        return None, None
    return (round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            round(torch.cuda.max_memory_reserved(device) / 2**30, 2))


def _own_peak(runner: _Runner) -> tuple[float | None, float | None]:
    """The peaks of one more step of `runner` alone."""
    if runner.device.type == "cuda":
        runner.sync()
        torch.cuda.reset_peak_memory_stats(runner.device)
        runner.step()
    return _peaks(runner.device)


def _with_precision(cfg: PretrainConfig, precision: str) -> PretrainConfig:
    out = copy.deepcopy(cfg)  # (not dataclasses.replace: objective options are not init fields)
    out.precision = precision
    return out


def bench_pair(cfg: PretrainConfig, options: BenchOptions | None = None, baseline: str | None = None) -> list[dict]:
    """A baseline and the optimised path in one process, their steps interleaved (baseline,
    optimised, baseline, ...) so that drift in the machine's speed hits both alike; each figure is
    the median step. Baselines: "plain" (the default), "reference", or "eager" (the optimised path
    without torch.compile, beside the compiled one); with `options.compare_precision`, the
    optimised path in fp32 beside itself in bf16 autocast (the baseline, if given, must be None).
    Each path's peak memory is taken while the other model is not resident: the baseline's before
    the optimised model is built, the optimised path's after the baseline is freed."""
    options = options or BenchOptions()
    if options.compare_precision:
        if baseline is not None:
            raise ValueError(f"baseline {baseline!r}: compare_precision sets fp32 beside bf16, with no other baseline")
        base_cfg, fast_cfg, base_path = _with_precision(cfg, "fp32"), _with_precision(cfg, "bf16"), "optimised"
    else:
        baseline = baseline or "plain"
        if baseline not in BASELINES:
            raise ValueError(f"baseline {baseline!r}: expected one of {', '.join(BASELINES)}")
        base_cfg = copy.deepcopy(cfg)
        base_cfg.compile = False
        fast_cfg, base_path = cfg, "optimised" if baseline == "eager" else baseline
    device = resolve_device(cfg.device)
    base = _Runner(base_cfg, replace(options, path=base_path, profile=None), device)
    base_prep = base.warm_up()
    base_peaks = _own_peak(base)
    fast = _Runner(fast_cfg, replace(options, path="optimised", profile=None), device)
    fast_prep = fast.warm_up()
    times: list[list[float]] = [[], []]
    for _ in range(options.steps):
        for k, r in enumerate((base, fast)):
            times[k].append(r.step())
    (warmup_s, flops, ops) = base_prep
    rows = [base.result(statistics.median(times[0]), flops, ops, warmup_s, base_peaks)]
    if baseline == "eager":
        rows[0]["path"] = "eager"
    del base
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    (warmup_s, flops, ops) = fast_prep
    rows.append(fast.result(statistics.median(times[1]), flops, ops, warmup_s, _own_peak(fast)))
    return rows


def pair_line(rows: list[dict], steps: int) -> str:
    """The ratio line under a pair: the compared path's images/s over the baseline's."""
    base, other = rows
    label = (f"{other['dtype']} / {base['dtype']}" if base["path"] == other["path"] == "optimised"
             and base["dtype"] != other["dtype"] else f"{other['path']} / {base['path']}")
    return (f"{label}: {base['step_s'] / other['step_s']:.2f}x images/s (median of {steps} interleaved "
            "steps each, same process)")


def profile_steps(runner: _Runner, out: Path) -> float | None:
    """Profile a few steps; write a Chrome trace and an op table; return the fraction of wall time
    the GPU spends in kernels (near 1.0: the GPU is not waiting on Python or on data)."""
    device = runner.device
    out.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    runner.sync()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(5):
            runner.step_fn(10_000 + i)
        runner.sync()
        wall = time.perf_counter() - t0
    prof.export_chrome_trace(str(out / "trace.json"))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    (out / "ops.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
    if device.type != "cuda":
        return None
    return _kernel_busy_fraction(prof, runner.cfg.compile, wall)


def _kernel_busy_fraction(prof, compiled: bool, wall: float) -> float | None:
    # device events, less the annotation spans that cover whole regions (gaps included)
    kernels = [e for e in prof.events()
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    if compiled and not any(e.name.startswith("triton") for e in kernels):
        warn("the profile holds no compiled (triton) kernels: the GPU work inside CUDA graphs "
             "was not traced, so no busy fraction is reported")
        return None
    return busy_fraction([(e.time_range.start, e.time_range.end) for e in kernels], wall * 1e6)


def busy_fraction(spans: list[tuple[float, float]], wall_us: float) -> float | None:
    """Share of `wall_us` covered by the union of the GPU's activity spans (kernels on several
    streams overlap: counted once); None when the profiler recorded no GPU activity."""
    if not spans or wall_us <= 0:
        return None
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    return round(min(busy / wall_us, 1.0), 3)


def _options(runner: _Runner, fused_views: bool) -> str:
    """What the timed path does, read from the objective and device it ran with."""
    cfg, options, precision = runner.cfg, runner.options, runner.precision
    extra = ", with batched augmentation" if options.with_augment else ""
    objective = registry.get(cfg.objective).objective
    lut = objective.views > 1 or objective.uses_teacher  # separate view calls / an EMA step to describe
    if runner.path == "plain":
        return ("fp32, separate view calls, explicit softmax attention, per-tensor AdamW/EMA" if lut
                else "fp32, explicit softmax attention, per-tensor AdamW") + extra
    if runner.path == "reference":
        amp = "fp16 autocast + GradScaler" if precision == "fp16" else "fp32"
        return (f"published-style: {amp}, grad norm, " + (
            "separate view calls, SDPA, default AdamW, per-parameter EMA" if lut else "SDPA, default AdamW") + extra)
    opts = [precision + (" + GradScaler" if precision == "fp16" else ""), "SDPA",
            ("fused views" if fused_views else "separate views") if objective.views > 1 else None,
            "fused AdamW" if runner.device.type == "cuda" else "foreach AdamW",
            "foreach EMA" if objective.uses_teacher else None]
    if cfg.accum_steps > 1:
        opts.append(f"{cfg.accum_steps} micro-batches")
    if cfg.compile:
        opts.append(f"torch.compile({cfg.compile_mode})")
    if cfg.grad_checkpoint:
        opts.append("grad checkpointing")
    if options.with_augment:
        opts.append("with batched augmentation")
    return ", ".join(o for o in opts if o)


def format_result(r: dict) -> str:
    ops = f", {r['aten_ops_per_step']:,} ATen ops/step" if r.get("aten_ops_per_step") else ""
    mem = f", peak memory {r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else ""
    if r.get("peak_reserved_gib") is not None:
        mem += f" ({r['peak_reserved_gib']:.2f} GiB reserved)"
    if r.get("device_busy_fraction") is not None:
        mem += f", GPU busy {r['device_busy_fraction']:.0%} of the wall time (profile)"
    return (f"{r['objective'].upper()} {r['model']} @ {r['img_size']} px, batch {r['batch_size']}, {r['path']} "
            f"({r['options']}) on {r['device']}: {r['images_per_s']:,.1f} images/s, {r['step_ms']:.1f} ms/step, "
            f"{r['tflop_per_step']:.3f} TFLOP/step, {r['achieved_tflops']:.2f} TFLOP/s{ops}{mem}")
