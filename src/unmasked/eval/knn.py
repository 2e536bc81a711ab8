"""Weighted kNN classification on frozen features (the DINO protocol).

Features are L2-normalised; the k nearest training features by cosine similarity vote for their
class with weight exp(sim / T). k in {10, 20, 100, 200}, T = 0.07; k = 20 is the headline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unmasked.data.dataset import ImageData
from unmasked.eval.common import (
    evaluation_view,
    feature_precision,
    frozen_features,
    is_own_data,
    result_envelope,
    variant_name,
    write_result,
)
from unmasked.eval.pixels import cached_pixel_result
from unmasked.eval.view import EvalView
from unmasked.options import opt, positive, positive_int

KS = (10, 20, 100, 200)
TEMPERATURE = 0.07
EVAL_SIZE_HELP = ("evaluate at this input size, a multiple of the patch size; the position embedding is "
                  "resampled bicubically to the grid (default: the encoder's own size; another size writes "
                  "its own result file)")


@dataclass
class KnnSettings:
    """`unmasked eval knn`'s protocol: other k, T or input size write their own result file."""

    k: tuple[int, ...] = opt(KS, "neighbour counts; k = 20 is the headline", metavar="K", nargs="+",
                             rule=positive_int())
    temperature: float = opt(TEMPERATURE, "vote temperature T", rule=positive())
    img_size: int | None = opt(None, EVAL_SIZE_HELP, metavar="PX", rule=positive_int())


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    ks=KS,
    temperature: float = TEMPERATURE,
    chunk: int = 1024,
) -> dict[int, torch.Tensor]:
    """Class scores (N_test, C) for each k."""
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    kmax = min(max(ks), len(train))
    scores = {k: [] for k in ks}
    for i in range(0, len(test), chunk):
        sim = test[i : i + chunk] @ train.T
        top_sim, top_idx = sim.topk(kmax, dim=1)
        # exp(sim / T) overflows float32 below T ~ 0.011 (NaN votes): subtracting each query's largest
        # similarity scales its votes by a constant, which leaves the ranking alone; float64 keeps the
        # smaller weights from underflowing to a tie
        top_sim = top_sim.double()
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes = F.one_hot(train_labels[top_idx], num_classes).double() * weights.unsqueeze(-1)
        for k in ks:
            scores[k].append(votes[:, : min(k, kmax)].sum(dim=1))
    return {k: torch.cat(v) for k, v in scores.items()}


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels.unsqueeze(1)).any(dim=1).float().mean() * 100.0)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes, ks=KS,
                 temperature=TEMPERATURE) -> dict[int, dict[str, float]]:
    """{k: {"top1": %, "top5": % (only when there are more than 5 classes)}}

    Top-5 counts the min(5, k) best-voted classes: with fewer than 5 neighbours the other classes
    have no vote, and ranking them among ties would count guesses as hits."""
    scores = knn_predict(train_feats, train_labels, test_feats, num_classes, ks, temperature)
    out = {}
    for k, s in scores.items():
        res = {"top1": topk_accuracy(s, test_labels, 1)}
        if num_classes > 5:
            res["top5"] = topk_accuracy(s, test_labels, min(5, k, len(train_feats)))
        out[k] = res
    return out


def pixel_knn(ds: ImageData, view: EvalView, ks, temperature: float) -> dict:
    """kNN on raw pixels: {"results": {k: {"top1", "top5"}}, "input", "cached"}."""
    def compute(tr_x, tr_y, te_x, te_y):
        acc = knn_accuracy(tr_x, tr_y, te_x, te_y, len(ds.classes), ks, temperature)
        return {"results": {str(k): v for k, v in acc.items()}}

    # "votes" keeps results cached before the votes were computed stably (NaN below T ~ 0.011) from being reused
    return cached_pixel_result(ds, view, {"protocol": "knn", "ks": list(ks), "temperature": temperature,
                                          "votes": "shifted-float64"}, compute)


def protocol_variant(ks=KS, temperature: float = TEMPERATURE, img_size: int | None = None) -> list[str]:
    """What differs from the default protocol (k = 20 among the ks, T = 0.07, the encoder's own input
    size), as file-name parts."""
    return ([] if 20 in ks else ["k" + "-".join(map(str, ks))]) + \
        ([] if temperature == TEMPERATURE else [f"T{temperature:g}"]) + ([] if img_size is None else [f"img{img_size}"])


def result_file(ks=KS, temperature: float = TEMPERATURE, img_size: int | None = None) -> str:
    """knn.json for the default protocol on the run's own data, else the variant's own file."""
    return "knn" + "".join(f"-{p}" for p in protocol_variant(ks, temperature, img_size)) + ".json"


def run_knn(path, data: str | None = None, device: str = "auto", batch_size: int = 256, ks=KS,
            temperature: float = TEMPERATURE, num_workers: int = 0, progress: bool = True,
            img_size: int | None = None) -> dict:
    """kNN of a run's encoder on the held-out split, beside the same kNN on raw pixels; writes
    <run>/knn.json (or a variant's file) and returns it."""
    t0 = time.perf_counter()
    loaded, ds, dev, tr, te = frozen_features(path, data, device, batch_size, num_workers, progress,
                                              "kNN evaluation", img_size)
    ks = tuple(sorted(set(ks)))
    results = {}
    for kind in ("cls", "mean"):
        acc = knn_accuracy(tr[kind], tr["labels"], te[kind], te["labels"], len(ds.classes), ks, temperature)
        results[kind] = {str(k): v for k, v in acc.items()}
    head_k = 20 if 20 in ks else ks[0]
    pixels = pixel_knn(ds, evaluation_view(loaded, ds.name), ks, temperature)
    pixels["top1"] = pixels["results"][str(head_k)]["top1"]
    # what `compare` shows under "kNN k=20" is k = 20 at T = 0.07 on the encoder's own data (knn.json);
    # other settings go to their own file (knn-k1.json, knn-T0.5-on-<data>.json) and never replace it
    variant = protocol_variant(ks, temperature, loaded.eval_size)
    result = result_envelope(
        "knn", "weighted kNN, cosine similarity on L2-normalised features, weights exp(sim / T)", loaded, ds,
        file=variant_name("knn", variant, loaded, ds), default_protocol=not variant and is_own_data(loaded, ds),
        top1={kind: results[kind][str(head_k)]["top1"] for kind in results}, results=results, pixels=pixels,
        precision=feature_precision(dev), time_s=time.perf_counter() - t0,
        temperature=temperature, ks=list(ks),
        k_used={str(k): min(k, len(tr["labels"])) for k in ks},  # k above the training-set size: all of it
        headline_k=head_k,
    )
    write_result(loaded, result["file"], result)
    return result
