"""DINO, iBOT and KoLeo loss formulas as plain functions (checked on hand-made tensors in tests).

Conventions follow DINOv2 (`dinov2/loss/*.py`, `dinov2/train/ssl_meta_arch.py`): student logits
are sharpened with the student temperature here; teacher probabilities arrive already centred
(or Sinkhorn-normalised) and sharpened by `targets.py`. Everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_rows(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Per row: -sum_k t_k * log_softmax(s / T_s)_k."""
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs.float() * log_p).sum(dim=-1)


def dino_loss(student_global: torch.Tensor, student_local: torch.Tensor | None, teacher_probs: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """DINO's multi-crop cross-entropy on the CLS outputs, averaged over crop pairs.

    student_global (2B, K) and teacher_probs (2B, K) are stacked [crop 1; crop 2]. Each student
    global crop is matched to the teacher's *other* global crop, each local crop (student_local,
    (N*B, K), stacked per crop) to both. Per pair the batch mean is taken; the sum over pairs is
    divided by the number of pairs, 2 + 2N.
    """
    b = teacher_probs.shape[0] // 2
    t1, t2 = teacher_probs[:b], teacher_probs[b:]
    total = cross_entropy_rows(student_global, torch.cat([t2, t1]), student_temp).sum() / b
    n_local = 0 if student_local is None else student_local.shape[0] // b
    if n_local:
        # sum over both teacher crops at once: CE(s, t1) + CE(s, t2) = CE(s, t1 + t2)
        both = (t1 + t2).repeat(n_local, 1)
        total = total + cross_entropy_rows(student_local, both, student_temp).sum() / b
    return total / (2 + 2 * n_local)


def masked_token_weights(masks: torch.Tensor) -> torch.Tensor:
    """1 / (masked tokens in its image) for each masked token, in `masks[masks]` order (iBOT)."""
    per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()
    return per_image.unsqueeze(-1).expand_as(masks)[masks]


def ibot_loss(student_masked: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float) -> torch.Tensor:
    """iBOT patch loss: per masked token cross-entropy, weighted 1 / (masked tokens in its image),
    summed and divided by the number of global-crop images (masked or not), as DINOv2 does.

    student_masked and teacher_probs are (M, K) rows for `masks[masks]`, masks is (n_images, L).
    """
    ce = cross_entropy_rows(student_masked, teacher_probs, student_temp)
    return (ce * masked_token_weights(masks)).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator: -mean log(distance to the nearest other sample).

    Rows are L2-normalised first; the neighbour is found by dot product. Always in float32
    (autocast off), as DINOv2. A batch of one has no neighbour: the loss is 0 then.
    """
    if x.shape[0] < 2:
        return x.sum() * 0.0
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            dots = x @ x.T
            dots.fill_diagonal_(-2.0)  # never pick itself (cosines are >= -1)
            nearest = dots.argmax(dim=1)
        dist = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
        return -torch.log(dist + eps).mean()
