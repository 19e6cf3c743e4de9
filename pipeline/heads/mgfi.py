"""MGFI + CMFI (Li et al., ``seeds/003``, eq. 1–14): text-conditioned frame pooling and audio-text similarity.

Inputs: one frame expert (``frame_expert``, e.g. ``clip``/``rgb``) rows x_v (B, N, D_f), optionally one audio
expert (``audio_expert``, e.g. ``pann``/``vggish``/``audio_stats``) rows (B, R_a, D_a), text tokens (B, L, D_t).
Projections (ours: the paper has CLIP frames and text both in 512-d): frames ``Linear(D_f, C)``; sentence and
words share ``Linear(D_t, C)``. The sentence feature is ``TextBatch.cls`` when given, else the mean of the real
tokens (``sentence_pooling="cls"`` takes the first token instead); the words x_w are all real tokens.

Sentence-frame (eq. 1–3): ``q = LN_t(x_t) W_q``, ``k = LN_v(x_v) W_k``, ``v = LN_v(x_v) W_v``,
``z = softmax(q kᵀ/√C) v W_o``, ``o₁ = z + FF(LN_o(z))``.
Word-frame (eq. 4–8): ``q̃ = LN_w(x_w) W_q̃``, ``a = q̃ kᵀ`` (L, N), ``z̃ = softmax_N(a/√C) v W_o`` (L, C),
``õ = Σ_l softmax_L(max_N a)_l · z̃_l`` (eq. 7: each word weighted by the softmax over words of its best frame
similarity), ``o₂ = õ + FF(LN_o(õ))``. k, v, W_o, FF and LN_o are shared by both paths (same symbols in the paper);
FF = Linear(C, ff_dim) → GELU → Linear(ff_dim, C). All W are bias-free C×C matrices.
``o = (o₁ + o₂)/2`` (eq. 9), ``s(v, t) = cos(o, x_t)`` (eq. 10). Ablations: ``use_sentence_frame`` /
``use_word_frame`` (Table 1 s-f / w-f) keep one path, o = o₁ or o₂.
Audio (eq. 11): the audio rows are mean-pooled over real rows (the paper has one PANN embedding per video),
``s(a, t) = cos(Linear(LN_a(x_a)), x_t)``; a video without audio gets s(a, t) = 0.
Score ``s = s(v, t) + s(a, t)``. Training stages (``training_stages``, §3.2: "We first train the network for video
frames and text modal interaction. Then fix the network weights, and finetune the weights of the audio network"):
``frames_text`` scores ``s(v, t)`` alone and trains everything but the audio branch; ``audio`` trains only the audio
branch (``ln_a``, ``audio_proj``) on the full score. Loss (eq. 12–14): ``L = L_t2v + L_v2t``, cross-entropy of the (B, B) matrix
``s / τ`` in both directions. The paper writes ``exp(s)``; we add CLIP4Clip's temperature (learned log scale
initialised to 1/τ and capped at 100 when ``learn_temperature``, else fixed τ).
Padding frames are excluded from the frame softmax and from max_N; padding words from the softmax over words.
``similarity`` computes the whole (B_t, B_v) matrix, in blocks of ``chunk_size`` texts; the word path never
materialises z̃ per word (Σ_l w_l softmax(a_l) is formed first, then multiplied by v W_o).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from pipeline.config import Config
from pipeline.heads.base import (
    Embedding,
    RetrievalHead,
    TextBatch,
    VideoBatch,
    masked_mean,
    masked_softmax,
    pick_expert,
)
from pipeline.heads.losses import symmetric_infonce
from pipeline.heads.registry import register_head

FRAME_EXPERTS = ("clip", "rgb", "cait", "scene")
AUDIO_EXPERTS = ("pann", "vggish", "audio_stats", "audio")
MAX_LOGIT_SCALE = 100.0


class MGFIConfig(Config):
    """MGFI/CMFI settings (paper: C = 512, batch 32, AdamW); ``audio_expert=""`` turns the audio branch off."""

    frame_expert: str | None = None
    audio_expert: str | None = None
    dim: int = Field(512, ge=1)
    ff_dim: int = Field(2048, ge=1)
    temperature: float = Field(0.05, gt=0)
    learn_temperature: bool = True
    sentence_pooling: Literal["cls", "mean"] = "mean"
    use_sentence_frame: bool = True
    use_word_frame: bool = True
    chunk_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _one_frame_branch(self) -> Self:
        if not (self.use_sentence_frame or self.use_word_frame):
            raise ValueError("use_sentence_frame and use_word_frame cannot both be false")
        return self


@dataclass
class MGFIVideoEmbedding(Embedding):
    """``keys`` (B, N, C) = LN_v(x_v) W_k; ``values`` (B, N, C) = LN_v(x_v) W_v W_o; ``frame_mask`` (B, N);
    ``audio`` (B, C) unit L(LN_a(x_a)) (or None); ``audio_available`` (B,) bool (or None)."""

    keys: Tensor
    values: Tensor
    frame_mask: Tensor
    audio: Tensor | None
    audio_available: Tensor | None


@dataclass
class MGFITextEmbedding(Embedding):
    """``sentence`` (B, C) x_t; ``query`` (B, C) = LN_t(x_t) W_q; ``word_queries`` (B, L, C); ``word_mask`` (B, L)."""

    sentence: Tensor
    query: Tensor
    word_queries: Tensor
    word_mask: Tensor


@register_head
class MGFIHead(RetrievalHead):
    """MGFI/CMFI (see the module docstring): text-conditioned, so search re-ranks candidates of a proxy index."""

    name: ClassVar[str] = "mgfi"
    config_class: ClassVar[type[Config]] = MGFIConfig
    video_embedding: ClassVar[type[Embedding]] = MGFIVideoEmbedding
    text_conditioned: ClassVar[bool] = True
    training_stages: ClassVar[tuple[str, ...]] = ("frames_text", "audio")
    audio_modules: ClassVar[tuple[str, ...]] = ("ln_a", "audio_proj")

    def __init__(self, config: MGFIConfig, expert_dims: dict[str, int], text_dim: int) -> None:
        super().__init__(config, expert_dims, text_dim)
        self.frame_expert = pick_expert(config.frame_expert, expert_dims, FRAME_EXPERTS, "mgfi")
        self.audio_expert = None
        if config.audio_expert is None:
            self.audio_expert = next((e for e in AUDIO_EXPERTS if e in expert_dims), None)
        elif config.audio_expert:
            self.audio_expert = pick_expert(config.audio_expert, expert_dims, (), "mgfi")
        self.expert_names = [self.frame_expert] + ([self.audio_expert] if self.audio_expert else [])
        c = config.dim
        self.frame_proj = nn.Linear(expert_dims[self.frame_expert], c)
        self.text_proj = nn.Linear(text_dim, c)
        self.ln_v = nn.LayerNorm(c)
        self.w_k = nn.Linear(c, c, bias=False)
        self.w_v = nn.Linear(c, c, bias=False)
        self.w_o = nn.Linear(c, c, bias=False)
        self.ln_o = nn.LayerNorm(c)
        self.ff = nn.Sequential(nn.Linear(c, config.ff_dim), nn.GELU(), nn.Linear(config.ff_dim, c))
        if config.use_sentence_frame:
            self.ln_t = nn.LayerNorm(c)
            self.w_q = nn.Linear(c, c, bias=False)
        if config.use_word_frame:
            self.ln_w = nn.LayerNorm(c)
            self.w_q_word = nn.Linear(c, c, bias=False)
        if self.audio_expert:
            self.ln_a = nn.LayerNorm(expert_dims[self.audio_expert])
            self.audio_proj = nn.Linear(expert_dims[self.audio_expert], c)
        log_scale = torch.tensor(math.log(1.0 / config.temperature))
        if config.learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def encode_video(self, batch: VideoBatch) -> MGFIVideoEmbedding:
        feats, masks = self.prepare_video(batch)
        mask = masks[self.frame_expert]
        frames = self.ln_v(self.frame_proj(feats[self.frame_expert]))
        audio = audio_available = None
        if self.audio_expert:
            audio_mask = masks[self.audio_expert]
            pooled = masked_mean(feats[self.audio_expert], audio_mask, dim=1)
            audio = F.normalize(self.audio_proj(self.ln_a(pooled)), dim=-1)
            audio_available = audio_mask.any(dim=1)
        return MGFIVideoEmbedding(
            keys=self.w_k(frames),
            values=self.w_o(self.w_v(frames)),
            frame_mask=mask,
            audio=audio,
            audio_available=audio_available,
        )

    def encode_text(self, batch: TextBatch) -> MGFITextEmbedding:
        self.check_text(batch)
        mask = batch.mask.bool()
        tokens = batch.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        pooled = TextBatch(tokens, mask, batch.cls).sentence(self.config.sentence_pooling)
        sentence = self.text_proj(pooled)
        query = self.w_q(self.ln_t(sentence)) if self.config.use_sentence_frame else sentence
        words = self.text_proj(tokens)
        word_queries = self.w_q_word(self.ln_w(words)) if self.config.use_word_frame else words
        return MGFITextEmbedding(sentence=sentence, query=query, word_queries=word_queries, word_mask=mask)

    def _refine(self, z: Tensor) -> Tensor:
        return z + self.ff(self.ln_o(z))

    def _video_text_block(self, text: MGFITextEmbedding, video: MGFIVideoEmbedding) -> Tensor:
        """(b_t, B_v) ``s(v, t)`` (eq. 1–10) for one block of texts against all videos."""
        scale = 1.0 / math.sqrt(self.config.dim)
        frame_mask = video.frame_mask.unsqueeze(0)  # (1, B_v, N)
        outputs = []
        if self.config.use_sentence_frame:
            logits = torch.einsum("tc,vnc->tvn", text.query, video.keys) * scale
            attention = masked_softmax(logits, frame_mask, dim=-1)
            outputs.append(self._refine(torch.einsum("tvn,vnc->tvc", attention, video.values)))
        if self.config.use_word_frame:
            a = torch.einsum("tlc,vnc->tvln", text.word_queries, video.keys)  # (b_t, B_v, L, N)
            full_mask = frame_mask.unsqueeze(2) & text.word_mask[:, None, :, None]
            per_word = masked_softmax(a * scale, full_mask, dim=-1)
            best = a.masked_fill(~full_mask, float("-inf")).amax(dim=-1)  # (b_t, B_v, L)
            word_mask = full_mask.any(dim=-1)
            word_weights = masked_softmax(best.masked_fill(~word_mask, 0.0), word_mask, dim=-1)
            attention = torch.einsum("tvl,tvln->tvn", word_weights, per_word)
            outputs.append(self._refine(torch.einsum("tvn,vnc->tvc", attention, video.values)))
        pooled = sum(outputs) / len(outputs)
        return torch.einsum("tvc,tc->tv", F.normalize(pooled, dim=-1), F.normalize(text.sentence, dim=-1))

    def audio_similarity(self, text_emb: MGFITextEmbedding, video_emb: MGFIVideoEmbedding) -> Tensor:
        """(B_t, B_v) ``s(a, t)`` (eq. 11); 0 for videos without audio."""
        sims = F.normalize(text_emb.sentence, dim=-1) @ video_emb.audio.t()
        return sims * video_emb.audio_available.to(sims.dtype).unsqueeze(0)

    def video_text_similarity(self, text_emb: MGFITextEmbedding, video_emb: MGFIVideoEmbedding) -> Tensor:
        """(B_t, B_v) ``s(v, t)`` (eq. 10), computed in blocks of ``chunk_size`` texts."""
        step = self.config.chunk_size
        blocks = [
            self._video_text_block(text_emb[i : i + step], video_emb) for i in range(0, len(text_emb), step)
        ]
        return torch.cat(blocks, dim=0)

    def similarity(self, text_emb: MGFITextEmbedding, video_emb: MGFIVideoEmbedding) -> Tensor:
        """(B_t, B_v) ``s(v, t) + s(a, t)`` (``s(v, t)`` alone in training stage 0)."""
        sims = self.video_text_similarity(text_emb, video_emb)
        if self.audio_expert and self.training_stage != 0:
            sims = sims + self.audio_similarity(text_emb, video_emb)
        return sims

    def stage_parameters(self, stage: int) -> set[str]:
        """Stage 0 (``frames_text``): every parameter but the audio branch's; stage 1 (``audio``): only those."""
        audio = {n for n, _ in self.named_parameters() if n.split(".")[0] in self.audio_modules}
        if stage == 0:
            return {n for n, _ in self.named_parameters()} - audio
        return audio

    def logit_scale(self) -> Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def loss(self, text_emb: MGFITextEmbedding, video_emb: MGFIVideoEmbedding) -> Tensor:
        """Eq. 12–14: ``L_t2v + L_v2t`` on ``similarity · logit_scale``."""
        return symmetric_infonce(self.similarity(text_emb, video_emb) * self.logit_scale(), 1.0, "sum")

    # ----- query-independent proxy for an embedding store's index -----
    def index_video_vectors(self, video_emb: MGFIVideoEmbedding) -> Tensor:
        """(B_v, P) the frame values pooled with uniform attention and refined by ``ff``/``ln_o`` (what the head
        computes when attention is uniform), normalised, then the audio vector (0 without audio)."""
        mean = masked_mean(video_emb.values, video_emb.frame_mask, dim=1)
        parts = [F.normalize(self._refine(mean), dim=-1)]
        if video_emb.audio is not None:
            parts.append(video_emb.audio * video_emb.audio_available.unsqueeze(-1).to(video_emb.audio.dtype))
        return torch.cat(parts, dim=1)

    def index_query_vectors(self, text_emb: MGFITextEmbedding) -> Tensor:
        """(B_t, P) the normalised sentence feature, twice when the head has audio."""
        sentence = F.normalize(text_emb.sentence, dim=-1)
        return torch.cat([sentence, sentence] if self.audio_expert else [sentence], dim=1)
