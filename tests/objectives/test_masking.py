import pytest
import torch

from unmasked.objectives.masking import lut_masks, num_visible, random_mask


def test_random_mask_shapes_and_counts():
    noise = torch.rand(4, 49)
    m = random_mask(noise, 0.75)
    assert m.ids_keep.shape == (4, 12) and m.ids_restore.shape == (4, 49)
    assert torch.all(m.mask.sum(1) == 37)
    # visible ids are exactly the unmasked positions
    for b in range(4):
        assert set(m.ids_keep[b].tolist()) == set((m.mask[b] == 0).nonzero().flatten().tolist())


def test_ids_restore_unshuffles():
    noise = torch.rand(2, 16)
    m = random_mask(noise, 0.5)
    shuffled = torch.argsort(noise, dim=1)
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore), torch.arange(16).expand(2, 16))


def test_lut_views_disjoint_and_same_size():
    noise = torch.rand(8, 196)
    m1, ids2 = lut_masks(noise, 0.75)
    assert m1.ids_keep.shape == ids2.shape == (8, 49)
    for b in range(8):
        assert not set(m1.ids_keep[b].tolist()) & set(ids2[b].tolist())
    # at ratio 0.5 the two views tile the image
    m1, ids2 = lut_masks(torch.rand(2, 16), 0.5)
    for b in range(2):
        assert sorted(m1.ids_keep[b].tolist() + ids2[b].tolist()) == list(range(16))


@pytest.mark.parametrize("ratio", [0.3, 0.49])
def test_lut_refuses_low_mask_ratio(ratio):
    with pytest.raises(ValueError, match="LUT needs mask ratio >= 0.5"):
        lut_masks(torch.rand(2, 16), ratio)


def test_num_visible_errors():
    assert num_visible(49, 0.75) == 12
    with pytest.raises(ValueError):
        num_visible(49, 1.0)
    with pytest.raises(ValueError, match="no visible token"):
        num_visible(4, 0.9)
