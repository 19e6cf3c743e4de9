"""Center-assignment views like Fig. 3 of the T2VLAD paper: which caption words and which video rows a shared
VLAD center gathers.

For one caption and one video, the soft assignments ``a_ij`` of T2VLAD's local branch (``pipeline.heads.netvlad``)
are recomputed exactly as the head does: caption tokens through ``text_proj`` against the shared centers; video
rows of every expert through ``local_proj`` and the transformer layer, then the video-side centers of the variant
(shared for ``full``, ``video_vlad`` for ``separate_vlads``, the port's detached centers + video bias for
``public_port``). The centers are ranked by the caption's assignment mass (background center left out); for each,
the words and the video rows with the highest assignment are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.features.reader import VideoFeatures
from pipeline.features.shards import STATUS_OK
from pipeline.heads import TextBatch
from pipeline.heads.netvlad import vlad_assign
from pipeline.training.dataset import VideoSample, collate, uniform_rows

SUPPORTED_VARIANTS = ("full", "separate_vlads", "public_port")


@dataclass
class RowRef:
    """One video row: its expert, row number, time span in seconds, word (token-level experts) and weight."""

    expert: str
    row: int
    start: float
    end: float
    token: str | None
    weight: float


@dataclass
class CenterView:
    """Center ``center``: the caption's assignment mass on it, its top words (word, weight) and top video rows."""

    center: int
    text_mass: float
    words: list[tuple[str, float]] = field(default_factory=list)
    rows: list[RowRef] = field(default_factory=list)


def supports_assignments(head: torch.nn.Module) -> bool:
    """True for T2VLAD variants whose local branch assigns both modalities to VLAD centers."""
    return head.name == "t2vlad" and head.use_local and head.config.variant in SUPPORTED_VARIANTS


def video_rows(features: dict[str, VideoFeatures], max_rows: dict[str, int]) -> dict[str, VideoFeatures]:
    """Each expert's rows as the store encoded them (uniform subsample to ``max_rows[expert]``; unusable -> no
    rows)."""
    out = {}
    for expert, vf in features.items():
        ok = int(vf.status) == STATUS_OK and len(vf.features) > 0
        keep = uniform_rows(len(vf.features), max_rows[expert]) if ok else np.zeros(0, np.int64)
        tokens = [vf.tokens[i] for i in keep] if vf.tokens is not None else None
        out[expert] = VideoFeatures(vf.features[keep], vf.timestamps[keep], vf.status, vf.error, tokens)
    return out


@torch.no_grad()
def center_views(
    head: torch.nn.Module,
    text: TextBatch,
    words: list[str],
    rows: dict[str, VideoFeatures],
    *,
    top_centers: int = 4,
    top_words: int = 3,
    top_rows: int = 3,
    skip_words: tuple[str, ...] = ("[CLS]", "[SEP]", "<s>", "</s>"),
) -> list[CenterView]:
    """Views of the ``top_centers`` centers for one caption (``text`` batch of 1, ``words`` its tokens) and one
    video (``rows`` from ``video_rows``, every expert of the head)."""
    k = head.config.num_clusters
    mask = text.mask.bool()
    tokens = text.tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
    text_assign = vlad_assign(head.text_proj(tokens), mask, head.text_vlad.centers, head.text_vlad.bias)[0]
    sample = VideoSample("v", 0, {e: rows[e].features for e in head.expert_names}, None)
    batch = collate([sample], head.expert_names, {e: rows[e].features.shape[1] for e in head.expert_names})
    feats, masks = head.prepare_video(batch.video)
    z = torch.cat([head.local_proj[e](feats[e]) for e in head.expert_names], dim=1)
    row_mask = torch.cat([masks[e] for e in head.expert_names], dim=1)
    z = head.encoder(z, src_key_padding_mask=~row_mask & row_mask.any(dim=1, keepdim=True))
    centers, bias = head.text_vlad.centers, head.text_vlad.bias
    if head.config.variant == "separate_vlads":
        centers, bias = head.video_vlad.centers, head.video_vlad.bias
    elif head.config.variant == "public_port":
        bias = head.video_bias
    video_assign = vlad_assign(z, row_mask, centers, bias)[0]
    sources = [(e, r) for e in head.expert_names for r in range(feats[e].shape[1])]
    n_words = int(mask[0].sum())
    shown = [i for i in range(min(n_words, len(words))) if words[i] not in skip_words]
    mass = text_assign[: len(words), :k].sum(dim=0)
    views = []
    for j in torch.argsort(mass, descending=True)[:top_centers].tolist():
        view = CenterView(j, float(mass[j]))
        for i in sorted(shown, key=lambda i: -float(text_assign[i, j]))[:top_words]:
            view.words.append((words[i], float(text_assign[i, j])))
        for m in torch.argsort(video_assign[:, j], descending=True)[:top_rows].tolist():
            if not bool(row_mask[0, m]):
                continue
            expert, r = sources[m]
            vf = rows[expert]
            token = vf.tokens[r] if vf.tokens is not None else None
            start, end = (float(x) for x in vf.timestamps[r])
            view.rows.append(RowRef(expert, r, start, end, token, float(video_assign[m, j])))
        views.append(view)
    return views
