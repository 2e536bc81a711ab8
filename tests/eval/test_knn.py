import math

import torch

from unmasked.eval.knn import knn_accuracy, knn_predict


def test_one_hot_features_give_perfect_accuracy_for_every_k():
    """Test vectors equal to a training vector of their class -> 100% for every k."""
    classes = 4
    train_labels = torch.arange(classes).repeat_interleave(60)
    train = torch.nn.functional.one_hot(train_labels, classes).float()
    test_labels = torch.tensor([0, 1, 2, 3, 2, 1])
    test = torch.nn.functional.one_hot(test_labels, classes).float()
    acc = knn_accuracy(train, train_labels, test, test_labels, classes, ks=(10, 20, 100, 200))
    assert all(math.isclose(v["top1"], 100.0) for v in acc.values())


def test_weighted_vote_prefers_closer_neighbours():
    # Two near neighbours of class 1 outvote three far ones of class 0 thanks to exp(sim / T).
    train = torch.tensor([[1.0, 0.02], [1.0, -0.02], [0.2, 1.0], [0.25, 1.0], [0.3, 1.0]])
    labels = torch.tensor([1, 1, 0, 0, 0])
    test = torch.tensor([[1.0, 0.0]])
    scores = knn_predict(train, labels, test, 2, ks=(5,))
    assert scores[5].argmax(1).item() == 1
    # with a very high temperature the vote is a plain majority: class 0 wins
    scores = knn_predict(train, labels, test, 2, ks=(5,), temperature=1e6)
    assert scores[5].argmax(1).item() == 0


def _float64_reference(train, labels, test, classes, k, temperature):
    """The vote straight from the definition, in float64 (exp(sim / T) fits up to sim / T ~ 709)."""
    train = torch.nn.functional.normalize(train.double(), dim=1)
    test = torch.nn.functional.normalize(test.double(), dim=1)
    sim, idx = (test @ train.T).topk(k, dim=1)
    votes = torch.nn.functional.one_hot(labels[idx], classes).double() * (sim / temperature).exp().unsqueeze(-1)
    return votes.sum(1)


def test_a_small_temperature_gives_the_float64_votes_not_nan():
    """exp(sim / 0.01) overflows float32: the votes (scaled per query) still match a float64 reference."""
    gen = torch.Generator().manual_seed(0)
    classes, k = 5, 20
    labels = torch.arange(200) % classes
    centres = torch.randn(classes, 16, generator=gen)
    train = centres[labels] + 0.8 * torch.randn(200, 16, generator=gen)
    test_labels = torch.arange(60) % classes
    test = centres[test_labels] + 0.8 * torch.randn(60, 16, generator=gen)
    for temperature in (0.07, 0.01, 0.005, 0.002):
        got = knn_predict(train, labels, test, classes, ks=(k,), temperature=temperature)[k]
        ref = _float64_reference(train, labels, test, classes, k, temperature)
        assert torch.isfinite(got).all()
        assert torch.equal(got.argmax(1), ref.argmax(1)), temperature
        torch.testing.assert_close(got.double() / got.double().sum(1, keepdim=True),
                                   ref / ref.sum(1, keepdim=True), rtol=1e-5, atol=1e-9)
        acc = knn_accuracy(train, labels, test, test_labels, classes, ks=(k,), temperature=temperature)
        ref_acc = float((ref.argmax(1) == test_labels).double().mean() * 100)
        assert math.isclose(acc[k]["top1"], ref_acc), temperature
    # far below what float64 could hold without the shift: the nearest neighbour decides
    got = knn_predict(train, labels, test, classes, ks=(k,), temperature=1e-6)[k]
    nearest = labels[(torch.nn.functional.normalize(test, dim=1)
                      @ torch.nn.functional.normalize(train, dim=1).T).argmax(1)]
    assert torch.isfinite(got).all() and torch.equal(got.argmax(1), nearest)


def test_k_larger_than_train_set_and_top5():
    train = torch.randn(8, 6)
    labels = torch.arange(8) % 7
    acc = knn_accuracy(train, labels, train, labels, num_classes=7, ks=(20,))
    assert acc[20]["top1"] >= 0 and "top5" in acc[20]


def test_knn_at_another_input_size_interpolates_positions_and_writes_its_own_file(tmp_path):
    """The encoder runs at 32 px (an 8 x 8 grid instead of 4 x 4); knn.json stays the default protocol's."""
    import json

    from tests.data.helpers import class_folder
    from tests.helpers import tiny_config
    from unmasked.cli import main
    from unmasked.train.loop import pretrain

    data = class_folder(tmp_path / "imgs", per_class=12, size=(16, 16))
    pretrain(tiny_config(tmp_path, objective="mae", data=str(data), img_size=16, patch_size=4, subset=None,
                         batch_size=8, steps=1), progress=False)
    run = tmp_path / "run"
    assert main(["eval", "knn", str(run), "--img-size", "32", "--no-progress", "--k", "5", "20"]) == 0
    r = json.loads((run / "knn-img32.json").read_text())
    assert r["transform"]["img_size"] == 32 and not r["default_protocol"] and not (run / "knn.json").exists()
    assert 0 <= r["top1"]["cls"] <= 100
    assert main(["eval", "knn", str(run), "--img-size", "30", "--no-progress"]) == 2  # not a multiple of 4
