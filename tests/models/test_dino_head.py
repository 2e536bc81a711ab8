import torch

from unmasked.models.dino_head import DINOHead, WeightNormLinear


def test_weight_norm_rows_have_norm_g():
    layer = WeightNormLinear(8, 5)
    with torch.no_grad():
        layer.weight_g.copy_(torch.arange(1.0, 6.0).view(5, 1))
        layer.weight_v.mul_(7.0)  # the scale of v does not matter
    eye = torch.eye(8)
    w = layer(eye).T  # (5, 8): the effective weight
    assert torch.allclose(w.norm(dim=1), torch.arange(1.0, 6.0), atol=1e-5)


def test_head_shape_and_logits_bounded_by_the_prototype_norms():
    head = DINOHead(32, 100, hidden_dim=64, bottleneck_dim=16)
    out = head(torch.randn(10, 32) * 50)
    assert out.shape == (10, 100)
    # L2-normalised bottleneck times unit-norm prototypes (g = 1 at init): cosines
    assert out.abs().max() <= 1.0 + 1e-5
    names = {n for n, _ in head.named_parameters()}
    assert {"last_layer.weight_g", "last_layer.weight_v"} <= names
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in head.mlp if hasattr(m, "bias"))
