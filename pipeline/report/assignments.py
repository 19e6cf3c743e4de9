"""Center-assignment views like Fig. 3 of the T2VLAD paper: which caption words and which video rows a shared
center gathers.

The soft assignments come from the head (``RetrievalHead.center_assignments``, offered where ``has_center_view``:
T2VLAD recomputes its local branch's VLAD assignments exactly as it encodes). The centers are ranked by the
caption's assignment mass; for each, the words and the video rows with the highest assignment are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.features.reader import VideoFeatures
from pipeline.features.shards import STATUS_OK
from pipeline.heads import RetrievalHead, TextBatch
from pipeline.training.dataset import VideoSample, collate, uniform_rows


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
    head: RetrievalHead,
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
    sample = VideoSample("v", 0, {e: rows[e].features for e in head.expert_names}, None)
    batch = collate([sample], head.expert_names, {e: rows[e].features.shape[1] for e in head.expert_names})
    assignment = head.center_assignments(text, batch.video)
    text_assign, video_assign, row_mask = assignment.text, assignment.video, assignment.row_mask
    mask = text.mask.bool()
    n_words = int(mask[0].sum())
    shown = [i for i in range(min(n_words, len(words))) if words[i] not in skip_words]
    mass = text_assign[: len(words)].sum(dim=0)
    views = []
    for j in torch.argsort(mass, descending=True)[:top_centers].tolist():
        view = CenterView(j, float(mass[j]))
        for i in sorted(shown, key=lambda i: -float(text_assign[i, j]))[:top_words]:
            view.words.append((words[i], float(text_assign[i, j])))
        for m in torch.argsort(video_assign[:, j], descending=True)[:top_rows].tolist():
            if not bool(row_mask[m]):
                continue
            expert, r = assignment.rows[m]
            vf = rows[expert]
            token = vf.tokens[r] if vf.tokens is not None else None
            start, end = (float(x) for x in vf.timestamps[r])
            view.rows.append(RowRef(expert, r, start, end, token, float(video_assign[m, j])))
        views.append(view)
    return views
