"""Context gating and the gated embedding unit of MoEE (Miech et al. 2018), as used by CE and T2VLAD.

``GatedEmbeddingUnit(x) = normalize(x' ⊙ σ(W₂ x' + b₂))`` with ``x' = W₁ x + b₁``: a linear projection, then
context gating (a feature-wise sigmoid gate computed from the projected feature itself), then L2 normalisation.
The reference ``ContextGating`` can batch-normalise the gate logits; we leave that out (T2VLAD does not mention
it, and batch statistics would make a video's embedding depend on the rest of its batch).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ContextGating(nn.Module):
    """``y = x ⊙ σ(W x + b)`` over the last dimension (size ``dim``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x).sigmoid()


class GatedEmbeddingUnit(nn.Module):
    """(…, in_dim) → (…, out_dim) unit-norm embedding: linear → context gating → L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.gating = ContextGating(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.gating(self.fc(x)), dim=-1)
