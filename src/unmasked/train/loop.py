"""The pretraining loop, `Pretrainer.fit`: a flat loop over optimiser steps (step, after-step,
maybe-stop, maybe-save); the step itself is `train/step.py`'s `optimiser_step`."""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from unmasked.build import augment_spec, build_objective, model_name, spec_from_config
from unmasked.config import PretrainConfig, resolve_defaults, validate
from unmasked.data.augment import BatchAugment
from unmasked.data.dataset import channel_stats, is_fashion_mnist, load_data
from unmasked.data.loader import TrainBatches
from unmasked.data.recipe import small_images, train_base_size
from unmasked.devices import Precision, autocast_dtype, choose_precision
from unmasked.errors import TrainingStopped, UserError
from unmasked.files import atomic_write_text, remove_stale_temp_files
from unmasked.lock import RunLock
from unmasked.notes import note
from unmasked.paths import record_absolute_paths
from unmasked.rng import BatchRandom
from unmasked.train import checkpoint as ckpt
from unmasked.train import memory
from unmasked.train.collapse import CollapseWatch
from unmasked.train.compiling import compile_objective
from unmasked.train.data_fingerprint import check_same_data, data_fingerprint
from unmasked.train.distributed import (
    all_mean,
    broadcast_flag,
    cleanup,
    gather_objects,
    init_distributed,
)
from unmasked.train.metrics import JsonlWriter
from unmasked.train.monitor import knn_monitor
from unmasked.train.optim import build_optimizer, load_optimizer_state
from unmasked.train.step import StepOutput, StepParts, optimiser_step
from unmasked.train.step_values import StepSchedules
from unmasked.train.tensorboard import mirror_to_tensorboard
from unmasked.train.warm_start import adopt_shape, check_fits, load_into, open_warm_source

# Options that may change when a run is resumed; any other change is refused.
RESUME_OVERRIDABLE = {
    "out", "steps", "num_workers", "device", "log_every", "save_every", "save_every_steps", "cache_gb",
    "compile", "compile_mode", "nan", "strict", "precision", "grad_checkpoint", "fuse_views", "memory_check",
    "knn_every", "tensorboard", "on_collapse",  # observers: they never change the training trajectory
}
RESUME_IGNORED = {"init_from", "weights"}  # a warm start only matters when the run begins
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class RunState:
    step: int = 0
    images_seen: int = 0
    elapsed: float = 0.0
    skipped_steps: int = 0
    data_wait_s: float = 0.0  # time the steps spent waiting for their micro-batches


@dataclass
class _Window:
    """The steps since the last log: (step, loss, parts) rows, and the clock they ran on."""

    rows: list = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)
    images: int = 0
    data_wait: float = 0.0


def check_writable(folder: Path) -> None:
    """Fail before training, not at the first checkpoint, when the run folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--out {folder}: the run folder is not writable ({e.strerror or e})") from None


def merge_resume_config(saved: PretrainConfig, cfg: PretrainConfig, explicit: set[str]) -> PretrainConfig:
    """The saved config wins; explicitly given options may only change what is safe to change."""
    clashes = []
    for name in sorted(explicit):
        if (name in RESUME_OVERRIDABLE or name in RESUME_IGNORED
                or not (saved.has_option(name) and cfg.has_option(name))):
            continue
        if cfg.option(name) != saved.option(name):
            clashes.append(f"--{name.replace('_', '-')} {cfg.option(name)} (the run has {saved.option(name)})")
    if clashes:
        raise UserError(
            f"cannot resume {cfg.out} with different settings: {'; '.join(clashes)}. Drop these options to "
            "continue the run as it was, or start a new run in another --out folder (add --init-from "
            f"{cfg.out} to warm-start its encoder)"
        )
    merged = PretrainConfig.from_dict(saved.to_dict())
    for name in explicit & RESUME_OVERRIDABLE:
        if merged.has_option(name):
            merged.set_option(name, cfg.option(name))
    merged.steps = cfg.steps  # a stop point belongs to one invocation: resuming runs on unless told
    merged.out = cfg.out
    return merged


def optimizer_options(cfg: PretrainConfig, objective) -> dict:
    """The parameter-group options of a run's AdamW (train/optim.py), from its config."""
    return dict(betas=(0.9, cfg.adam_beta2), decay_tokens=cfg.decay_tokens, layer_decay=cfg.layer_decay,
                patch_embed_lr_mult=cfg.patch_embed_lr_mult, num_blocks=len(objective.encoder.blocks),
                last_layer=objective.last_layer_params())


class _StopRequest:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, resume: bool = False, explicit: set[str] | None = None,
                 progress: bool = True):
        self._setup_device(cfg, progress)
        self.cfg, resume_state = self._resolve_config(cfg, resume, explicit or set())
        self._load_data(resume_state)
        self._build_objective()
        self._build_optimizer()
        self._build_schedules()
        self._check_memory()  # before the first step: a clear refusal instead of the OOM killer
        self._restore(resume_state)
        self._wrap_for_training()  # DDP and torch.compile
        self._open_logs()

    # -- the assembly steps, in order ----------------------------------------------------
    def _setup_device(self, cfg: PretrainConfig, progress: bool) -> None:
        self.env, self.device = init_distributed(cfg.device)
        self.progress = progress and self.env.is_main
        self.run_dir = Path(cfg.out)
        self._lock = None
        self._warm = None  # the --init-from source, opened before the config is resolved
        self.ckpt_path = self.run_dir / ckpt.CHECKPOINT
        self.state = RunState()

    def _resolve_config(self, cfg: PretrainConfig, resume: bool,
                        explicit: set[str]) -> tuple[PretrainConfig, dict | None]:
        """The saved config on --resume (with the options safe to change), else the defaults resolved."""
        self._auto_accum = cfg.accum_steps == "auto"  # the memory preflight picks it; a resumed run keeps its own
        if self._auto_accum:
            cfg.accum_steps, explicit, self._auto_accum = 1, explicit - {"accum_steps"}, not resume
        cfg = record_absolute_paths(cfg)  # resumable and evaluable from any folder
        resume_state = None
        if resume:
            if self.ckpt_path.exists() and not self.ckpt_path.is_file():
                raise UserError(f"--resume: {self.ckpt_path} is not a file (a folder?); a checkpoint is the file "
                                "`unmasked pretrain` writes there")
            if not self.ckpt_path.is_file():
                raise UserError(f"--resume: no checkpoint to resume in {self.run_dir} (expected {self.ckpt_path})")
            resume_state = ckpt.load_checkpoint(self.ckpt_path)
            saved = PretrainConfig.from_dict(resume_state["config"])
            cfg = merge_resume_config(saved, cfg, explicit)
        else:
            if self.ckpt_path.exists():
                raise UserError(
                    f"--out {self.run_dir} already holds a run ({self.ckpt_path.name}); continue it with --resume, "
                    "or choose another --out folder"
                )
            if cfg.init_from:  # opened first: its shape fills the model options not given
                self._warm = open_warm_source(cfg.init_from, cfg.weights, cfg.data, cfg.seed)
                adopt_shape(cfg, self._warm, explicit)
            cfg = resolve_defaults(cfg, is_fashion_mnist(cfg.data) or small_images(cfg))
        cfg.objective_options.resolve_device(self.device.type == "cuda" or self.env.enabled)
        validate(cfg)
        if self._warm is not None:
            check_fits(spec_from_config(cfg), self._warm, announce=self.env.is_main)
        self.precision_choice = self._choose_precision(cfg, resume, explicit)
        # config.json and the checkpoint record the precision trained in, so a resume keeps it
        cfg.precision = self.precision = self.precision_choice.name
        self.autocast_dtype = autocast_dtype(self.precision)
        if self.env.is_main and self.precision_choice.reason.startswith("auto"):
            note(self.precision_choice.line())  # what auto chose and why; a typed or recorded one is in the summary
        if self.env.is_main:
            check_writable(self.run_dir)
            # one process writes into a run folder at a time (under torchrun, rank 0 writes for all);
            # nothing is written before this point
            self._lock = RunLock(self.run_dir, "pretrain").acquire()
            remove_stale_temp_files(self.run_dir)
        return cfg, resume_state

    def _choose_precision(self, cfg: PretrainConfig, resume: bool, explicit: set[str]) -> Precision:
        """--precision resolved for this device (devices.choose_precision); on a resume without
        --precision, the run's own."""
        from_run = resume and "precision" not in explicit
        choice = choose_precision(cfg.precision, self.device, recorded=from_run,
                                  saved_auto=from_run and cfg.precision == "auto")
        if self.env.enabled and self.device.type == "cpu" and cfg.precision == "auto":
            # one precision for every process: bf16 only where each process's CPU check found it fast
            slow_somewhere = broadcast_flag(self.env, choice.name != "bf16", self.device)
            if slow_somewhere and choice.name == "bf16":
                choice = Precision("fp32", "auto: another process found bf16 slow on its CPU")
        return choice

    def _load_data(self, resume_state: dict | None) -> None:
        cfg = self.cfg
        self.data = load_data(
            cfg.data, base_size=train_base_size(cfg), channels=cfg.channels or cfg.in_chans, subset=cfg.subset,
            subset_seed=cfg.seed, cache_gb=cfg.cache_gb, num_workers=cfg.num_workers, strict=cfg.strict,
            unlabeled=cfg.unlabeled, progress=self.progress, max_image_pixels=cfg.max_image_pixels,
            keep_aspect=True,  # every objective's crops see the whole image
        )
        self.data_record = data_fingerprint(self.data)  # kept in checkpoints
        if resume_state is not None:
            check_same_data(resume_state.get("data"), self.data_record, self.run_dir)
        if cfg.mean is None:
            cfg.in_chans = self.data.channels
            cfg.base_size = self.data.base_size
            cfg.mean, cfg.std = channel_stats(self.data.train, self.data.base_size, self.data.channels)
        if cfg.batch_size > len(self.data.train):
            raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(self.data.train)} training "
                            f"images of {cfg.data}{' (after --subset)' if cfg.subset else ''}; use a smaller batch")
        micro = cfg.batch_size // cfg.accum_steps
        if micro % self.env.world:
            raise UserError(f"--batch-size {cfg.batch_size} / --accum-steps {cfg.accum_steps} = {micro} images per "
                            f"micro-batch is not divisible by the {self.env.world} processes")
        self.batches = TrainBatches(
            self.data.train, cfg.batch_size, cfg.accum_steps, self.device, seed=cfg.seed, rank=self.env.rank,
            world=self.env.world, base_size=self.data.base_size, channels=self.data.channels,
            num_workers=cfg.num_workers, strict=cfg.strict,
        )
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = cfg.epochs * self.steps_per_epoch

    def _build_objective(self) -> None:
        torch.manual_seed(self.cfg.seed)
        self.objective = build_objective(self.cfg).to(self.device)
        if self.cfg.grad_checkpoint:
            self.objective.encoder.set_grad_checkpointing(True)
        self.augments = [BatchAugment(s) for s in self.objective.view_specs(augment_spec(self.cfg))]

    def _check_memory(self) -> None:
        """Refuse (or, with --accum-steps auto, split the batch) before a step the device cannot hold."""
        cfg = self.cfg
        self.objective.set_step_values(self.schedules.objective_values(0))  # the probe runs a real forward
        accum = memory.preflight(cfg, self.objective, self.augments, channels=self.data.channels,
                                 base_size=self.data.base_size, device=self.device, env=self.env,
                                 autocast_dtype=self.autocast_dtype,
                                 auto_accum=self._auto_accum)
        if accum != cfg.accum_steps:
            cfg.accum_steps = accum
            self.batches.set_accum(accum)

    def _build_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = build_optimizer(self.objective.student, cfg.peak_lr(), cfg.weight_decay, self.device,
                                         **optimizer_options(cfg, self.objective))
        # fp16 autocast needs a gradient scaler (bf16 and fp32 do not): its scale is checkpointed
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def _build_schedules(self) -> None:
        self.schedules = StepSchedules.for_run(self.cfg, self.objective, self.total_steps, self.steps_per_epoch)

    def _restore(self, resume_state: dict | None) -> None:
        if resume_state is not None:
            self._load_state(resume_state)
        elif self._warm is not None:
            self._warm_start()

    def _wrap_for_training(self) -> None:
        student_call = self.objective.student
        if self.env.enabled:
            student_call = DDP(self.objective.student, device_ids=[self.device.index] if self.device.type == "cuda"
                               else None, broadcast_buffers=False)
        self.ddp = student_call if self.env.enabled else None
        if self.cfg.compile:
            compile_objective(self.objective, student_call, self.cfg.compile_mode)
        else:
            self.objective.set_student_call(student_call)
        self.step_parts = self._step_parts()

    def _step_parts(self) -> StepParts:
        cfg = self.cfg
        return StepParts(
            objective=self.objective, optimizer=self.optimizer, schedules=self.schedules, make_views=self._views,
            accum_steps=cfg.accum_steps, micro_batch=cfg.batch_size // cfg.accum_steps, seed=cfg.seed,
            device=self.device, env=self.env, autocast_dtype=self.autocast_dtype, scaler=self.scaler,
            clip_grad=cfg.clip_grad, nan_skip=cfg.nan == "skip", ddp=self.ddp,
            compile_mode=cfg.compile_mode if cfg.compile else None,
        )

    def _open_logs(self) -> None:
        self.metrics = JsonlWriter(self.run_dir / METRICS_FILE, enabled=self.env.is_main)
        if self.env.is_main:
            with self._writing(self.run_dir / CONFIG_FILE):
                self.metrics.truncate_after(self.state.step)
                self.cfg.save(self.run_dir / CONFIG_FILE)
        self.metrics = mirror_to_tensorboard(self.metrics, self.run_dir, self.state.step, self.cfg.tensorboard)
        self.monitor = knn_monitor(self)
        self.collapse = CollapseWatch(self, self.cfg.on_collapse) if self.env.is_main else None
        if self.monitor is not None and self.collapse is not None:
            self.monitor.observers.append(self.collapse.check_knn)

    # -- state --------------------------------------------------------------------------
    def _load_state(self, st: dict) -> None:
        try:
            self.objective.load_state_dict(st["objective"])
        except RuntimeError as e:
            raise UserError(f"checkpoint {self.ckpt_path} does not match the model of its config: {e}") from None
        load_optimizer_state(self.optimizer, st["optimizer"], self.device)
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.state = RunState(**st["state"])
        ckpt.set_rng_state(ckpt.rng_state_for(st, self.env.rank, self.env.world))

    def _warm_start(self) -> None:
        """The encoder from --init-from (train/warm_start.py); the EMA teacher starts as the student.
        What was loaded goes into config.json, so a resumed run never reloads the source."""
        self.cfg.init_record = load_into(self.objective.encoder, self._warm)
        if self.objective.teacher is not None:
            self.objective.teacher.encoder.load_state_dict(self.objective.encoder.state_dict())
        self._warm = None

    def save(self) -> None:
        # every process's RNG state (a collective, so before the rank-0-only part)
        rng_ranks = gather_objects(self.env, ckpt.rng_state())
        if not self.env.is_main:
            return
        state = {
            "config": self.cfg.to_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": self.state.__dict__.copy(),
            "rng": rng_ranks[0],
            "encoder_spec": spec_from_config(self.cfg).to_dict(),
            "data": self.data_record,
        }
        if self.env.enabled:
            state["rng_ranks"] = rng_ranks
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        had_one = self.ckpt_path.is_file()  # the write is atomic: an earlier checkpoint survives it
        try:
            ckpt.save_checkpoint(self.ckpt_path, state)
        except OSError as e:
            kept = "the previous checkpoint is kept unchanged" if had_one else "no checkpoint had been written yet"
            raise TrainingStopped(
                f"could not write checkpoint {self.ckpt_path} at step {self.state.step} ({e.strerror or e}); {kept}"
            ) from None

    def export(self) -> Path | None:
        if not self.env.is_main:
            return None
        info = {
            "format": "unmasked-encoder/1",
            "objective": self.cfg.objective,
            "network": self.objective.export_network,
            "spec": spec_from_config(self.cfg).to_dict(),
            "timm_kwargs": spec_from_config(self.cfg).timm_kwargs(),
            "mean": self.cfg.mean,
            "std": self.cfg.std,
            "crop_pct": self.cfg.crop_pct,
            "data": self.cfg.data,
            "step": self.state.step,
        }
        with self._writing(self.run_dir / "encoder.safetensors"):
            return ckpt.export_encoder(self.objective.export_encoder(), info, self.run_dir)

    @contextmanager
    def _writing(self, path: Path):
        """A failed write of a run file (disk full, folder gone) stops the run with the file named;
        checkpoints are replaced atomically, so the last good one stays."""
        try:
            yield
        except OSError as e:
            raise TrainingStopped(
                f"could not write {getattr(e, 'filename', None) or path} at step {self.state.step} "
                f"({e.strerror or e}); the last good checkpoint ({self.ckpt_path}) is kept"
            ) from None

    # -- one optimiser step (train/step.py) ----------------------------------------------
    def _views(self, images: torch.Tensor, rng: BatchRandom) -> list[torch.Tensor]:
        return [aug(images, rng) for aug in self.augments]

    def train_step(self, step: int, micro_batches) -> StepOutput:
        return optimiser_step(self.step_parts, step, micro_batches)

    def _step(self, step: int, micro_batches) -> StepOutput:
        try:
            return self.train_step(step, micro_batches)
        except Exception as e:
            if not memory.is_out_of_memory(e):
                raise
            raise TrainingStopped(memory.out_of_memory_message(self.cfg, step, e, self.ckpt_path)) from None

    # -- the loop: step, after-step, maybe-stop, maybe-save ---------------------------------
    def fit(self) -> dict:
        st = self.state
        stop_at = self.total_steps if self.cfg.steps is None else min(self.total_steps, self.cfg.steps)
        self.objective.train()
        self._window = _Window()
        self._t_run, self._elapsed0 = time.perf_counter(), st.elapsed
        stop_signal = None
        bar = tqdm(total=stop_at, initial=min(st.step, stop_at), desc=f"{self.cfg.objective} pretrain",
                   unit="step", disable=not self.progress, dynamic_ncols=True, mininterval=1.0)
        with _StopRequest() as stop:
            for step, micro_batches in zip(range(st.step, stop_at), self._epoch_batches(st.step)):
                self._after_step(step, self._step(step, micro_batches), stop_at, bar)
                if self._stop_requested(stop, stop_at):
                    stop_signal = stop.signal or (None if self._collapse_stop() else signal.SIGTERM)
                    break
                self._maybe_save(stop_at)
            self._log(bar)  # the steps since the last log (after a stop request), checked before the save
            self.save()
            self.export()
        bar.close()
        return self._finish(stop_signal)

    def _epoch_batches(self, start: int):
        """For each step from `start`, the micro-batch iterator of its epoch (made when reached)."""
        epoch, in_epoch = divmod(start, self.steps_per_epoch)
        while True:
            batches = self.batches.epoch(epoch, in_epoch)
            for _ in range(in_epoch, self.steps_per_epoch):
                yield batches
            epoch, in_epoch = epoch + 1, 0

    def _after_step(self, step: int, out: StepOutput, stop_at: int, bar) -> None:
        st, w, batch = self.state, self._window, self.cfg.batch_size
        w.rows.append((step, out.loss, out.parts))
        w.images, w.data_wait = w.images + batch, w.data_wait + out.data_wait_s
        st.step, st.images_seen = step + 1, st.images_seen + batch
        st.skipped_steps += int(out.skipped)
        st.data_wait_s += out.data_wait_s
        st.elapsed = self._elapsed0 + time.perf_counter() - self._t_run
        bar.update(1)
        if self.monitor is not None:  # its time is not the run's: shift the clocks past it
            spent = self.monitor.after_step(st.step)
            self._t_run, w.start = self._t_run + spent, w.start + spent
        if self._at_log(stop_at):
            self._log(bar)

    def _at_log(self, stop_at: int) -> bool:
        return self.state.step % self.cfg.log_every == 0 or self.state.step == stop_at

    def _collapse_stop(self) -> bool:
        return self.collapse is not None and self.collapse.stop

    def _stop_requested(self, stop: _StopRequest, stop_at: int) -> bool:
        """A signal (or --on-collapse stop) stops the run after this step; under DDP every rank
        learns it at a log step."""
        requested = stop.signal is not None or self._collapse_stop()
        if self.env.enabled:
            requested = broadcast_flag(self.env, requested, self.device) if self._at_log(stop_at) else False
        return requested

    def _maybe_save(self, stop_at: int) -> None:
        step, cfg, spe = self.state.step, self.cfg, self.steps_per_epoch
        by_steps = bool(cfg.save_every_steps) and step % cfg.save_every_steps == 0
        at_epoch = step % spe == 0 and (step // spe) % cfg.save_every == 0 and step < stop_at
        if by_steps or at_epoch:
            self._check_window(self._window.rows)
            self.save()

    def _finish(self, stop_signal: int | None) -> dict:
        summary = self.summary(completed=self.state.step >= self.total_steps)
        if stop_signal is not None:
            summary["interrupted_by"] = signal.Signals(stop_signal).name
        if self.env.is_main:
            with self._writing(self.run_dir / SUMMARY_FILE):
                atomic_write_text(self.run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        if self._collapse_stop():
            raise TrainingStopped(f"--on-collapse stop: a collapse was named ({self.collapse.named}, the line "
                                  f"above); the run is stopped at step {self.state.step} and its checkpoint "
                                  f"{self.ckpt_path} is kept")
        return summary

    def _window_table(self, window) -> tuple[list[str], torch.Tensor]:
        """Losses and loss parts of the steps since the last log, (steps, 1 + parts), averaged over
        processes, so every rank logs and judges the same numbers (one all-reduce per log)."""
        names = ["loss"] + sorted({k for _, _, p in window for k in p})
        rows = [torch.stack([loss.float()] + [torch.as_tensor(p.get(k, float("nan"))).float().to(loss.device)
                                              for k in names[1:]]) for _, loss, p in window]
        table = torch.stack(rows)
        if self.env.enabled:
            table = all_mean(self.env, table)
        return names, table.cpu()

    def _check_window(self, window, table=None) -> None:
        """Stop at the first non-finite loss since the last check (before anything is saved)."""
        if not window or self.cfg.nan == "skip":
            return
        names, table = table if table is not None else self._window_table(window)
        bad = (~torch.isfinite(table[:, 0])).nonzero()
        if len(bad):
            i = int(bad[0])
            parts = ", ".join(f"{k}={float(v):.4g}" for k, v in zip(names[1:], table[i, 1:]))
            raise TrainingStopped(
                f"non-finite loss at step {window[i][0]}: loss={float(table[i, 0]):.4g} ({parts or 'no parts'}). "
                f"The run is stopped; the last good checkpoint {self.ckpt_path} is kept. Lower --lr / --base-lr, "
                "set --clip-grad, or pass --nan skip to skip such steps"
            )

    def _log(self, bar) -> None:
        """One metrics.jsonl record for the steps since the last log; the window starts again."""
        w = self._window
        if not w.rows:
            return
        names, table = self._window_table(w.rows)
        self._check_window(w.rows, (names, table))
        rec = self._record(names, table)
        wall = max(time.perf_counter() - w.start, 1e-9)
        images_per_s = w.images / wall
        if self.collapse is not None:  # an observer: its time is not the run's
            t0 = time.perf_counter()
            self.collapse.check(rec)
            self._t_run += time.perf_counter() - t0
        rec.update(images_per_s=round(images_per_s, 1), data_wait=round(min(w.data_wait / wall, 1.0), 4),
                   images_seen=self.state.images_seen, time_s=round(self.state.elapsed, 2))
        with self._writing(self.metrics.path):
            self.metrics.write(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{images_per_s:.0f}", lr=f"{rec['lr']:.2e}")
        self._window = _Window()

    def _record(self, names: list[str], table: torch.Tensor) -> dict:
        st = self.state
        last = min(st.step, self.total_steps) - 1
        rec = {"step": st.step, "epoch": round(st.step / self.steps_per_epoch, 4), "lr": self.schedules.lr[last]}
        for j, k in enumerate(names):
            rec[k] = float(table[:, j].mean())
        if self.objective.teacher is not None:
            rec["ema_momentum"] = self.schedules.ema_momentum[last]
        if self.cfg.weight_decay_end is not None:
            rec["weight_decay"] = self.schedules.weight_decay[last]
        rec.update(self.schedules.objective_values(last))
        return rec

    def summary(self, completed: bool) -> dict:
        st = self.state
        return {
            "objective": self.cfg.objective,
            "model": model_name(self.cfg),
            "data": self.cfg.data_as_typed or self.data.name,
            "train_images": len(self.data.train),
            "device": _device_name(self.device),
            "world_size": self.env.world,
            "precision": self.precision,
            "steps": st.step,
            "total_steps": self.total_steps,
            "epochs": round(st.step / self.steps_per_epoch, 3),
            "images_seen": st.images_seen,
            "time_s": round(st.elapsed, 1),
            "images_per_s": round(st.images_seen / max(st.elapsed, 1e-9), 1),
            "data_wait": round(min(st.data_wait_s / max(st.elapsed, 1e-9), 1.0), 3),
            "skipped_steps": st.skipped_steps,
            "collapse": self.collapse.named if self.collapse is not None else None,
            "skipped_files": len(self.data.skipped) + len(self.batches.skipped),
            "completed": completed,
            "run_dir": str(self.run_dir),
        }

    def close(self, finished: bool = True) -> None:
        if hasattr(self.metrics, "close"):
            self.metrics.close()
        cleanup(self.env, finished)
        if self._lock is not None:
            self._lock.release()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def pretrain(cfg: PretrainConfig, resume: bool = False, explicit: set[str] | None = None,
             progress: bool = True) -> dict:
    trainer = Pretrainer(cfg, resume=resume, explicit=explicit, progress=progress)
    try:
        summary = trainer.fit()
    except BaseException:
        trainer.close(finished=False)
        raise
    trainer.close()
    return summary


__all__ = ["pretrain", "Pretrainer", "RunState"]
