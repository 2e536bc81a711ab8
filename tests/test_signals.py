"""Signals and pipes: the demo stops on SIGTERM, a closed pipe ends quietly, Ctrl-C prints one line."""

import os
import signal
import subprocess
import sys
import time

import pytest

from unmasked.train.metrics import read_jsonl

from .data.helpers import class_folder

if os.name != "posix":  # pragma: no cover
    pytest.skip("signals are POSIX", allow_module_level=True)

UNMASKED = [sys.executable, "-m", "unmasked"]


def _wait_for_metrics(proc, metrics, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"ended before logging: {proc.communicate()[1]}")
        if metrics.exists() and read_jsonl(metrics):
            return
        time.sleep(0.05)
    pytest.fail("no metrics logged")


def test_a_closed_pipe_ends_quietly(fm_root, tmp_path):
    from unmasked.train.loop import pretrain

    from .helpers import tiny_config

    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    r, w = os.pipe()
    os.close(r)  # `| head -1` after head has exited
    try:
        p = subprocess.run(UNMASKED + ["compare", str(tmp_path / "run"), "--out", str(tmp_path / "report"),
                                       "--no-compute"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert p.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit


def test_sigterm_stops_the_demo_with_143_and_says_how_to_resume(fm_root, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen(UNMASKED + ["demo", "--out", str(out), "--device", "cpu", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_metrics(proc, out / "metrics.jsonl")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert f"continue with: unmasked pretrain --out {out} --resume, then: unmasked eval knn {out}" in stdout
    assert not (out / "knn.json").exists()  # it did not go on to the evaluation


def test_ctrl_c_with_loader_workers_prints_one_line(tmp_path):
    data = class_folder(tmp_path / "data", per_class=40, size=(32, 32))
    out = tmp_path / "run"
    args = ["pretrain", "--no-progress", "--data", str(data), "--out", str(out), "--cache-gb", "0",
            "--num-workers", "2", "--img-size", "32", "--patch-size", "8", "--model", "vit_tiny", "--width", "32",
            "--depth", "1", "--heads", "2", "--decoder-width", "32", "--decoder-depth", "1", "--decoder-heads", "2",
            "--proj-hidden", "64", "--batch-size", "8", "--epochs", "200", "--log-every", "1", "--device", "cpu"]
    proc = subprocess.Popen(UNMASKED + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's job
    _wait_for_metrics(proc, out / "metrics.jsonl")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the main process and every worker
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "interrupted by SIGINT: checkpoint saved" in stdout
