"""Exact values of the analysis definitions (attention distance, NMI, RankMe), computed by hand."""

import math

import pytest
import torch

from unmasked.analysis.distance import grid_distances, mean_attention_distance
from unmasked.analysis.nmi import attention_nmi
from unmasked.analysis.spectrum import rankme, singular_values


def uniform(n, self_included=True):
    a = torch.ones(n, n) if self_included else 1 - torch.eye(n)
    return a / a.sum(-1, keepdim=True)


def neighbours(grid, radius_fn):
    d = grid_distances(grid, 1)
    a = radius_fn(d).double()
    return a / a.sum(-1, keepdim=True)


@pytest.mark.parametrize("grid,patch,expected,expected_no_self", [(14, 16, 116.492, 117.090), (7, 4, 14.438, 14.739)])
def test_uniform_attention_distance(grid, patch, expected, expected_no_self):
    assert math.isclose(float(mean_attention_distance(uniform(grid**2), grid, patch)), expected, abs_tol=5e-4)
    assert math.isclose(float(mean_attention_distance(uniform(grid**2, False), grid, patch)), expected_no_self,
                        abs_tol=5e-4)


def test_small_grid_identity_and_neighbours():
    assert math.isclose(float(mean_attention_distance(uniform(4), 2, 16)), 16 * (2 + math.sqrt(2)) / 4, rel_tol=1e-9)
    assert float(mean_attention_distance(torch.eye(196), 14, 16)) == 0.0
    four = neighbours(14, lambda d: (d == 1).double())
    assert math.isclose(float(mean_attention_distance(four, 14, 16)), 16.0, rel_tol=1e-9)


@pytest.mark.parametrize("grid,patch,expected", [(14, 16, 16.698), (7, 4, 4.054)])
def test_three_by_three_window(grid, patch, expected):
    win = neighbours(grid, lambda d: (d <= math.sqrt(2) + 1e-9).double())
    assert math.isclose(float(mean_attention_distance(win, grid, patch)), expected, abs_tol=5e-4)


def test_per_head_batch_shapes():
    a = uniform(49).expand(3, 2, 49, 49)
    assert mean_attention_distance(a, 7, 4).shape == (3, 2)


def test_rankme_exact_values():
    assert math.isclose(rankme(torch.eye(768)), 768.33, abs_tol=5e-3)
    rank1 = torch.outer(torch.randn(768, dtype=torch.float64), torch.randn(768, dtype=torch.float64))
    assert math.isclose(rankme(rank1), 1.001, abs_tol=5e-4)
    ten = torch.zeros(768, 768, dtype=torch.float64)
    ten[range(10), range(10)] = 3.0
    assert math.isclose(rankme(ten), 10.01, abs_tol=5e-3)


def test_spectrum_is_centred_and_sorted():
    x = torch.randn(500, 8) + 100.0  # a large common offset must not dominate the centred spectrum
    s = singular_values(x)
    assert torch.all(s[:-1] >= s[1:]) and s[0] < 100


def test_nmi_exact_values():
    assert abs(float(attention_nmi(uniform(196)))) < 1e-9
    assert math.isclose(float(attention_nmi(torch.eye(196))), 1.0, abs_tol=1e-9)
    perm = torch.eye(196)[torch.randperm(196)]
    assert math.isclose(float(attention_nmi(perm)), 1.0, abs_tol=1e-9)
    half = 0.5 * torch.eye(196) + 0.5 * uniform(196)
    assert math.isclose(float(attention_nmi(half)), 0.3717, abs_tol=5e-5)


def test_figure_examples_take_the_classes_in_turn():
    from unmasked.analysis.analyze import across_classes

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])  # a sorted folder
    assert across_classes(labels, 4).tolist() == [0, 4, 6, 1]
    assert across_classes(labels, 20).tolist() == [0, 4, 6, 1, 5, 7, 2, 8, 3]
