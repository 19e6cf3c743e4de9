"""The contract every alignment head follows: input batches, embeddings, and the ``RetrievalHead`` interface.

Shapes: B = batch, R = rows of one expert (segments, frames or patches), D_e = that expert's feature size,
L = text tokens, D_t = text feature size.

- ``VideoBatch.features[e]`` (B, R_e, D_e) float, ``VideoBatch.masks[e]`` (B, R_e) bool (True = real row),
  ``VideoBatch.available`` (B, n) bool: its columns follow ``VideoBatch.experts`` when that list is given (the
  batch may then hold more experts than the head uses), else ``head.expert_names``. An expert counts as present
  for a video only when ``available`` is True *and* it has at least one real row; padded rows may hold anything
  (finite or not: they are zeroed before use).
- ``TextBatch.tokens`` (B, L, D_t), ``TextBatch.mask`` (B, L) bool (True = real token, including [CLS]/[SEP]),
  ``TextBatch.cls`` optional (B, D_t) sentence vector supplied by the text side: a frozen encoder's own pooling
  (all-MiniLM-L6-v2: mean over real tokens, ``pipeline.training.text_cache``); None when fine-tuned.

A head encodes each side independently (``encode_video``, ``encode_text``) into an ``Embedding`` (a dataclass of
tensors whose first dimension is the batch), and scores every text against every video with ``similarity``. The
embeddings slice (``emb[i:j]``, ``emb[index_tensor]``), concatenate (``type(emb).cat([...])``, padding ragged
dimensions with zeros/False) and move (``emb.to(device)``), so callers encode in batches and score in blocks.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.config import Config
from pipeline.errors import ConfigError


class HeadInputError(ConfigError):
    """A batch does not match the head it is fed to (missing expert, wrong dimension or shape)."""


@dataclass
class VideoBatch:
    """Per-expert padded row features of B videos (see the module docstring for shapes)."""

    features: dict[str, Tensor]
    masks: dict[str, Tensor]
    available: Tensor
    experts: list[str] | None = None

    def to(self, device: torch.device | str) -> VideoBatch:
        return VideoBatch(
            features={k: v.to(device) for k, v in self.features.items()},
            masks={k: v.to(device) for k, v in self.masks.items()},
            available=self.available.to(device),
            experts=self.experts,
        )

    @property
    def batch_size(self) -> int:
        return int(self.available.shape[0])


@dataclass
class TextBatch:
    """Token features of B texts: ``tokens`` (B, L, D_t), ``mask`` (B, L) bool, ``cls`` optional (B, D_t)."""

    tokens: Tensor
    mask: Tensor
    cls: Tensor | None = None

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(
            tokens=self.tokens.to(device),
            mask=self.mask.to(device),
            cls=None if self.cls is None else self.cls.to(device),
        )

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    def sentence(self, pooling: str) -> Tensor:
        """(B, D_t) sentence feature: ``"cls"`` = ``cls`` when given, else the first token ([CLS] for BERT-family
        tokenisers); ``"mean"`` = ``cls`` when given, else the mean of the real tokens."""
        if self.cls is not None:
            return self.cls
        if pooling == "cls":
            return self.tokens[:, 0]
        if pooling == "mean":
            return masked_mean(self.tokens, self.mask, dim=1)
        raise ConfigError(f"text sentence pooling must be 'cls' or 'mean', got {pooling!r}")


@dataclass
class Embedding:
    """Base of head-specific embeddings: every field is a Tensor (or None) whose dim 0 is the batch."""

    def _tensors(self) -> dict[str, Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __len__(self) -> int:
        for value in self._tensors().values():
            if value is not None:
                return int(value.shape[0])
        return 0

    def __getitem__(self, index: int | slice | Tensor) -> Self:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(self, **{k: None if v is None else v[index] for k, v in self._tensors().items()})

    def to(self, device: torch.device | str) -> Self:
        return replace(self, **{k: None if v is None else v.to(device) for k, v in self._tensors().items()})

    def detach(self) -> Self:
        return replace(self, **{k: None if v is None else v.detach() for k, v in self._tensors().items()})

    @classmethod
    def cat(cls, items: list[Self]) -> Self:
        """Concatenate along the batch; dims ≥ 1 that differ (e.g. token counts) are zero/False padded to the max."""
        if not items:
            raise HeadInputError(f"{cls.__name__}.cat: empty list")
        merged: dict[str, Tensor | None] = {}
        for name in items[0]._tensors():
            values = [getattr(item, name) for item in items]
            if any(v is None for v in values):
                merged[name] = None
                continue
            merged[name] = torch.cat(_pad_to_common(values), dim=0)
        return cls(**merged)


def _pad_to_common(tensors: list[Tensor]) -> list[Tensor]:
    ndim = tensors[0].dim()
    target = [max(t.shape[d] for t in tensors) for d in range(1, ndim)]
    out = []
    for t in tensors:
        pad: list[int] = []
        for d in reversed(range(1, ndim)):
            pad += [0, target[d - 1] - t.shape[d]]
        out.append(F.pad(t, pad) if any(pad) else t)
    return out


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over the True positions of ``mask`` along ``dim`` (0 where none is True)."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim) / weights.sum(dim).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of ``x`` over the True positions of ``mask`` along ``dim`` (0 where none is True or the dim is empty)."""
    if x.shape[dim] == 0:
        return x.sum(dim)
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim)
    return torch.where(mask.any(dim).unsqueeze(-1), filled, torch.zeros_like(filled))


def masked_batch_norm(norm: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """``x`` (..., F) with the rows where ``mask`` (...) is True batch-normalised by ``norm`` over those rows only
    (padding never enters the statistics); other rows are returned as they are. In training, a batch with fewer
    than two such rows is normalised with the running statistics (batch statistics need two)."""
    rows = x[mask]
    if rows.shape[0] == 0:
        return x
    if norm.training and rows.shape[0] < 2:
        rows = F.batch_norm(
            rows, norm.running_mean, norm.running_var, norm.weight, norm.bias, training=False, eps=norm.eps
        )
    else:
        rows = norm(rows)
    return x.masked_scatter(mask.unsqueeze(-1), rows)


@dataclass
class CenterAssignments:
    """Soft assignments of one caption and one video to K shared centres (background centre left out): ``text``
    (L, K) per token, ``video`` (M, K) per video row, ``row_mask`` (M,) True for real rows, ``rows`` the (expert,
    row number) of each of the M rows."""

    text: Tensor
    video: Tensor
    row_mask: Tensor
    rows: list[tuple[str, int]]


class RetrievalHead(nn.Module, metaclass=ABCMeta):
    """Interface of an alignment head, and the capabilities every consumer asks it for.

    ``loss(text_emb, video_emb)`` takes the embeddings of B matching pairs (text i describes video i) and returns
    a scalar training loss over the B × B batch.

    Class attributes a head declares (``pipeline.heads.registry.register_head`` checks them):

    - ``name``: its registry name (= its module's name); ``config_class``: its typed config; ``video_embedding``:
      the ``Embedding`` class ``encode_video`` returns (what an embedding store rebuilds from its HDF5 rows).
    - ``text_conditioned``: True (the default) when the video side depends on the query: the index vectors are then
      a query-independent proxy and search re-ranks candidates with ``similarity``; False (``InnerProductHead``)
      when ``similarity`` is the inner product of ``index_query_vectors`` and ``index_video_vectors`` (exact).
    - ``ablation_variants``: variant name -> ``head_options`` merged into the config; what ``t2v ablation`` and a
      run's ``ablation = true`` train (empty: the head has no ablation table).
    - ``ablation_rows``: table row -> (variant of ``ablation_variants``, branches scored at test time), in table
      order (empty: one row per variant, scored with ``"both"``).
    - ``scoring_branches``: the choices of ``set_scoring_branches`` (``t2v evaluate --branches``); ``("both",)``
      for a head without a test-time branch ablation.

    - ``training_stages``: names of the head's training stages, in order (empty: one stage). With
      ``TrainConfig.stages`` the training loop calls ``set_training_stage(i)`` and trains only the parameters
      ``stage_parameters(i)`` names (the text encoder only in the first stage); the best checkpoint is chosen in
      the last stage.

    Optional capabilities, off by default: ``explain`` (per-hit explanations of a search), ``has_center_view`` /
    ``center_assignments`` (the report's centre/assignment view).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    video_embedding: ClassVar[type[Embedding]]
    text_conditioned: ClassVar[bool] = True
    ablation_variants: ClassVar[dict[str, dict[str, Any]]] = {}
    ablation_rows: ClassVar[dict[str, tuple[str, str]]] = {}
    scoring_branches: ClassVar[tuple[str, ...]] = ("both",)
    training_stages: ClassVar[tuple[str, ...]] = ()
    expert_names: list[str]

    def __init__(self, config: Config, expert_dims: dict[str, int], text_dim: int) -> None:
        super().__init__()
        self.training_stage: int | None = None
        self.config = config
        self.expert_dims = dict(expert_dims)
        self.text_dim = int(text_dim)

    def build_args(self) -> dict[str, Any]:
        """Keyword arguments of ``build_head`` that rebuild this head (for checkpoints)."""
        return {
            "name": self.name,
            "config": self.config.model_dump(),
            "expert_dims": dict(self.expert_dims),
            "text_dim": self.text_dim,
        }

    @abstractmethod
    def encode_video(self, batch: VideoBatch) -> Embedding:
        """Encode B videos (no text involved)."""

    @abstractmethod
    def encode_text(self, batch: TextBatch) -> Embedding:
        """Encode B texts (no video involved)."""

    @abstractmethod
    def similarity(self, text_emb: Embedding, video_emb: Embedding) -> Tensor:
        """(B_t, B_v) scores of every text against every video, higher = more similar."""

    @abstractmethod
    def loss(self, text_emb: Embedding, video_emb: Embedding) -> Tensor:
        """Scalar loss over B matching pairs (text i ↔ video i), all other pairs being negatives."""

    @abstractmethod
    def index_video_vectors(self, video_emb: Embedding) -> Tensor:
        """(B_v, P) vectors an embedding store indexes for these videos."""

    @abstractmethod
    def index_query_vectors(self, text_emb: Embedding) -> Tensor:
        """(B_t, P) query vectors searched against ``index_video_vectors``."""

    def index_exact(self, video_emb: Embedding) -> Tensor:
        """(B_v,) bool: videos whose index inner product *is* ``similarity`` (none for text-conditioned heads)."""
        return torch.zeros(len(video_emb), dtype=torch.bool)

    def set_scoring_branches(self, branches: str) -> None:
        """Score with these branches in eval mode (test-time ablation); only ``"both"`` unless overridden."""
        if branches not in self.scoring_branches:
            raise ConfigError(
                f"{self.name}: branches must be {'|'.join(self.scoring_branches)}, got {branches!r}"
            )

    def set_training_stage(self, stage: int | None) -> None:
        """Enter stage ``stage`` of ``training_stages`` (None: the trained model, every part in use)."""
        if stage is not None and not 0 <= stage < len(self.training_stages):
            raise ConfigError(f"{self.name}: training stage {stage} not in {list(self.training_stages)}")
        self.training_stage = stage

    def stage_parameters(self, stage: int) -> set[str]:
        """Names (as ``named_parameters``) of the parameters trained in stage ``stage``; every one by default."""
        return {name for name, _ in self.named_parameters()}

    def explain(
        self, experts: list[str], text_emb: Embedding, video_emb: Embedding
    ) -> tuple[dict[str, float] | None, list[dict[str, Any]]] | None:
        """Why one query (``text_emb`` of 1) scored these videos: (query-level expert weights or None, one
        explanation dict per video); None when the head has nothing to explain."""
        return None

    @property
    def has_center_view(self) -> bool:
        """True when ``center_assignments`` is available (the report then shows centre/assignment views)."""
        return False

    def center_assignments(self, text: TextBatch, video: VideoBatch) -> CenterAssignments:
        """Centre assignments of one caption (``text`` of 1) and one video (``video`` of 1)."""
        raise HeadInputError(f"{self.name}: this head has no centre/assignment view")

    def prepare_video(self, batch: VideoBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Validate a batch against ``expert_names``/``expert_dims``; return per-expert features (B, R_e, D_e) with
        padding rows zeroed (and one all-padding row added when R_e = 0) and row masks (B, R_e) that are False
        for every row of an unavailable expert."""
        columns = batch.experts if batch.experts is not None else self.expert_names
        if batch.available.dim() != 2 or batch.available.shape[1] != len(columns):
            raise HeadInputError(
                f"{self.name}: available must be (B, {len(columns)}) for experts {columns}, "
                f"got {tuple(batch.available.shape)}"
            )
        features: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        for expert in self.expert_names:
            if expert not in columns:
                raise HeadInputError(
                    f"{self.name}: video batch has no availability column for expert {expert!r}"
                )
            i = columns.index(expert)
            if expert not in batch.features or expert not in batch.masks:
                raise HeadInputError(f"{self.name}: video batch has no features/mask for expert {expert!r}")
            feats, mask = batch.features[expert], batch.masks[expert]
            if feats.dim() != 3 or feats.shape[2] != self.expert_dims[expert]:
                raise HeadInputError(
                    f"{self.name}: expert {expert!r} features must be (B, R, {self.expert_dims[expert]}), "
                    f"got {tuple(feats.shape)}"
                )
            if mask.shape != feats.shape[:2]:
                raise HeadInputError(
                    f"{self.name}: expert {expert!r} mask {tuple(mask.shape)} does not match features "
                    f"{tuple(feats.shape)}"
                )
            mask = mask.bool() & batch.available[:, i : i + 1].bool()
            if feats.shape[1] == 0:
                feats = feats.new_zeros(feats.shape[0], 1, feats.shape[2])
                mask = mask.new_zeros(mask.shape[0], 1)
            features[expert] = feats.masked_fill(~mask.unsqueeze(-1), 0.0)
            masks[expert] = mask
        return features, masks

    def check_text(self, batch: TextBatch) -> None:
        if batch.tokens.dim() != 3 or batch.tokens.shape[2] != self.text_dim:
            raise HeadInputError(
                f"{self.name}: text tokens must be (B, L, {self.text_dim}), got {tuple(batch.tokens.shape)}"
            )
        if batch.mask.shape != batch.tokens.shape[:2]:
            raise HeadInputError(
                f"{self.name}: text mask {tuple(batch.mask.shape)} does not match tokens {tuple(batch.tokens.shape)}"
            )


class InnerProductHead(RetrievalHead):
    """A head whose score is ``query_vectors(t) @ video_vectors(v).T`` when every expert is present."""

    text_conditioned: ClassVar[bool] = False

    @abstractmethod
    def query_vectors(self, text_emb: Embedding, available: Tensor | None = None) -> Tensor:
        """(B_t, P) query vectors; ``available`` (n_experts,) bool selects the expert set of the videos scored."""

    @abstractmethod
    def video_vectors(self, video_emb: Embedding) -> Tensor:
        """(B_v, P) video vectors."""

    def index_video_vectors(self, video_emb: Embedding) -> Tensor:
        """``video_vectors``: the index holds the exact video side."""
        return self.video_vectors(video_emb)

    def index_query_vectors(self, text_emb: Embedding) -> Tensor:
        """``query_vectors`` for videos with every expert."""
        return self.query_vectors(text_emb)

    def index_exact(self, video_emb: Embedding) -> Tensor:
        """All videos, unless the head's score depends on which experts a video has (then override)."""
        return torch.ones(len(video_emb), dtype=torch.bool)


def pick_expert(
    requested: str | None, expert_dims: dict[str, int], preferred: tuple[str, ...], head: str
) -> str:
    """``requested`` if given (it must be in ``expert_dims``), else the first of ``preferred`` that the data has,
    else the first expert of ``expert_dims``."""
    if requested:
        if requested not in expert_dims:
            raise ConfigError(
                f"head {head!r}: expert {requested!r} has no features; available: {sorted(expert_dims)}"
            )
        return requested
    for name in preferred:
        if name in expert_dims:
            return name
    if not expert_dims:
        raise ConfigError(f"head {head!r}: no expert features were given")
    return next(iter(expert_dims))


def masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over the True positions of ``mask`` (broadcastable to ``logits``); all-zero where none is True."""
    any_valid = mask.any(dim=dim, keepdim=True)
    filled = logits.masked_fill(~mask, float("-inf")).masked_fill(~any_valid, 0.0)
    return filled.softmax(dim=dim) * any_valid.to(logits.dtype)
