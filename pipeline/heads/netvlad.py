"""NetVLAD with K + 1 centers (the last one a background "ghost" center whose aggregate is dropped), T2VLAD eq. 1–3.

For local features ``z_i`` (rows with ``mask_i`` True):

    a_ij = softmax_k(z_i·c_kᵀ + b_k)   over the K + 1 centers        (eq. 1)
    g_j  = normalize(Σ_i mask_i · a_ij · (z_i − c'_j))   for j ≤ K     (eq. 2, 3)

The assignment logits use centers ``c`` (K + 1, C) and bias ``b`` (K + 1); the residuals use separate centers
``c'`` (K, C), as in NetVLAD. With an assignment norm (the paper, §3.4: "one can replace the bias term with a batch
normalization layer"; the public port does), the logits ``z_i·c_kᵀ`` of the real rows are batch-normalised instead
of adding ``b``, whose place the norm's learned shift takes (``VLADCenters(..., bias=False)``). Padding rows get zero assignment, so they never change a ``g_j``; a sequence without
any real row aggregates to the zero vector (its cosine with anything is 0). The same ``VLADCenters`` instance
applied to both modalities is T2VLAD's shared-center encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.heads.base import masked_batch_norm


class VLADCenters(nn.Module):
    """Assignment centers ``c`` (K + 1, C), bias ``b`` (K + 1; None with ``bias=False``) and residual centers
    ``c'`` (K, C)."""

    def __init__(self, dim: int, num_clusters: int, bias: bool = True) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(dim)
        self.num_clusters = num_clusters
        self.centers = nn.Parameter(torch.randn(num_clusters + 1, dim) * scale)
        self.bias = nn.Parameter(torch.zeros(num_clusters + 1)) if bias else None
        self.residual_centers = nn.Parameter(torch.randn(num_clusters, dim) * scale)


def vlad_assign(
    z: Tensor, mask: Tensor, centers: Tensor, bias: Tensor | None, norm: nn.BatchNorm1d | None = None
) -> Tensor:
    """(B, M, K + 1) soft assignments of rows ``z`` (B, M, C); rows with ``mask`` False are all zero. ``bias`` is
    added to the logits when given; ``norm`` batch-normalises the logits of the real rows when given."""
    logits = torch.einsum("bmc,kc->bmk", z, centers)
    if bias is not None:
        logits = logits + bias
    if norm is not None:
        logits = masked_batch_norm(norm, logits, mask.bool())
    return logits.softmax(dim=-1) * mask.unsqueeze(-1).to(z.dtype)


def vlad_aggregate(z: Tensor, assignment: Tensor, residual_centers: Tensor) -> Tensor:
    """(B, K, C) L2-normalised residual aggregates over the first K centers (background dropped)."""
    a = assignment[..., : residual_centers.shape[0]]
    weighted = torch.einsum("bmk,bmc->bkc", a, z) - a.sum(dim=1).unsqueeze(-1) * residual_centers
    return F.normalize(weighted, dim=-1)


def vlad(z: Tensor, mask: Tensor, params: VLADCenters, norm: nn.BatchNorm1d | None = None) -> Tensor:
    """VLAD of rows ``z`` (B, M, C) with row mask (B, M) against ``params`` (``norm``: the assignment norm, if any)
    → (B, K, C) unit vectors (or 0)."""
    assignment = vlad_assign(z, mask, params.centers, params.bias, norm)
    return vlad_aggregate(z, assignment, params.residual_centers)
