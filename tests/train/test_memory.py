"""The memory preflight: its estimate against a measured step, refusals, --accum-steps auto, OOM."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from unmasked.cli import main
from unmasked.errors import TrainingStopped, UserError
from unmasked.objectives import registry
from unmasked.train import checkpoint as ckpt
from unmasked.train import memory
from unmasked.train.loop import Pretrainer, pretrain

from ..helpers import SMALL_HEADS, tiny_config

MEASURE = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from helpers import tiny_config
    from unmasked.train import memory
    from unmasked.train.loop import Pretrainer
    cfg = tiny_config(Path(tempfile.mkdtemp()), objective={objective!r}, width=192, depth=6, heads=4,
                      proj_hidden=256, batch_size=64, subset=128, memory_check=False,
                      dino_heads_k=1024, dino_head_hidden=512, dino_head_bottleneck=128)
    t = Pretrainer(cfg, progress=False)
    batches = t.batches.epoch(0, 0)
    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from the current size
    before = status("VmRSS:")
    t.train_step(0, batches)
    peak = status("VmHWM:")
    # probed after the step: memory the probe frees stays with the allocator and would hide the step's
    mem = memory.measure(t.objective, t.augments, channels=t.data.channels, base_size=t.data.base_size,
                         device=t.device, autocast_dtype=None)
    print(json.dumps({{"estimate": mem.need(64), "measured": peak - before}}))
""")


@pytest.mark.parametrize("objective", registry.names())
def test_estimate_is_close_above_a_measured_first_step(fm_root, tmp_path, objective):
    """A fresh process: peak resident memory growth of the first step (activations, gradients and
    AdamW state) against the preflight's estimate for that step."""
    import pathlib

    tests = str(pathlib.Path(__file__).parents[1])
    r = subprocess.run([sys.executable, "-c", MEASURE.format(tests=tests, objective=objective)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["measured"] > 20e6  # activations dominate, not allocator noise
    assert got["measured"] <= got["estimate"] <= 2.5 * got["measured"], got


def _short_of_memory(monkeypatch, free, fixed=1e6, per_image=1e6, per_image_checkpointed=None):
    """`free` bytes on the device, and a step estimated as fixed + 1.4 x per_image x micro-batch."""
    def fake_measure(*a, grad_checkpoint=None, **kw):
        checkpointed = per_image if per_image_checkpointed is None else per_image_checkpointed
        return memory.StepMemory(fixed=fixed, per_image=checkpointed if grad_checkpoint else per_image)

    monkeypatch.setattr(memory, "measure", fake_measure)
    monkeypatch.setattr(memory, "available_bytes", lambda device: free)


def test_a_step_that_does_not_fit_is_refused_with_the_options_that_fit(fm_root, tmp_path, monkeypatch):
    _short_of_memory(monkeypatch, 20e6, per_image_checkpointed=1e6)  # fits up to 12 images
    with pytest.raises(UserError) as e:
        pretrain(tiny_config(tmp_path, steps=1), progress=False)
    msg = str(e.value)
    assert "out of memory ahead: a step with micro-batches of 32 image(s)" in msg
    assert "needs about 46 MB: 1 MB of gradients and optimiser state and 1 MB of activations per image" in msg
    assert "the host has 20 MB free" in msg
    assert "--accum-steps 4 (micro-batches of 8, the same global batch of 32; about 12 MB)" in msg
    assert "--batch-size 8 (" in msg
    assert "--grad-checkpoint" not in msg  # the fake says it would not help
    assert "--accum-steps auto" in msg and "--no-memory-check" in msg
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything is written


def test_grad_checkpoint_is_offered_when_it_fits(fm_root, tmp_path, monkeypatch):
    # 4 blocks, whose activations are 99% of the total: checkpointed, ~half remains (two blocks' worth)
    _short_of_memory(monkeypatch, 30e6, per_image_checkpointed=0.01e6)
    with pytest.raises(UserError, match=r"--grad-checkpoint \(recomputes activations in the backward pass; about "
                                        r"24 MB\)"):
        pretrain(tiny_config(tmp_path, steps=1, depth=4), progress=False)


def test_the_real_probe_of_the_tiny_model_refuses_too(fm_root, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1e6)
    with pytest.raises(UserError, match=r"out of memory ahead: .*the host has 1 MB free"):
        pretrain(tiny_config(tmp_path, steps=1), progress=False)


def test_when_nothing_fits_a_smaller_model_is_named(fm_root, tmp_path, monkeypatch):
    _short_of_memory(monkeypatch, 2e6)
    with pytest.raises(UserError, match=r"nothing smaller of these fits: choose a smaller --model"):
        pretrain(tiny_config(tmp_path, steps=1), progress=False)


def test_accum_steps_auto_keeps_the_global_batch_and_says_so(fm_root, tmp_path, monkeypatch, capsys):
    _short_of_memory(monkeypatch, 20e6)
    summary = pretrain(tiny_config(tmp_path, steps=2, accum_steps="auto"), progress=False)
    assert ("unmasked: note: --accum-steps auto: 4 micro-batches of 8 images per step (the global batch stays 32)"
            in capsys.readouterr().err)
    assert summary["images_seen"] == 64
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["accum_steps"], saved["batch_size"]) == (4, 32)


def test_accum_steps_auto_from_the_command_line(fm_root, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "--no-progress", "--out", str(out), "--subset", "64", "--batch-size", "16", "--steps", "1",
            "--width", "32", "--depth", "1", "--heads", "2", "--decoder-width", "32", "--decoder-depth", "1",
            "--decoder-heads", "2", "--proj-hidden", "64", "--num-workers", "0", "--device", "cpu"]
    assert main(args + ["--accum-steps", "auto"]) == 0  # fits: stays 1
    assert json.loads((out / "config.json").read_text())["accum_steps"] == 1
    with pytest.raises(SystemExit) as e:
        main(args + ["--accum-steps", "some"])
    assert e.value.code == 2
    assert "expected a positive integer or 'auto', got 'some'" in capsys.readouterr().err


def test_no_memory_check_skips_the_estimate(fm_root, tmp_path, monkeypatch):
    _short_of_memory(monkeypatch, 1e5)
    summary = pretrain(tiny_config(tmp_path, steps=1, memory_check=False), progress=False)
    assert summary["steps"] == 1


def test_the_preflight_changes_nothing_in_training(fm_root, tmp_path):
    """Probes run the forward pass (BatchNorm statistics, drop path's random numbers): all restored."""
    weights = []
    for check in (True, False):
        pretrain(tiny_config(tmp_path / str(check), steps=3, drop_path=0.1, memory_check=check), progress=False)
        weights.append(ckpt.load_checkpoint(tmp_path / str(check) / "run" / "checkpoint.pt")["objective"])
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_an_out_of_memory_error_in_training_is_named_and_the_checkpoint_kept(fm_root, tmp_path, monkeypatch):
    real = Pretrainer.train_step

    def oom_at_step_3(self, step, micro_batches):
        if step == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, step, micro_batches)

    monkeypatch.setattr(Pretrainer, "train_step", oom_at_step_3)
    with pytest.raises(TrainingStopped, match=r"out of memory at step 3 \(OutOfMemoryError: CUDA out of memory.*\) "
                                              r"with micro-batches of 32 image\(s\).*the last good checkpoint .* is "
                                              r"kept\. To fit: --accum-steps 2 .*--batch-size 16; --grad-checkpoint"):
        pretrain(tiny_config(tmp_path, save_every_steps=2), progress=False)
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 2


def test_memory_error_on_the_host_is_named_too(fm_root, tmp_path, monkeypatch):
    def no_memory(self, step, micro_batches):
        raise MemoryError()

    monkeypatch.setattr(Pretrainer, "train_step", no_memory)
    with pytest.raises(TrainingStopped, match=r"out of memory at step 0 \(MemoryError: no details\).*no checkpoint "
                                              r"had been written yet"):
        pretrain(tiny_config(tmp_path), progress=False)


def test_available_memory_is_read_from_the_host():
    free = memory.available_bytes(torch.device("cpu"))
    assert free is not None and free > 0


def _fake_cgroups(root, mounts, cgroup, files):
    """A fake filesystem root: /proc/self/mountinfo and /proc/self/cgroup, and cgroup files."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text("".join(
        f"{30 + i} 23 0:{30 + i} {mroot} {point} rw,relatime - {fs} {fs} rw{opts}\n"
        for i, (mroot, point, fs, opts) in enumerate(mounts)))
    (root / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


NO_LIMIT_V1 = "9223372036854771712\n"


def test_a_cgroup_v1_limit_on_a_parent_is_read(tmp_path):
    """1,600 MB on the parent of this process's cgroup (v1, a batch scheduler's job), none on its own."""
    mem = "sys/fs/cgroup/memory"
    root = _fake_cgroups(tmp_path, [("/", "/sys/fs/cgroup/cpu", "cgroup", ",cpu"),
                                    ("/", "/sys/fs/cgroup/memory", "cgroup", ",memory")],
                         "4:memory:/job42/step0\n3:cpu:/\n0::/\n",
                         {f"{mem}/memory.limit_in_bytes": NO_LIMIT_V1,
                          f"{mem}/job42/memory.limit_in_bytes": "1600000000\n",
                          f"{mem}/job42/memory.usage_in_bytes": "300000000\n",
                          f"{mem}/job42/step0/memory.limit_in_bytes": NO_LIMIT_V1,
                          f"{mem}/job42/step0/memory.usage_in_bytes": "250000000\n",
                          f"{mem}/job42/step0/memory.stat": "cache 100000000\ntotal_inactive_file 50000000\n"})
    assert memory._cgroup_available(root) == 1_300_000_000
    # the kernel's hierarchical limit is read too, when the files above are out of reach
    (root / mem / "job42/memory.limit_in_bytes").unlink()
    (root / mem / "job42/step0/memory.stat").write_text(
        "hierarchical_memory_limit 1600000000\ntotal_inactive_file 50000000\n")
    assert memory._cgroup_available(root) == 1_600_000_000 - 200_000_000


def test_a_cgroup_v2_limit_nested_and_a_container_mount_are_read(tmp_path):
    v2 = "sys/fs/cgroup"
    root = _fake_cgroups(tmp_path / "a", [("/", "/sys/fs/cgroup", "cgroup2", "")], "0::/user.slice/job/leaf\n",
                         {f"{v2}/user.slice/memory.max": "max\n",
                          f"{v2}/user.slice/job/memory.max": "2000000000\n",
                          f"{v2}/user.slice/job/memory.current": "500000000\n",
                          f"{v2}/user.slice/job/leaf/memory.max": "max\n",
                          f"{v2}/user.slice/job/leaf/memory.current": "400000000\n",
                          f"{v2}/user.slice/job/leaf/memory.stat": "anon 1\ninactive_file 100000000\n"})
    assert memory._cgroup_available(root) == 1_500_000_000
    # a container: its own cgroup is mounted at /sys/fs/cgroup, /proc/self/cgroup says "/"
    root = _fake_cgroups(tmp_path / "b", [("/docker/abc", "/sys/fs/cgroup", "cgroup2", "")], "0::/\n",
                         {f"{v2}/memory.max": "1600000000\n", f"{v2}/memory.current": "100000000\n"})
    assert memory._cgroup_available(root) == 1_500_000_000
    root = _fake_cgroups(tmp_path / "c", [("/", "/sys/fs/cgroup", "cgroup2", "")], "0::/\n",
                         {f"{v2}/memory.max": "max\n"})
    assert memory._cgroup_available(root) is None
    assert memory._cgroup_available(tmp_path / "nothing") is None  # no /proc: no limit known


def test_the_preflight_refuses_under_a_cgroup_limit(fm_root, tmp_path, monkeypatch):
    mem = "sys/fs/cgroup/memory"
    root = _fake_cgroups(tmp_path / "fs", [("/", "/sys/fs/cgroup/memory", "cgroup", ",memory")],
                         "4:memory:/job\n", {f"{mem}/job/memory.limit_in_bytes": "20000000\n",
                                             f"{mem}/job/memory.usage_in_bytes": "0\n"})
    monkeypatch.setattr(memory, "CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "measure", lambda *a, grad_checkpoint=None, **kw: memory.StepMemory(1e6, 1e6))
    with pytest.raises(UserError, match=r"the host \(under this process's cgroup memory limit\) has 20 MB free"):
        pretrain(tiny_config(tmp_path, steps=1), progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("batch, accum", [(1, "auto"), (8, 8), (1, 1)])
def test_a_lut_micro_batch_of_one_image_is_refused_up_front(fm_root, tmp_path, batch, accum):
    """LUT's projector BatchNorm cannot train on one image ("Expected more than 1 value per channel")."""
    with pytest.raises(UserError) as e:
        pretrain(tiny_config(tmp_path, objective="lut", batch_size=batch, accum_steps=accum, steps=1),
                 progress=False)
    msg = str(e.value)
    assert "= 1 image per micro-batch: LUT's projector BatchNorm needs at least 2 images per micro-batch" in msg
    assert ("--accum-steps 4 or fewer" if batch == 8 else "--batch-size 2 or more") in msg
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_accum_steps_auto_never_splits_lut_into_single_images(fm_root, tmp_path, monkeypatch):
    assert memory.fitting_accum_steps(memory.StepMemory(fixed=1e6, per_image=1e6), 2.7e6, 8, 1) == 8
    assert memory.fitting_accum_steps(memory.StepMemory(fixed=1e6, per_image=1e6), 2.7e6, 8, 1, min_micro=2) is None
    # two processes: the floor of all processes' images (SyncBatchNorm) allows 4 micro-batches of 2
    # (1 image each per process); a per-process floor (KoLeo) stops at 2 micro-batches of 4
    big = memory.StepMemory(fixed=1e6, per_image=1e6)
    assert memory.fitting_accum_steps(big, 2.5e6, 8, 2, min_micro=2) == 4
    assert memory.fitting_accum_steps(big, 2.5e6, 8, 2, min_micro=2, floor_per_process=True) is None
    assert memory.fitting_accum_steps(big, 3.9e6, 8, 2, min_micro=2, floor_per_process=True) == 2
    _short_of_memory(monkeypatch, 3e6)  # only a micro-batch of one image would fit
    with pytest.raises(UserError) as e:
        pretrain(tiny_config(tmp_path, objective="lut", batch_size=8, accum_steps="auto", steps=1), progress=False)
    assert "nothing smaller of these fits" in str(e.value) and "--accum-steps 8" not in str(e.value)
    assert "--batch-size 1 " not in str(e.value)
    _short_of_memory(monkeypatch, 3e6)
    pretrain(tiny_config(tmp_path / "mae", objective="mae", batch_size=8, accum_steps="auto", steps=1),
             progress=False)  # MAE has no BatchNorm: one image per micro-batch is fine
    assert json.loads((tmp_path / "mae" / "run" / "config.json").read_text())["accum_steps"] == 8


@pytest.mark.parametrize("batch, accum", [(1, "auto"), (8, 8)])
def test_a_dinov2_micro_batch_of_one_image_is_refused_up_front(fm_root, tmp_path, batch, accum):
    """KoLeo finds each image's nearest neighbour among the others of its view: one image has none."""
    with pytest.raises(UserError) as e:
        pretrain(tiny_config(tmp_path, objective="dinov2", batch_size=batch, accum_steps=accum, steps=1,
                             **SMALL_HEADS), progress=False)
    msg = str(e.value)
    assert "= 1 image per micro-batch: DINOv2's KoLeo term" in msg and "needs at least 2 images" in msg
    assert ("--accum-steps 4 or fewer" if batch == 8 else "--batch-size 2 or more") in msg
    assert msg.endswith("or --koleo-weight 0")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_accum_steps_auto_never_splits_dinov2_into_single_images_unless_koleo_is_off(fm_root, tmp_path,
                                                                                     monkeypatch):
    _short_of_memory(monkeypatch, 3e6)  # only a micro-batch of one image would fit
    with pytest.raises(UserError) as e:
        pretrain(tiny_config(tmp_path, objective="dinov2", batch_size=8, accum_steps="auto", steps=1,
                             **SMALL_HEADS), progress=False)
    msg = str(e.value)
    assert "Options that fit: --koleo-weight 0 --accum-steps 8 (micro-batches of 1, which only --koleo-weight 0 " \
           "allows" in msg, msg
    assert "; --accum-steps 8 " not in msg and "--batch-size 1 " not in msg
    assert not (tmp_path / "run" / "config.json").exists()
    _short_of_memory(monkeypatch, 3e6)
    pretrain(tiny_config(tmp_path / "off", objective="dinov2", batch_size=8, accum_steps="auto", steps=1,
                         koleo_weight=0.0, **SMALL_HEADS), progress=False)
    assert json.loads((tmp_path / "off" / "run" / "config.json").read_text())["accum_steps"] == 8
