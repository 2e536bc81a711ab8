import math

import torch
import torch.nn.functional as F

from unmasked.objectives.losses import cosine_distance, cross_view_loss, masked_mse


def test_masked_mse_counts_only_hidden_patches():
    target = torch.zeros(1, 4, 2)
    pred = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0], [3.0, 3.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])  # patch 2 is visible: its huge error must not count
    assert math.isclose(masked_mse(pred, target, mask).item(), (1 + 4 + 9) / 3, rel_tol=1e-6)


def test_cosine_distance_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert math.isclose(cosine_distance(a, a).item(), 0.0, abs_tol=1e-6)
    assert math.isclose(cosine_distance(a, -a).item(), 4.0, abs_tol=1e-6)
    b = torch.tensor([[0.0, 5.0], [3.0, 0.0]])
    assert math.isclose(cosine_distance(a, b).item(), 2.0, abs_tol=1e-6)


def test_cross_view_loss_matches_formula_and_pairs_views_crosswise():
    torch.manual_seed(0)
    s1, s2, t1, t2 = (torch.randn(5, 8) for _ in range(4))
    expected = 0.5 * (
        (2 - 2 * F.cosine_similarity(s1, t2, dim=-1)).mean() + (2 - 2 * F.cosine_similarity(s2, t1, dim=-1)).mean()
    )
    assert torch.allclose(cross_view_loss(s1, s2, t1, t2), expected)
    # same-view pairs are not used: making s1 equal t1 changes nothing about that term
    assert not torch.allclose(cross_view_loss(t1, s2, t1, t2), torch.tensor(0.0))
    assert torch.allclose(cross_view_loss(t2, t1, t1, t2), torch.tensor(0.0), atol=1e-6)


def test_targets_get_no_gradient():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    cosine_distance(s, t).backward()
    assert s.grad is not None and t.grad is None
