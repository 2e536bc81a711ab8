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


def test_k_larger_than_train_set_and_top5():
    train = torch.randn(8, 6)
    labels = torch.arange(8) % 7
    acc = knn_accuracy(train, labels, train, labels, num_classes=7, ks=(20,))
    assert acc[20]["top1"] >= 0 and "top5" in acc[20]
