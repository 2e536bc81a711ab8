"""`unmasked bench`: time one full training step (forward, loss, backward, AdamW, EMA) on
synthetic data already on the device, after warm-up.

Reports images/s, TFLOP per step (counted with torch.utils.flop_counter over one step), achieved
TFLOP/s, peak memory, device and dtype. Three paths:

- optimised: what training runs (bf16 on CUDA, fused views, SDPA, fused AdamW, foreach EMA, and
  optionally torch.compile / CUDA graphs);
- plain: fp32, the two LUT views in separate calls, explicit-softmax attention, per-tensor AdamW
  and EMA: the exactness reference, meaningful on any machine, a CPU included;
- reference: the step as the published MAE/LUT code runs it with a current timm (fp16 autocast
  with a gradient scaler and the per-step gradient norm, separate view calls, SDPA, torch's
  default AdamW, a per-parameter EMA loop), the step behind the "fused attention" anchors of
  docs/speed.md, so that the 2x target is a ratio measured side by side on any GPU.

`--compare-plain` / `--compare-reference` time a baseline and the optimised path in one process.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import warnings
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from unmasked.build import build_objective
from unmasked.config import PretrainConfig
from unmasked.objectives import registry
from unmasked.rng import BatchRandom
from unmasked.train.compiling import (
    compile_objective,
    eager_calls,
    mark_step_begin,
    uses_cuda_graphs,
)
from unmasked.train.optim import build_optimizer, param_groups


@dataclass
class BenchSpec:
    objective: str = "lut"
    model: str = "vit_base"
    img_size: int = 224
    patch_size: int = 16
    channels: int = 3
    batch_size: int = 128
    decoder_width: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    steps: int = 20
    warmup: int = 5
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    grad_checkpoint: bool = False
    path: str = "optimised"  # "optimised", "plain" or "reference" (see the module docstring)
    with_augment: bool = False
    profile: str | None = None  # folder for a torch.profiler trace and op table
    fuse_views: bool | None = None  # optimised: None = on with CUDA, off on a CPU (as in training)
    seed: int = 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _config(spec: BenchSpec, gpu: bool) -> PretrainConfig:
    small = spec.img_size <= 64
    given = dict(decoder_width=spec.decoder_width, decoder_depth=spec.decoder_depth,
                 decoder_heads=spec.decoder_heads,
                 fuse_views=False if spec.path != "optimised" else (spec.fuse_views if spec.fuse_views is not None
                                                                    else gpu))
    cfg = PretrainConfig.flat(  # options of other objectives are ignored
        objective=spec.objective, model=spec.model, img_size=spec.img_size, patch_size=spec.patch_size,
        batch_size=spec.batch_size, seed=spec.seed, epochs=100, **given,  # epochs only size schedules
    )
    cfg.objective_options.resolve(cfg, small)  # the objective's own defaults for this data size (e.g. the decoder)
    cfg.in_chans = spec.channels
    cfg.mean, cfg.std = [0.5] * spec.channels, [0.25] * spec.channels
    cfg.crop, cfg.pad = "pad", 4  # LUT's 4-px reflect pad at every size
    return cfg


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


PATHS = ("optimised", "plain", "reference")


def _published_update(loss, opt, scaler, student: torch.nn.Module) -> None:
    """The published code's update (MAE's loss scaler, which LUT reuses): scaled backward, unscale,
    the gradient norm computed every step for logging (one norm per parameter), then the scaler's
    step and update."""
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    grads = [p.grad.detach() for p in student.parameters() if p.grad is not None]
    torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()


@torch.no_grad()
def _published_ema(obj, momentum: float) -> None:
    """The published EMA loop: teacher = m * teacher + (1 - m) * student, one parameter at a time
    (three kernels each); buffers copied as in `LUT.update_teacher`. MAE has no teacher."""
    if obj.teacher is None:
        return
    lists = obj.teacher.pairs(obj.student)
    if len(lists) != 4:  # an objective without a published per-parameter loop: its own update
        obj.update_teacher(momentum)
        return
    tp, sp, tb, sb = lists
    for t, s in zip(tp, sp):
        t.mul_(momentum).add_((1.0 - momentum) * s.detach())
    for t, s in zip(tb, sb):
        t.copy_(s)


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


def path_precision(spec: BenchSpec, cuda: bool) -> str:
    """plain: fp32; reference: fp16 with a gradient scaler on CUDA, as the published code (fp32 on a
    CPU); optimised: --precision, by default bf16 on CUDA (no scaler needed) and fp32 on a CPU."""
    if spec.path == "plain":
        return "fp32"
    if spec.path == "reference":
        return "fp16" if cuda else "fp32"
    return spec.precision if spec.precision != "auto" else ("bf16" if cuda else "fp32")


class _Runner:
    """One prepared training step (model, optimiser, synthetic batch) that can be timed."""

    def __init__(self, spec: BenchSpec, device: torch.device):
        if spec.path not in PATHS:
            raise ValueError(f"bench path {spec.path!r}: expected one of {', '.join(PATHS)}")
        self.spec, self.device = spec, device
        cuda = device.type == "cuda"
        torch.manual_seed(spec.seed)
        cfg = _config(spec, cuda)
        obj = build_objective(cfg).to(device).train()
        self.precision = precision = path_precision(spec, cuda)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        if spec.path == "plain":
            _use_explicit_attention(obj)
            if hasattr(obj, "foreach_ema"):
                obj.foreach_ema = False  # one lerp per parameter
            opt = torch.optim.AdamW(param_groups(obj.student, 0.05), lr=1e-4, betas=(0.9, 0.95), foreach=False)
        elif spec.path == "reference":  # torch's default implementation choice (foreach on CUDA)
            opt = torch.optim.AdamW(param_groups(obj.student, 0.05), lr=1e-4, betas=(0.9, 0.95))
        else:
            opt = build_optimizer(obj.student, 1e-4, 0.05, device)  # the training loop's choice
        if spec.grad_checkpoint:
            obj.encoder.set_grad_checkpointing(True)
        if spec.compile:
            compile_objective(obj, obj.student, spec.compile_mode)
        b, c, s = spec.batch_size, spec.channels, spec.img_size
        g = torch.Generator(device=device).manual_seed(spec.seed)
        from unmasked.build import augment_spec

        view_specs = obj.view_specs(augment_spec(cfg))  # one synthetic input per view, at the view's size
        views = [torch.randn(b, c, v.img_size, v.img_size, device=device, generator=g) for v in view_specs]
        augments, images = None, None
        if spec.with_augment:
            from unmasked.data.augment import BatchAugment

            augments = [BatchAugment(v) for v in view_specs]
            images = torch.randint(0, 256, (b, c, s, s), dtype=torch.uint8, device=device, generator=g)

        def step(i: int):
            if spec.compile:
                mark_step_begin(spec.compile_mode)
            rng = BatchRandom(spec.seed, i, 0, b, device)
            v = [a(images, rng) for a in augments] if augments else views
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss, _ = obj(v, rng)
            if spec.path == "reference":
                _published_update(loss, opt, scaler, obj.student)
                opt.zero_grad(set_to_none=True)
                _published_ema(obj, 0.996)
                return loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            obj.update_teacher(0.996)
            return loss

        self.obj, self.step_fn, self.loss, self.i = obj, step, None, 0

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
        for _ in range(self.spec.warmup):
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
        if not self.spec.compile:  # a compiled step's launches are not ATen dispatches
            with _OpCounter() as op_counter:
                self.step()
            ops = op_counter.count
        return warmup_s, counter.get_total_flops(), ops

    def result(self, dt: float, flops: int, ops: int | None, warmup_s: float,
               peaks: tuple[float | None, float | None]) -> dict:
        spec = self.spec
        return {
            "objective": spec.objective,
            "model": f"{spec.model}/{spec.patch_size}",
            "img_size": spec.img_size,
            "batch_size": spec.batch_size,
            "path": spec.path,
            "options": _options(spec, self.precision, getattr(self.obj, "fuse_views", False), self.device),
            "device": device_name(self.device),
            "device_type": self.device.type,
            "dtype": self.precision,
            "images_per_s": round(spec.batch_size / dt, 1),
            "step_ms": round(dt * 1000, 2),
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


def bench(spec: BenchSpec) -> dict:
    """Time `spec.steps` steps of one path after warm-up: mean time per step."""
    from unmasked.devices import resolve_device

    device = resolve_device(spec.device)
    if spec.profile and device.type == "cuda":
        # The profiler misses the kernels of CUDA graphs captured before its first use (compile's
        # reduce-overhead mode captures during warm-up): start it once, empty, before the graphs,
        # and keep CUPTI alive after it, as torch itself does when inductor's global cudagraphs
        # flag is set (a per-call mode does not set that flag).
        from torch.profiler import ProfilerActivity, profile

        if spec.compile and uses_cuda_graphs(spec.compile_mode):
            os.environ.setdefault("TEARDOWN_CUPTI", "0")
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):
            pass
    runner = _Runner(spec, device)
    warmup_s, flops, ops = runner.warm_up()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runner.sync()
    t0 = time.perf_counter()
    for _ in range(spec.steps):
        runner.loss = runner.step_fn(runner.i)
        runner.i += 1
    runner.sync()
    dt = (time.perf_counter() - t0) / spec.steps
    out = runner.result(dt, flops, ops, warmup_s, _peaks(device))
    if spec.profile:
        out["device_busy_fraction"] = profile_steps(runner.step_fn, spec, device, runner.sync)
    return out


BASELINES = ("plain", "reference", "eager")


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


def bench_pair(spec: BenchSpec, baseline: str = "plain") -> list[dict]:
    """A baseline and the optimised path in one process, their steps interleaved (baseline,
    optimised, baseline, ...) so that drift in the machine's speed hits both alike; each figure is
    the median step. Baselines: "plain", "reference", or "eager" (the optimised path without
    torch.compile, beside the compiled one). Each path's peak memory is taken while the other
    model is not resident: the baseline's before the optimised model is built, the optimised
    path's after the baseline is freed."""
    import gc
    import statistics

    from unmasked.devices import resolve_device

    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: expected one of {', '.join(BASELINES)}")
    device = resolve_device(spec.device)
    base = _Runner(BenchSpec(**{**spec.__dict__, "path": "optimised" if baseline == "eager" else baseline,
                                "compile": False, "profile": None}), device)
    base_prep = base.warm_up()
    base_peaks = _own_peak(base)
    fast = _Runner(BenchSpec(**{**spec.__dict__, "path": "optimised", "profile": None}), device)
    fast_prep = fast.warm_up()
    times: list[list[float]] = [[], []]
    for _ in range(spec.steps):
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


def profile_steps(step, spec: BenchSpec, device: torch.device, sync) -> float | None:
    """Profile a few steps; write a Chrome trace and an op table; return the fraction of wall time
    the GPU spends in kernels (near 1.0: the GPU is not waiting on Python or on data)."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    out = Path(spec.profile)
    out.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    n = 5
    sync()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(n):
            step(10_000 + i)
        sync()
        wall = time.perf_counter() - t0
    prof.export_chrome_trace(str(out / "trace.json"))
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    (out / "ops.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType

    # device events, less the annotation spans that cover whole regions (gaps included)
    kernels = [e for e in prof.events()
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    if spec.compile and not any(e.name.startswith("triton") for e in kernels):
        warnings.warn("the profile holds no compiled (triton) kernels: the GPU work inside CUDA graphs "
                      "was not traced, so no busy fraction is reported", stacklevel=2)
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


def _options(spec: BenchSpec, precision: str, fused_views: bool, device: torch.device) -> str:
    """What the timed path does, read from the objective and device it ran with."""
    extra = ", with batched augmentation" if spec.with_augment else ""
    objective = registry.get(spec.objective).objective
    lut = objective.views > 1 or objective.uses_teacher  # separate view calls / an EMA step to describe
    if spec.path == "plain":
        return ("fp32, separate view calls, explicit softmax attention, per-tensor AdamW/EMA" if lut
                else "fp32, explicit softmax attention, per-tensor AdamW") + extra
    if spec.path == "reference":
        amp = "fp16 autocast + GradScaler" if precision == "fp16" else "fp32"
        return (f"published-style: {amp}, grad norm, " + (
            "separate view calls, SDPA, default AdamW, per-parameter EMA" if lut else "SDPA, default AdamW") + extra)
    opts = [precision, "SDPA", ("fused views" if fused_views else "separate views") if objective.views > 1 else None,
            "fused AdamW" if device.type == "cuda" else "foreach AdamW",
            "foreach EMA" if objective.uses_teacher else None]
    if spec.compile:
        opts.append(f"torch.compile({spec.compile_mode})")
    if spec.grad_checkpoint:
        opts.append("grad checkpointing")
    if spec.with_augment:
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
