"""Teacher targets: the centre's update rule and timing, and Sinkhorn-Knopp's marginals."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unmasked.objectives.dino.targets import Centering, sinkhorn_knopp


def test_centre_is_an_ema_of_the_batch_mean_applied_at_the_optimiser_step():
    c = Centering(3, momentum=0.9)
    c.center.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    t = torch.tensor([[0.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    c.accumulate(t)
    assert torch.equal(c.center, torch.tensor([[1.0, 2.0, 3.0]]))  # nothing moves before the step
    c.apply_update()
    assert torch.allclose(c.center, 0.9 * torch.tensor([[1.0, 2.0, 3.0]]) + 0.1 * torch.tensor([[1.0, 2.0, 3.0]]))
    c.apply_update()  # nothing pending: unchanged
    assert torch.allclose(c.center, torch.tensor([[1.0, 2.0, 3.0]]))


def test_accumulated_micro_batches_update_the_centre_once_like_one_big_batch():
    torch.manual_seed(0)
    t = torch.randn(8, 5)
    big, micro = Centering(5), Centering(5)
    big.accumulate(t)
    big.apply_update()
    micro.accumulate(t[:4])
    micro.accumulate(t[4:])
    micro.apply_update()
    assert torch.allclose(big.center, micro.center, atol=1e-7)
    assert torch.allclose(big.center, 0.1 * t.mean(0, keepdim=True), atol=1e-7)


def test_non_finite_outputs_leave_the_centre_alone():
    c = Centering(2)
    c.accumulate(torch.tensor([[float("nan"), 1.0]]))
    c.apply_update()
    assert torch.equal(c.center, torch.zeros(1, 2))
    assert "pending" not in c.state_dict()  # only the centre is state


def test_sinkhorn_rows_and_columns_sum_to_their_marginals():
    torch.manual_seed(0)
    b, k = 12, 4
    logits = torch.randn(b, k)
    q = sinkhorn_knopp(logits, 0.5, iterations=3)
    assert torch.allclose(q.sum(dim=1), torch.ones(b), atol=1e-5)  # each sample a distribution
    # each prototype gets about B/K; exact in the limit of iterations
    q50 = sinkhorn_knopp(logits, 0.5, iterations=50)
    assert torch.allclose(q50.sum(dim=0), torch.full((k,), b / k), atol=1e-4)
    assert (q.sum(dim=0) - b / k).abs().max() < 0.3


def test_sinkhorn_spreads_a_collapsed_teacher_and_survives_large_logits():
    """Every sample prefers prototype 0: centring by marginals still uses all prototypes."""
    logits = torch.zeros(8, 4)
    logits[:, 0] = 1.0
    logits += 0.01 * torch.arange(32.0).view(8, 4)
    q = sinkhorn_knopp(logits, 0.04, iterations=20)
    assert torch.allclose(q.sum(dim=0), torch.full((4,), 2.0), atol=1e-2)
    big = sinkhorn_knopp(torch.randn(6, 5) * 100, 0.04)  # exp(2500) would overflow without the shift
    assert torch.isfinite(big).all()


def _worker(rank, world, init_file, logits, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    rows = logits[rank::world]  # the loop's layout: rank r holds rows r, r + W, ...
    q = sinkhorn_knopp(rows, 0.1)
    c = Centering(logits.shape[1])
    c.accumulate(rows)
    c.apply_update()
    gathered = [torch.zeros_like(q) for _ in range(world)]
    dist.all_gather(gathered, q)
    if rank == 0:
        torch.save({"q": gathered, "center": c.center}, out_file)
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_gloo_processes_give_the_one_process_targets_and_centre():
    torch.manual_seed(3)
    logits = torch.randn(10, 6)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.pt")
        # fork: the children need no fresh interpreter (spawn re-imports torch, ~20 s on 2 cores)
        mp.start_processes(_worker, args=(2, os.path.join(d, "init"), logits, out), nprocs=2, join=True,
                           start_method="fork")
        res = torch.load(out)
    q_single = sinkhorn_knopp(logits, 0.1)
    q_two = torch.empty_like(q_single)
    q_two[0::2], q_two[1::2] = res["q"]
    assert torch.allclose(q_two, q_single, atol=1e-6)
    c = Centering(6)
    c.accumulate(logits)
    c.apply_update()
    assert torch.allclose(res["center"], c.center, atol=1e-6)
