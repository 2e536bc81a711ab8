import torch

from unmasked.eval.linear import evaluate_probe, fold_batchnorm, probe_batch_size, train_probe


def _separable(n=600, d=16, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 4 + 10  # offset: the BatchNorm has work to do
    y = torch.arange(n) % c
    return centres[y] + torch.randn(n, d, generator=g), y


def test_probe_learns_separable_features_and_folding_keeps_predictions():
    x, y = _separable()
    head, info = train_probe(x, y, 4, epochs=20, warmup_epochs=2)
    assert info["optimizer"] == "SGD" and info["batch_size"] == probe_batch_size(600)
    assert evaluate_probe(head, x, y, 4)["top1"] > 95
    folded = fold_batchnorm(head)
    with torch.no_grad():
        ref = head(x)
        out = folded(x)
    assert torch.equal(ref.argmax(1), out.argmax(1))
    assert torch.allclose(ref, out, atol=1e-4)


def test_probe_batch_size_rule():
    assert probe_batch_size(60000) == 2048  # >= 16 steps per epoch
    assert probe_batch_size(10_000_000) == 16384  # MAE's batch, capped
    assert probe_batch_size(100) == 16


def test_lars_scales_weight_steps_by_the_trust_ratio_and_not_bias_steps():
    from unmasked.eval.linear import linear_head, probe_optimizer

    torch.manual_seed(0)
    head = linear_head(16, 4)
    fc = head[-1]
    w0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    opt = probe_optimizer(head, lr=0.5, kind="lars")
    head(torch.randn(32, 16)).logsumexp(1).mean().backward()
    gb = fc.bias.grad.clone()
    opt.step()
    # first step: the update is lr * 0.001 * |w| / |g| * g, whatever the gradient's size
    step = (w0 - fc.weight.detach()).norm()
    assert torch.isclose(step, 0.5 * 0.001 * w0.norm(), rtol=1e-4), (step, w0.norm())
    assert torch.allclose(b0 - fc.bias.detach(), 0.5 * gb, atol=1e-7)
