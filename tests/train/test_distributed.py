"""DDP on CPU (gloo, 2 processes through torchrun) against a 1-process run with the same global batch."""

import subprocess
import sys

import pytest
import torch

from unmasked.train import checkpoint as ckpt

ARGS = ["--objective", "lut", "--width", "32", "--depth", "2", "--heads", "2", "--decoder-width", "32",
        "--decoder-depth", "1", "--decoder-heads", "2", "--proj-hidden", "64", "--subset", "256",
        "--batch-size", "32", "--epochs", "1", "--num-workers", "0", "--device", "cpu", "--log-every", "2",
        "--lr", "1e-3", "--warmup-epochs", "0", "--fuse-views"]


def _single(out, *extra):
    cmd = [sys.executable, "-m", "unmasked", "pretrain", "--no-progress", "--out", str(out), *ARGS, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def _torchrun(nproc, out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "unmasked", "pretrain", "--no-progress", "--out", str(out), *ARGS, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _weights(out):
    return ckpt.load_checkpoint(out / "checkpoint.pt")


def _without_key_bias(name, t):
    """The key bias of attention gets an exactly-zero gradient (softmax ignores a shift shared by
    all keys), so AdamW turns float noise there into lr-sized steps; it cannot change any output."""
    if name.endswith("attn.qkv.bias"):
        d = t.shape[0] // 3
        return torch.cat([t[:d], t[2 * d :]])
    return t


def _assert_close(a, b):
    for k in a["objective"]:
        x, y = a["objective"][k], b["objective"][k]
        if x.is_floating_point():
            x, y = _without_key_bias(k, x), _without_key_bias(k, y)
            # The summation order differs (DDP averages two half-batch gradients): float noise only.
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-5), (k, (x - y).abs().max())
        else:
            assert torch.equal(x, y), k


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "single"
    _single(out, "--steps", "4")
    return {**_weights(out), "_dir": out}


def test_two_processes_match_one_process_with_the_same_global_batch(one_process, tmp_path, fm_root):
    out = tmp_path / "ddp"
    r = _torchrun(2, out, "--steps", "4")
    assert r.stdout.count("stopped at step 4") == 1  # rank 0 alone reports
    two = _weights(out)
    assert two["state"]["step"] == one_process["state"]["step"] == 4
    # every process's RNG state is kept (each draws drop path from its own generator)
    assert len(two["rng_ranks"]) == 2 and "rng_ranks" not in one_process
    _assert_close(two, one_process)
    # the logged losses are global means, so they match the 1-process run's
    from unmasked.train.metrics import read_jsonl

    ref = [r["loss"] for r in read_jsonl(one_process["_dir"] / "metrics.jsonl")]
    got = [r["loss"] for r in read_jsonl(out / "metrics.jsonl")]
    assert len(ref) == len(got) == 2 and all(abs(x - y) < 1e-5 for x, y in zip(ref, got)), (ref, got)


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_resume_with_a_different_number_of_processes(one_process, tmp_path, fm_root, first, then):
    out = tmp_path / "mixed"

    def run(nproc, *extra):
        return _single(out, *extra) if nproc == 1 else _torchrun(nproc, out, *extra)

    run(first, "--steps", "2")
    assert _weights(out)["state"]["step"] == 2
    run(then, "--resume", "--steps", "4")
    resumed = _weights(out)
    assert resumed["state"]["step"] == 4
    _assert_close(resumed, one_process)


def test_separate_view_calls_match_too(tmp_path, fm_root):
    """With --no-fuse-views the DDP student runs twice per step; one step must still equal the
    1-process step (later steps drift apart by float noise that AdamW amplifies where gradients
    are near zero, so one step is the sharp test)."""
    unfused = ["--no-fuse-views", "--steps", "1"]
    _single(tmp_path / "one", *unfused)
    _torchrun(2, tmp_path / "two", *unfused)
    _assert_close(_weights(tmp_path / "two"), _weights(tmp_path / "one"))


def test_dinov2_two_processes_match_one_process(tmp_path, fm_root):
    """DINOv2 under DDP: the centres are all-reduced once per step and the masks are drawn per global
    batch position, so 2 processes equal 1 (KoLeo off: it uses each process's own batch, as the
    official code does; drop path off: timm draws it from each process's own generator)."""
    dino = ["--objective", "dinov2", "--koleo-weight", "0", "--drop-path", "0",
            "--dino-heads-k", "64", "--dino-head-hidden", "64",
            "--dino-head-bottleneck", "32", "--dino-local-crops", "2", "--steps", "2"]
    _single(tmp_path / "one", *dino)
    _torchrun(2, tmp_path / "two", *dino)
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert any("center" in k for k in one["objective"])  # the centring state is part of the comparison
    _assert_close(two, one)
