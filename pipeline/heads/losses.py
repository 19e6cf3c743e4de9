"""Training losses over a (B, B) score matrix whose diagonal holds the matching pairs (row i = text i).

- ``max_margin_ranking_loss``: the bidirectional max-margin ranking loss of MoEE / CE / MMT (their
  ``MaxMarginRankingLoss`` with ``fix_norm=True``): the mean, over both directions and over every off-diagonal
  negative, of ``relu(margin - s_ii + s_ij)`` (text i against video j) and ``relu(margin - s_ii + s_ji)`` (video i
  against text j), i.e. 2·B·(B-1) hinge terms. ``fix_norm=False`` keeps the diagonal terms (each equal to
  ``relu(margin)``) in the mean over 2·B², as the reference does.
- ``hardest_negative_loss``: VSE++'s max-violation loss (Faghri et al. 2018; the public T2VLAD port's
  ``ContrastiveLoss`` with ``max_violation=True, topk=1``): per text i the largest ``relu(margin - s_ii + s_ij)``
  over the videos j ≠ i, per video j the largest ``relu(margin - s_jj + s_ij)`` over the texts i ≠ j, each
  direction averaged over the batch, the two directions summed.
- ``symmetric_infonce``: cross-entropy of each row and each column against its diagonal entry on
  ``logits = scores / temperature``; ``reduction="sum"`` adds the two directions (MGFI eq. 14),
  ``"mean"`` averages them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.errors import ConfigError


def _check_square(scores: Tensor, name: str) -> int:
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] == 0:
        raise ConfigError(
            f"{name}: scores must be a non-empty square (B, B) matrix, got {tuple(scores.shape)}"
        )
    return int(scores.shape[0])


def max_margin_ranking_loss(scores: Tensor, margin: float, fix_norm: bool = True) -> Tensor:
    """Bidirectional hinge loss on a (B, B) text×video score matrix (see the module docstring)."""
    n = _check_square(scores, "max_margin_ranking_loss")
    positive = scores.diagonal().unsqueeze(1)
    text_side = F.relu(margin - positive + scores)
    video_side = F.relu(margin - positive + scores.t())
    if not fix_norm:
        return torch.cat([text_side.reshape(-1), video_side.reshape(-1)]).mean()
    if n == 1:
        return scores.sum() * 0.0
    keep = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    return torch.cat([text_side[keep], video_side[keep]]).mean()


def hardest_negative_loss(scores: Tensor, margin: float) -> Tensor:
    """Bidirectional hardest-negative hinge loss on a (B, B) text×video score matrix (see the module docstring)."""
    n = _check_square(scores, "hardest_negative_loss")
    if n == 1:
        return scores.sum() * 0.0
    positive = scores.diagonal()
    negatives = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    text_side = F.relu(margin - positive.unsqueeze(1) + scores).masked_fill(~negatives, 0.0)
    video_side = F.relu(margin - positive.unsqueeze(0) + scores).masked_fill(~negatives, 0.0)
    return text_side.amax(dim=1).mean() + video_side.amax(dim=0).mean()


def symmetric_infonce(scores: Tensor, temperature: Tensor | float = 1.0, reduction: str = "sum") -> Tensor:
    """InfoNCE in both directions on ``scores / temperature`` (rows = texts, columns = videos)."""
    n = _check_square(scores, "symmetric_infonce")
    logits = scores / temperature
    target = torch.arange(n, device=scores.device)
    t2v = F.cross_entropy(logits, target)
    v2t = F.cross_entropy(logits.t(), target)
    if reduction == "sum":
        return t2v + v2t
    if reduction == "mean":
        return (t2v + v2t) / 2
    raise ConfigError(f"symmetric_infonce: reduction must be 'sum' or 'mean', got {reduction!r}")
