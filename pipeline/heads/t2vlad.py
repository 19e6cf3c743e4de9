"""T2VLAD (Wang, Zhu, Yang, CVPR 2021, ``seeds/001``, §3): global-local alignment with shared VLAD centers.

Video side, N experts with rows ``x_e`` (B, R_e, D_e):
- local: per-expert ``Linear(D_e, C)``; the rows of all experts are concatenated (B, M, C) with their padding
  masks (rows of unavailable experts masked too) and go through one ``nn.TransformerEncoderLayer`` (``num_heads``
  heads, dropout, post-norm, feed-forward ``ff_dim``; no position encoding, §3.2) with ``src_key_padding_mask``;
  then the VLAD input norm, then VLAD with K + 1 centers (``netvlad.py``) over the real rows → ``g^v`` (B, K, C).
- global: per expert, max-pool over the real rows of the *raw* features → gated embedding unit (its linear is the
  paper's projection to C, then context gating, then L2 norm) → ``F^v_e`` (B, C).
Text side, tokens (B, L, D_t) from the text encoder (BERT in the paper):
- local: ``Linear(D_t, C)`` on every token (the paper needs none because BERT's size is C = 768; the offline
  encoder has 384, so we always project), then the same VLAD input norm and the *same* VLAD centers, bias and
  residual centers → ``g^t``.
VLAD input norm (``vlad_input_norm``): the rows of both modalities reach the shared centers at different scales
(post-norm transformer output ~√C per row vs a linear projection of text tokens), so the same centers would act at
different softmax temperatures per modality. ``"layernorm"`` (default, as the public port feeds both sides from a
LayerNorm) passes text and video rows through one shared ``LayerNorm(C)`` before the assignment; ``"none"`` feeds
them as they are (the earlier behaviour).
- global: ``G^t`` = the K normalised ``g^t_j`` concatenated (K·C) → one gated embedding unit per expert →
  ``F^t_e``; expert weights ``w = softmax(Linear(K·C, N)(G^t))``, renormalised over the experts the video has.
Scores: ``s_local = (1/K) Σ_j ⟨g^t_j, g^v_j⟩``, ``s_global = Σ_e w_e ⟨F^t_e, F^v_e⟩ / Σ_{e present} w_e`` (all
unit vectors, so these are cosines), ``s = ½(s_global + s_local)``. An expert is present for a video when
``available`` says so and it has at least one real row. Loss: ``losses.max_margin_ranking_loss`` (margin 0.02).

Variants (``T2VLADConfig.variant``), after the paper's ablations (Tables 4–5) and the public port:
- ``full``: the above.
- ``no_global``: ``s = s_local``; the global branch is not built (the paper reports this does not converge).
- ``no_local``: ``s = s_global``; the global text input is the sentence feature (``TextBatch.cls``: a frozen
  encoder's own pooling; else the first token = [CLS] of the fine-tuned encoder, as in MMT) instead of ``G^t``; no
  transformer layer and no VLAD are built.
- ``text_only_vlad``: the video's local features after the transformer layer are max-pooled over real rows and
  projected by ``Linear(C, K·C)`` to K per-center vectors (L2-normalised each) that replace ``g^v``.
- ``separate_vlads``: text and video have their own centers, bias and residual centers.
- ``public_port``: as the public T2VLAD code: shared assignment centers ``c`` but detached on the video side (the
  video assignment sends no gradient to ``c``), separate bias and residual centers per modality. Unlike that code,
  padding rows and tokens stay masked out of the assignment.
``set_scoring_branches("local" | "global" | "both")`` chooses the score in eval mode only, at test time (the paper's
"w/o global/local alignment", Table 4, is the full model scored with one branch); training and checkpoint selection
always use the variant's score (a new head scores ``"both"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, get_args

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.heads.base import (
    CenterAssignments,
    Embedding,
    InnerProductHead,
    TextBatch,
    VideoBatch,
    masked_max,
)
from pipeline.heads.gating import GatedEmbeddingUnit
from pipeline.heads.losses import max_margin_ranking_loss
from pipeline.heads.netvlad import VLADCenters, vlad, vlad_aggregate, vlad_assign
from pipeline.heads.registry import register_head

Variant = Literal["full", "no_global", "no_local", "text_only_vlad", "separate_vlads", "public_port"]
VARIANTS: tuple[str, ...] = get_args(Variant)
ScoringBranches = Literal["both", "local", "global"]
SCORING_BRANCHES: tuple[str, ...] = get_args(ScoringBranches)
# the variants whose local branch assigns both modalities to VLAD centres (the report's centre view)
CENTER_VIEW_VARIANTS = ("full", "separate_vlads", "public_port")
TOP_CENTERS = 3  # centres listed in a search hit's explanation


class T2VLADConfig(Config):
    """T2VLAD settings; defaults are the paper's MSR-VTT ones (K = 16 for long videos such as ActivityNet)."""

    dim: int = Field(768, ge=1)
    num_clusters: int = Field(9, ge=1)
    num_heads: int = Field(4, ge=1)
    ff_dim: int = Field(3072, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    margin: float = 0.02
    fix_norm: bool = True
    variant: Variant = "full"
    experts: list[str] = Field(default_factory=list)
    vlad_input_norm: Literal["layernorm", "none"] = "layernorm"

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        return self


@dataclass
class T2VLADVideoEmbedding(Embedding):
    """``centers`` (B, K, C) unit ``g^v`` (None for no_local); ``experts`` (B, N, C) unit ``F^v`` (0 where missing;
    None for no_global); ``available`` (B, N) bool."""

    centers: Tensor | None
    experts: Tensor | None
    available: Tensor


@dataclass
class T2VLADTextEmbedding(Embedding):
    """``centers`` (B, K, C) unit ``g^t``; ``experts`` (B, N, C) unit ``F^t``; ``expert_logits`` (B, N)."""

    centers: Tensor | None
    experts: Tensor | None
    expert_logits: Tensor | None


@register_head
class T2VLADHead(InnerProductHead):
    """T2VLAD (see the module docstring); the ablation table trains the paper's variants (Tables 4-5)."""

    name: ClassVar[str] = "t2vlad"
    config_class: ClassVar[type] = T2VLADConfig
    video_embedding: ClassVar[type[Embedding]] = T2VLADVideoEmbedding
    scoring_branches: ClassVar[tuple[str, ...]] = SCORING_BRANCHES
    # trained variant -> head_options; the paper's "w/o global/local alignment" rows are the full run scored with
    # one branch at test time (ablation_rows), models trained with one branch are their own rows
    ablation_variants: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"variant": "full"},
        "trained_local_only": {"variant": "no_global"},
        "trained_global_only": {"variant": "no_local"},
        "text_only_vlad": {"variant": "text_only_vlad"},
        "separate_vlads": {"variant": "separate_vlads"},
    }
    ablation_rows: ClassVar[dict[str, tuple[str, str]]] = {
        "full": ("full", "both"),
        "no_global": ("full", "local"),
        "no_local": ("full", "global"),
        "trained_local_only": ("trained_local_only", "both"),
        "trained_global_only": ("trained_global_only", "both"),
        "text_only_vlad": ("text_only_vlad", "both"),
        "separate_vlads": ("separate_vlads", "both"),
    }

    def __init__(self, config: T2VLADConfig, expert_dims: dict[str, int], text_dim: int) -> None:
        super().__init__(config, expert_dims, text_dim)
        self.expert_names = list(config.experts) or list(expert_dims)
        missing = [e for e in self.expert_names if e not in expert_dims]
        if missing or not self.expert_names:
            raise ConfigError(f"t2vlad: experts {missing or '[]'} have no dimension in {sorted(expert_dims)}")
        self.eval_branches = "both"
        c, k, variant = config.dim, config.num_clusters, config.variant
        self.use_local = variant != "no_local"
        self.use_global = variant != "no_global"
        if self.use_local:
            self.local_proj = nn.ModuleDict({e: nn.Linear(expert_dims[e], c) for e in self.expert_names})
            self.encoder = nn.TransformerEncoderLayer(
                c, config.num_heads, config.ff_dim, config.dropout, batch_first=True
            )
            self.text_proj = nn.Linear(text_dim, c)
            self.vlad_norm = nn.LayerNorm(c) if config.vlad_input_norm == "layernorm" else nn.Identity()
            self.text_vlad = VLADCenters(c, k)
            if variant == "separate_vlads":
                self.video_vlad = VLADCenters(c, k)
            if variant == "public_port":
                self.video_bias = nn.Parameter(torch.zeros(k + 1))
                self.video_residual_centers = nn.Parameter(self.text_vlad.residual_centers.detach().clone())
            if variant == "text_only_vlad":
                self.video_center_proj = nn.Linear(c, k * c)
        if self.use_global:
            global_text_dim = k * c if self.use_local else text_dim
            self.video_geu = nn.ModuleDict(
                {e: GatedEmbeddingUnit(expert_dims[e], c) for e in self.expert_names}
            )
            self.text_geu = nn.ModuleDict(
                {e: GatedEmbeddingUnit(global_text_dim, c) for e in self.expert_names}
            )
            self.expert_weights = nn.Linear(global_text_dim, len(self.expert_names))

    # ----- video -----
    def encode_video(self, batch: VideoBatch) -> T2VLADVideoEmbedding:
        feats, masks = self.prepare_video(batch)
        available = torch.stack([masks[e].any(dim=1) for e in self.expert_names], dim=1)
        centers = self._video_local(feats, masks) if self.use_local else None
        experts = None
        if self.use_global:
            pooled = [self.video_geu[e](masked_max(feats[e], masks[e], dim=1)) for e in self.expert_names]
            experts = torch.stack(pooled, dim=1) * available.unsqueeze(-1).to(pooled[0].dtype)
        return T2VLADVideoEmbedding(centers=centers, experts=experts, available=available)

    def _video_local(self, feats: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        z = torch.cat([self.local_proj[e](feats[e]) for e in self.expert_names], dim=1)
        mask = torch.cat([masks[e] for e in self.expert_names], dim=1)
        # A video without any real row would give an all -inf attention row (NaN); let it attend to its
        # (zeroed) padding instead: its rows are masked out of the VLAD below, so nothing of it is kept.
        padding = ~mask & mask.any(dim=1, keepdim=True)
        z = self.encoder(z, src_key_padding_mask=padding)
        variant = self.config.variant
        if variant == "text_only_vlad":
            pooled = self.video_center_proj(masked_max(z, mask, dim=1))
            return F.normalize(pooled.view(z.shape[0], self.config.num_clusters, -1), dim=-1)
        z = self.vlad_norm(z)
        if variant == "separate_vlads":
            return vlad(z, mask, self.video_vlad)
        if variant == "public_port":
            assignment = vlad_assign(z, mask, self.text_vlad.centers.detach(), self.video_bias)
            return vlad_aggregate(z, assignment, self.video_residual_centers)
        return vlad(z, mask, self.text_vlad)

    # ----- text -----
    def encode_text(self, batch: TextBatch) -> T2VLADTextEmbedding:
        self.check_text(batch)
        centers = experts = logits = None
        if self.use_local:
            mask = batch.mask.bool()
            tokens = batch.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
            centers = vlad(self.vlad_norm(self.text_proj(tokens)), mask, self.text_vlad)
        if self.use_global:
            g = centers.flatten(1) if centers is not None else batch.sentence("cls")
            experts = torch.stack([self.text_geu[e](g) for e in self.expert_names], dim=1)
            logits = self.expert_weights(g)
        return T2VLADTextEmbedding(centers=centers, experts=experts, expert_logits=logits)

    # ----- scores -----
    def set_scoring_branches(self, branches: str) -> None:
        """Score with ``"local"``, ``"global"`` or ``"both"`` branches in eval mode (test-time ablation)."""
        super().set_scoring_branches(branches)
        self.branch_coefficients(branches)
        self.eval_branches = branches

    def branch_coefficients(self, branches: str | None = None) -> tuple[float, float]:
        """(global, local) coefficients of the score: ½/½ for full, 1/0 or 0/1 for single-branch use."""
        if branches is None:
            branches = self.eval_branches if not self.training else "both"
        use_global = self.use_global and branches in ("both", "global")
        use_local = self.use_local and branches in ("both", "local")
        if not (use_global or use_local):
            raise ConfigError(
                f"t2vlad: branches {branches!r} are not available for variant {self.config.variant!r}"
            )
        if use_global and use_local:
            return 0.5, 0.5
        return (1.0, 0.0) if use_global else (0.0, 1.0)

    def local_similarity(self, text_emb: T2VLADTextEmbedding, video_emb: T2VLADVideoEmbedding) -> Tensor:
        """(B_t, B_v) mean over the K centers of the cosine between ``g^t_j`` and ``g^v_j``."""
        return torch.einsum("tkc,vkc->tv", text_emb.centers, video_emb.centers) / self.config.num_clusters

    def global_similarity(self, text_emb: T2VLADTextEmbedding, video_emb: T2VLADVideoEmbedding) -> Tensor:
        """(B_t, B_v) weighted expert cosines, weights renormalised over each video's present experts."""
        weights = text_emb.expert_logits.softmax(dim=-1)
        present = video_emb.available.to(weights.dtype)
        weighted_text = (weights.unsqueeze(-1) * text_emb.experts).flatten(1)
        numerator = weighted_text @ video_emb.experts.flatten(1).t()
        denominator = weights @ present.t()
        return torch.where(
            denominator > 0, numerator / denominator.clamp_min(1e-30), torch.zeros_like(numerator)
        )

    def similarity(self, text_emb: T2VLADTextEmbedding, video_emb: T2VLADVideoEmbedding) -> Tensor:
        coef_global, coef_local = self.branch_coefficients()
        score = 0.0
        if coef_global:
            score = score + coef_global * self.global_similarity(text_emb, video_emb)
        if coef_local:
            score = score + coef_local * self.local_similarity(text_emb, video_emb)
        return score

    def loss(self, text_emb: T2VLADTextEmbedding, video_emb: T2VLADVideoEmbedding) -> Tensor:
        """Bidirectional max-margin ranking loss on the (B, B) ``similarity`` of B matching pairs."""
        return max_margin_ranking_loss(
            self.similarity(text_emb, video_emb), self.config.margin, self.config.fix_norm
        )

    # ----- inner-product decomposition (DESIGN §3.4) -----
    def query_vectors(self, text_emb: T2VLADTextEmbedding, available: Tensor | None = None) -> Tensor:
        """(B_t, P): ``[coef_g·w_1 F^t_1, …, coef_g·w_N F^t_N, (coef_l/K) g^t_1, …, (coef_l/K) g^t_K]`` with ``w``
        renormalised over ``available`` (N,) bool (default: all experts), omitting unused branches."""
        coef_global, coef_local = self.branch_coefficients()
        parts = []
        if coef_global:
            logits = text_emb.expert_logits
            if available is not None:
                logits = logits.masked_fill(~available.bool().to(logits.device), float("-inf"))
            weights = logits.softmax(dim=-1)
            parts.append(coef_global * (weights.unsqueeze(-1) * text_emb.experts).flatten(1))
        if coef_local:
            parts.append((coef_local / self.config.num_clusters) * text_emb.centers.flatten(1))
        return torch.cat(parts, dim=1)

    def video_vectors(self, video_emb: T2VLADVideoEmbedding) -> Tensor:
        """(B_v, P): ``[F^v_1, …, F^v_N, g^v_1, …, g^v_K]`` (unused branches omitted)."""
        coef_global, coef_local = self.branch_coefficients()
        parts = []
        if coef_global:
            parts.append(video_emb.experts.flatten(1))
        if coef_local:
            parts.append(video_emb.centers.flatten(1))
        return torch.cat(parts, dim=1)

    def index_exact(self, video_emb: T2VLADVideoEmbedding) -> Tensor:
        """Videos with every expert: the expert weights are renormalised over a video's experts otherwise."""
        return video_emb.available.all(dim=1)

    # ----- search explanations -----
    @torch.no_grad()
    def explain(
        self, experts: list[str], text_emb: T2VLADTextEmbedding, video_emb: T2VLADVideoEmbedding
    ) -> tuple[dict[str, float] | None, list[dict[str, Any]]]:
        """Per video: the expert weights renormalised over its experts, each expert's and each centre's share of the
        score (they sum to the score), the ``TOP_CENTERS`` best centres. Query-level: the softmax expert weights
        over all experts (None for a variant without a global branch)."""
        coef_global, coef_local = self.branch_coefficients()
        weights = None
        if coef_global:
            w = text_emb.expert_logits.softmax(dim=-1)[0]
            weights = {e: float(w[i]) for i, e in enumerate(experts)}
            present = video_emb.available.to(w.dtype)
            renorm = w * present / (present @ w).clamp_min(1e-30).unsqueeze(-1)
            cosines = torch.einsum("nc,vnc->vn", text_emb.experts[0], video_emb.experts)
            expert_parts = coef_global * renorm * cosines
        if coef_local:
            k = self.config.num_clusters
            center_parts = coef_local / k * torch.einsum("kc,vkc->vk", text_emb.centers[0], video_emb.centers)
        explanations = []
        for j in range(len(video_emb)):
            info: dict[str, Any] = {}
            if coef_global:
                info["experts"] = {
                    e: {
                        "weight": float(renorm[j, i]),
                        "contribution": float(expert_parts[j, i]),
                        "present": bool(video_emb.available[j, i]),
                    }
                    for i, e in enumerate(experts)
                }
            if coef_local:
                order = torch.argsort(center_parts[j], descending=True)[:TOP_CENTERS]
                info["top_centers"] = [
                    {"center": int(c), "contribution": float(center_parts[j, c])} for c in order
                ]
            explanations.append(info)
        return weights, explanations

    # ----- centre/assignment view (Fig. 3 of the paper) -----
    @property
    def has_center_view(self) -> bool:
        """Variants whose local branch assigns both modalities to VLAD centres."""
        return self.use_local and self.config.variant in CENTER_VIEW_VARIANTS

    @torch.no_grad()
    def center_assignments(self, text: TextBatch, video: VideoBatch) -> CenterAssignments:
        """The local branch's soft assignments, recomputed as ``encode_text``/``encode_video`` do: caption tokens
        through ``text_proj`` and the VLAD input norm against the shared centres; video rows through ``local_proj``,
        the transformer layer and the VLAD input norm, then the variant's video-side centres (shared for ``full``,
        ``video_vlad`` for ``separate_vlads``, the detached shared centres + video bias for ``public_port``)."""
        if not self.has_center_view:
            raise ConfigError(f"t2vlad: variant {self.config.variant!r} has no centre/assignment view")
        k = self.config.num_clusters
        mask = text.mask.bool()
        tokens = text.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        text_rows = self.vlad_norm(self.text_proj(tokens))
        text_assign = vlad_assign(text_rows, mask, self.text_vlad.centers, self.text_vlad.bias)[0]
        feats, masks = self.prepare_video(video)
        z = torch.cat([self.local_proj[e](feats[e]) for e in self.expert_names], dim=1)
        row_mask = torch.cat([masks[e] for e in self.expert_names], dim=1)
        z = self.encoder(z, src_key_padding_mask=~row_mask & row_mask.any(dim=1, keepdim=True))
        z = self.vlad_norm(z)
        centers, bias = self.text_vlad.centers, self.text_vlad.bias
        if self.config.variant == "separate_vlads":
            centers, bias = self.video_vlad.centers, self.video_vlad.bias
        elif self.config.variant == "public_port":
            bias = self.video_bias
        video_assign = vlad_assign(z, row_mask, centers, bias)[0]
        rows = [(e, r) for e in self.expert_names for r in range(feats[e].shape[1])]
        return CenterAssignments(text_assign[:, :k], video_assign[:, :k], row_mask[0], rows)
