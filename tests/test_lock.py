"""One process per run folder: a second one is refused naming the holder; a crash leaves no lock."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from unmasked.cli import main
from unmasked.errors import UserError
from unmasked.lock import LOCK_FILE, in_use_by, run_lock
from unmasked.train.loop import pretrain

from .helpers import tiny_config

HOLD = textwrap.dedent("""
    import sys, time
    from unmasked.lock import run_lock
    with run_lock(sys.argv[1], "pretrain"):
        print("held", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path/run."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()


def test_a_second_pretrain_into_the_same_folder_is_refused_naming_the_pid(fm_root, tmp_path, holder):
    folder, proc = holder
    with pytest.raises(UserError, match=rf"{folder} is in use by another unmasked process \(pid {proc.pid}, "
                                        r"pretrain\).*choose another folder for this pretrain"):
        pretrain(tiny_config(tmp_path, steps=1), progress=False)
    assert not (folder / "config.json").exists()


def test_evaluations_that_write_into_the_run_folder_are_refused_too(tmp_path, holder, capsys):
    folder, proc = holder
    for argv in (["eval", "knn", str(folder)], ["eval", "linear", str(folder / "checkpoint.pt")],
                 ["analyze", str(folder)], ["demo", "--out", str(folder)]):
        assert main(argv + ["--no-progress"]) == 2, argv
        assert f"pid {proc.pid}" in capsys.readouterr().err, argv
    assert in_use_by(folder) == f"pid {proc.pid}, pretrain"


def test_a_lock_left_by_a_killed_process_does_not_block(fm_root, tmp_path, holder):
    folder, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / LOCK_FILE).exists() and in_use_by(folder) is None
    assert pretrain(tiny_config(tmp_path, steps=1), progress=False)["steps"] == 1
    assert f"pid {os.getpid()}" in (folder / LOCK_FILE).read_text()  # the last holder, for messages


def test_the_lock_is_released_when_the_run_ends_and_reentrant_in_one_process(fm_root, tmp_path):
    pretrain(tiny_config(tmp_path, steps=1), progress=False)
    folder = tmp_path / "run"
    with run_lock(folder, "demo"):  # the demo holds it while pretraining and evaluating
        pretrain(tiny_config(tmp_path, steps=2), resume=True, explicit={"out", "steps"}, progress=False)
    r = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", "pass"), str(folder)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "held" in r.stdout, r.stderr


def test_a_read_only_run_folder_is_evaluated_without_a_lock(tmp_path, monkeypatch):
    import errno

    import unmasked.lock as lock_module

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(lock_module.os, "open", read_only)
    with run_lock(folder, "eval knn", must_write=False) as lock:
        assert not lock.held  # nothing can be written there, so nothing can be mixed up
    with pytest.raises(UserError, match=r"the run folder is not writable: cannot create its lock file .lock "
                                        r"\(Read-only file system\)"):
        with run_lock(folder, "pretrain"):
            pass
    monkeypatch.undo()
    with run_lock(tmp_path / "missing", "eval knn", must_write=False):
        pass
    assert not (tmp_path / "missing").exists()  # a typo in RUN creates no folder
