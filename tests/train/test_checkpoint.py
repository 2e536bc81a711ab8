import pytest
import torch

from unmasked import files
from unmasked.errors import UserError
from unmasked.train import checkpoint as ckpt


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"step": 1})

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        files.atomic_write(path, crash)
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        ckpt.load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(1)}, foreign)
    with pytest.raises(UserError, match="not an unmasked checkpoint"):
        ckpt.load_checkpoint(foreign)
    with pytest.raises(UserError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_a_zero_filled_checkpoint_does_not_repeat_the_weights_only_advice(tmp_path):
    zeros = tmp_path / "checkpoint.pt"
    zeros.write_bytes(bytes(4096))  # what a crashed file system can leave
    with pytest.raises(UserError) as e:
        ckpt.load_checkpoint(zeros)
    msg = str(e.value)
    assert "cannot be read (not a zip archive as torch.save writes: truncated, zero-filled" in msg
    assert "weights_only" not in msg and "\n" not in msg


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        files.atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_each_process_resumes_its_own_rng_state_when_the_count_matches():
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(ckpt.rng_state())
    saved = {"rng": states[0], "rng_ranks": states}
    assert ckpt.rng_state_for(saved, 1, 2) is states[1]
    assert ckpt.rng_state_for(saved, 0, 2) is states[0]
    # another process count, or a 1-process checkpoint: the saved (rank 0) state
    assert ckpt.rng_state_for(saved, 2, 3) is states[0]
    assert ckpt.rng_state_for({"rng": states[0]}, 0, 1) is states[0]
    ckpt.set_rng_state(ckpt.rng_state_for(saved, 1, 2))
    assert torch.equal(torch.get_rng_state(), states[1]["torch"])
