"""CRET (Cross-modal Retrieval Transformer, ``seeds/002``): CCM with shared center queries + GEES loss.

The seed is a set of slides, not the paper; every choice it leaves open is written here.

Video side, one frame expert (``expert``, e.g. ``cait`` frame features (B, R, 384), or any frame expert):
- ``Linear(D_e, D)`` + learned position embedding per row index (up to ``max_rows``), then the temporal encoder:
  ``temporal_layers`` (3) ``nn.TransformerEncoderLayer`` with the row padding mask → H (B, R, D).
- Frame-level global features ``f_r = normalize(Linear(D, D)(H_r))``; the video is the Gaussian N(μ, Σ) of its real
  rows: ``μ`` = their mean, ``Σ`` = their (biased, 1/n) covariance — diagonal by default; ``covariance="full"``
  gives the shrunk ``(1 − λ)·S + λ·(tr S / D)·I`` with λ = ``shrinkage``.
- Local features for CCM: H itself, or, when ``local_expert`` is set (e.g. patch tokens flattened to rows), that
  expert's rows through ``Linear(D_local, D)`` (the slides take CaiT patch features as V^l; they do not say whether
  patches pass the temporal encoder — here they do not).
Text side: token features ``Linear(D_t, D)`` → local T^l (B, L, D); global ``T^g = normalize(Linear(D_t, D)(s))``
with ``s`` = ``TextBatch.cls`` (a frozen encoder's own pooling), else the first ([CLS]) token of the fine-tuned
encoder (the slides: CLS feature).
CCM: ``num_centers`` learnable queries Q (C, D), shared by both modalities, are the target of ``ccm_layers``
``nn.TransformerDecoderLayer`` (self-attention among the queries, cross-attention to the modality's local features
with their padding mask) → Z^v, Z^t (B, C, D), L2-normalised per center. The decoder weights are shared by both
modalities too (``share_decoder``; the slides only say the *queries* are shared).
Scores: ``s_local = (1/C) Σ_c ⟨Ẑ^t_c, Ẑ^v_c⟩``; ``s_global = ⟨T^g, μ⟩`` (the expected frame cosine) with
``global_score="mean"``, or ``⟨T^g, μ⟩ + ½ T^gᵀ Σ T^g / τ`` (τ times the GEES logit) with ``"gees"``;
``similarity = ½(s_local + s_global)``.
Loss: ``symmetric_infonce(s_local / τ)`` (mean of both directions) plus the global term:
- ``"gees"``: cross-entropy in both directions over the logits ``ℓ(T, v) = ⟨T, μ⟩/τ + ½ Tᵀ Σ T/τ²``. This is
  ``E[exp(⟨T, f⟩/τ)]`` for f ~ N(μ, Σ) in log form, so the loss bounds the expected NCE loss over sampled frames
  (Jensen). The slides put the ½TᵀΣT term in the numerator as well (the strict bound has only ⟨T, μ⟩ there); we
  follow the slides, so the same logit is used for positives and negatives.
- ``"nce"``: the plain NCE on ``⟨T, μ⟩/τ`` (the mean frame, Σ ignored).
Inner-product form: with diagonal Σ, ``TᵀΣT = ⟨T ⊙ T, diag Σ⟩``; with full Σ, ``⟨vec(TTᵀ), vec Σ⟩`` (D² wide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from pipeline.config import Config
from pipeline.heads.base import (
    Embedding,
    HeadInputError,
    InnerProductHead,
    TextBatch,
    VideoBatch,
    pick_expert,
)
from pipeline.heads.losses import symmetric_infonce
from pipeline.heads.registry import register_head

FRAME_EXPERTS = ("cait", "clip", "rgb", "scene")


class CRETConfig(Config):
    """CRET settings; the slides give the temporal depth (3) and the CaiT-S/24 size (384); the rest is ours."""

    expert: str | None = None
    local_expert: str | None = None
    dim: int = Field(384, ge=1)
    temporal_layers: int = Field(3, ge=0)
    num_heads: int = Field(6, ge=1)
    ff_dim: int = Field(1536, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_rows: int = Field(64, ge=1)
    num_centers: int = Field(8, ge=1)
    ccm_layers: int = Field(2, ge=0)
    share_decoder: bool = True
    global_loss: Literal["gees", "nce"] = "gees"
    global_score: Literal["mean", "gees"] = "mean"
    covariance: Literal["diag", "full"] = "diag"
    shrinkage: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(0.05, gt=0)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        return self


@dataclass
class CRETVideoEmbedding(Embedding):
    """``centers`` (B, C, D) unit Z^v; ``mean`` (B, D) μ; ``cov`` (B, D) diagonal Σ or (B, D, D) full Σ."""

    centers: Tensor
    mean: Tensor
    cov: Tensor


@dataclass
class CRETTextEmbedding(Embedding):
    """``centers`` (B, C, D) unit Z^t; ``sentence`` (B, D) unit T^g."""

    centers: Tensor
    sentence: Tensor


def _decoder(config: CRETConfig) -> nn.TransformerDecoder:
    layer = nn.TransformerDecoderLayer(
        config.dim, config.num_heads, config.ff_dim, config.dropout, batch_first=True
    )
    return nn.TransformerDecoder(layer, config.ccm_layers)


def _key_padding(mask: Tensor) -> Tensor:
    """Key padding mask; a sequence without real rows attends to its (zeroed) padding instead of producing NaN."""
    return ~mask & mask.any(dim=1, keepdim=True)


@register_head
class CRETHead(InnerProductHead):
    """CRET (see the module docstring)."""

    name: ClassVar[str] = "cret"
    config_class: ClassVar[type[Config]] = CRETConfig
    video_embedding: ClassVar[type[Embedding]] = CRETVideoEmbedding

    def __init__(self, config: CRETConfig, expert_dims: dict[str, int], text_dim: int) -> None:
        super().__init__(config, expert_dims, text_dim)
        self.expert = pick_expert(config.expert, expert_dims, FRAME_EXPERTS, "cret")
        self.local_expert = (
            pick_expert(config.local_expert, expert_dims, (), "cret") if config.local_expert else None
        )
        self.expert_names = [self.expert] + ([self.local_expert] if self.local_expert else [])
        d = config.dim
        self.frame_proj = nn.Linear(expert_dims[self.expert], d)
        self.positions = nn.Parameter(torch.randn(config.max_rows, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, config.num_heads, config.ff_dim, config.dropout, batch_first=True
        )
        self.temporal = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)
        self.frame_global = nn.Linear(d, d)
        if self.local_expert:
            self.local_proj = nn.Linear(expert_dims[self.local_expert], d)
        self.text_local = nn.Linear(text_dim, d)
        self.text_global = nn.Linear(text_dim, d)
        self.center_queries = nn.Parameter(torch.randn(config.num_centers, d) * 0.02)
        self.video_ccm = _decoder(config)
        self.text_ccm = self.video_ccm if config.share_decoder else _decoder(config)

    def _ccm(self, decoder: nn.TransformerDecoder, memory: Tensor, mask: Tensor) -> Tensor:
        queries = self.center_queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        out = decoder(queries, memory, memory_key_padding_mask=_key_padding(mask))
        return F.normalize(out, dim=-1)

    def encode_video(self, batch: VideoBatch) -> CRETVideoEmbedding:
        feats, masks = self.prepare_video(batch)
        mask = masks[self.expert]
        rows = mask.shape[1]
        if rows > self.config.max_rows:
            raise HeadInputError(
                f"cret: expert {self.expert!r} has {rows} rows, more than max_rows={self.config.max_rows}"
            )
        h = self.temporal(
            self.frame_proj(feats[self.expert]) + self.positions[:rows],
            src_key_padding_mask=_key_padding(mask),
        )
        frames = F.normalize(self.frame_global(h), dim=-1)
        weights = mask.to(frames.dtype).unsqueeze(-1)
        count = weights.sum(dim=1).clamp_min(1.0)
        mean = (frames * weights).sum(dim=1) / count
        centred = (frames - mean.unsqueeze(1)) * weights
        if self.config.covariance == "diag":
            cov = centred.pow(2).sum(dim=1) / count
        else:
            sample = torch.einsum("brd,bre->bde", centred, centred) / count.unsqueeze(-1)
            trace = sample.diagonal(dim1=1, dim2=2).sum(-1) / sample.shape[-1]
            eye = torch.eye(sample.shape[-1], dtype=sample.dtype, device=sample.device)
            lam = self.config.shrinkage
            cov = (1 - lam) * sample + lam * trace[:, None, None] * eye
        if self.local_expert:
            local_mask = masks[self.local_expert]
            centers = self._ccm(self.video_ccm, self.local_proj(feats[self.local_expert]), local_mask)
        else:
            centers = self._ccm(self.video_ccm, h, mask)
        return CRETVideoEmbedding(centers=centers, mean=mean, cov=cov)

    def encode_text(self, batch: TextBatch) -> CRETTextEmbedding:
        self.check_text(batch)
        mask = batch.mask.bool()
        tokens = batch.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        centers = self._ccm(self.text_ccm, self.text_local(tokens), mask)
        sentence = F.normalize(self.text_global(batch.sentence("cls")), dim=-1)
        return CRETTextEmbedding(centers=centers, sentence=sentence)

    # ----- scores -----
    def local_similarity(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        """(B_t, B_v) mean over the C centers of the cosine between Z^t_c and Z^v_c."""
        return torch.einsum("tcd,vcd->tv", text_emb.centers, video_emb.centers) / self.config.num_centers

    def variance_term(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        """(B_t, B_v) ``T^gᵀ Σ_v T^g``."""
        t = text_emb.sentence
        if video_emb.cov.dim() == 2:
            return t.pow(2) @ video_emb.cov.t()
        return torch.einsum("td,vde,te->tv", t, video_emb.cov, t)

    def gees_logits(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        """(B_t, B_v) ``⟨T, μ⟩/τ + ½ TᵀΣT/τ²`` (``"gees"``) or ``⟨T, μ⟩/τ`` (``"nce"``)."""
        tau = self.config.temperature
        logits = text_emb.sentence @ video_emb.mean.t() / tau
        if self.config.global_loss == "gees":
            logits = logits + 0.5 * self.variance_term(text_emb, video_emb) / tau**2
        return logits

    def global_similarity(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        score = text_emb.sentence @ video_emb.mean.t()
        if self.config.global_score == "gees":
            score = score + 0.5 * self.variance_term(text_emb, video_emb) / self.config.temperature
        return score

    def similarity(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        return 0.5 * (
            self.local_similarity(text_emb, video_emb) + self.global_similarity(text_emb, video_emb)
        )

    def loss(self, text_emb: CRETTextEmbedding, video_emb: CRETVideoEmbedding) -> Tensor:
        """InfoNCE on the local scores plus the GEES (or plain NCE) loss on the global logits (both symmetric)."""
        local = symmetric_infonce(self.local_similarity(text_emb, video_emb), self.config.temperature, "mean")
        return local + symmetric_infonce(self.gees_logits(text_emb, video_emb), 1.0, "mean")

    # ----- inner-product decomposition -----
    def query_vectors(self, text_emb: CRETTextEmbedding, available: Tensor | None = None) -> Tensor:
        """(B_t, P) ``[½/C·Ẑ^t, ½·T^g (, ¼/τ·T^g⊙T^g or ¼/τ·vec(T^g T^gᵀ))]``; ``available`` is unused (one expert)."""
        t = text_emb.sentence
        parts = [0.5 / self.config.num_centers * text_emb.centers.flatten(1), 0.5 * t]
        if self.config.global_score == "gees":
            quad = (
                t.pow(2) if self.config.covariance == "diag" else torch.einsum("td,te->tde", t, t).flatten(1)
            )
            parts.append(0.25 / self.config.temperature * quad)
        return torch.cat(parts, dim=1)

    def video_vectors(self, video_emb: CRETVideoEmbedding) -> Tensor:
        """(B_v, P) ``[Ẑ^v, μ (, Σ)]``."""
        parts = [video_emb.centers.flatten(1), video_emb.mean]
        if self.config.global_score == "gees":
            parts.append(video_emb.cov.flatten(1))
        return torch.cat(parts, dim=1)
