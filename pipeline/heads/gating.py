"""Context gating and the gated embedding unit of MoEE (Miech et al. 2018), as used by CE and T2VLAD.

``GatedEmbeddingUnit(x) = normalize(x' ⊙ σ(BN(W₂ x' + b₂)))`` with ``x' = W₁ x + b₁``: a linear projection, then
context gating (a feature-wise sigmoid gate computed from the projected feature itself), then L2 normalisation.
``batch_norm`` (off by default: T2VLAD does not mention it, and batch statistics make an embedding depend on the
rest of its training batch) batch-normalises the gate logits, as the reference ``ContextGating`` and the public
T2VLAD port do; only the rows ``present`` enters the statistics (a missing expert's zero input would skew them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.heads.base import masked_batch_norm


class ContextGating(nn.Module):
    """``y = x ⊙ σ(W x + b)`` over the last dimension (size ``dim``), the gate logits batch-normalised when
    ``batch_norm``."""

    def __init__(self, dim: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim) if batch_norm else None

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        """Gate ``x`` (B, dim); ``present`` (B,) bool: the rows the batch norm's statistics use (default all)."""
        logits = self.fc(x)
        if self.norm is not None:
            rows = present if present is not None else x.new_ones(x.shape[0], dtype=torch.bool)
            logits = masked_batch_norm(self.norm, logits, rows.bool())
        return x * logits.sigmoid()


class GatedEmbeddingUnit(nn.Module):
    """(B, in_dim) → (B, out_dim) unit-norm embedding: linear → context gating → L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.gating = ContextGating(out_dim, batch_norm)

    def forward(self, x: Tensor, present: Tensor | None = None) -> Tensor:
        """Embed ``x``; ``present`` as in ``ContextGating.forward``."""
        return F.normalize(self.gating(self.fc(x), present), dim=-1)
