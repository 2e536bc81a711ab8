import torch

from unmasked.rng import BatchRandom, mix_seed


def test_seed_mixing_is_stable_and_distinct():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert len({mix_seed(0, s, m) for s in range(50) for m in range(4)}) == 200


def test_rank_rows_partition_the_global_draw():
    full = BatchRandom(7, 3, 1, 8).uniform(5)
    parts = [BatchRandom(7, 3, 1, 8, rank=r, world=4).uniform(5) for r in range(4)]
    for r in range(4):
        assert torch.equal(parts[r], full[r::4])


def test_shared_permutation_equal_on_all_ranks():
    a = BatchRandom(1, 1, 0, 4, rank=0, world=2).shared_permutation(6)
    b = BatchRandom(1, 1, 0, 4, rank=1, world=2).shared_permutation(6)
    assert torch.equal(a, b)
