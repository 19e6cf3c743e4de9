"""Retrieval metrics identical to the Collaborative Experts ``model/metric.py`` (``t2v_metrics``, ``v2t_metrics``,
``cols2metrics``), which MMT and T2VLAD reuse (DESIGN §6).

Input: ``sims`` (num_texts, num_videos) scores, higher = more similar; ``text_to_video`` (num_texts,) the column of
each text's video; optional ``text_mask`` (num_texts,) bool, False for padded caption slots.

Ranks are 0-based positions in the descending score order. Ties get the mean of the tied positions (CE's
``break_ties="averaging"``): a query whose correct item scores ``g`` has rank ``n_greater + (n_equal - 1) / 2``,
where ``n_equal`` counts the correct item itself. So the correct item tied with one other at the top has rank 0.5,
and a constant row over n items gives (n - 1) / 2. Ties are exact float equality of the scores, as in CE.

- text→video: every unmasked text is a query; its rank is the rank of its video among all videos.
- video→text: every column is a query. Each of the video's unmasked captions is ranked among all unmasked texts
  for that column (so the video's other captions compete, as in CE), and the video's rank is the best (minimum) of
  those ranks. Masked texts are neither queries nor candidates. A video without any unmasked caption has rank
  infinity (CE's ``min_rank = np.inf``): a miss at every K, and it makes MnR infinite.

As ``cols2metrics``: R@1 is the percentage of queries with rank == 0; R@5, R@10, R@50 the percentage with
rank < K, so a tie-averaged rank of K - 0.5 (e.g. the correct video tied with the next one at 0-based positions 4
and 5) counts as a hit at K, while a tie at the top (rank 0.5) is not a hit at 1. ``MdR`` and ``MnR`` are the median
and mean rank + 1 (1-based); ``geometric_mean`` is the geometric mean of R1, R5, R10 (0 when any of them is 0), used
for checkpoint selection.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_manifest.errors import T2VError

METRIC_KEYS = ("R1", "R5", "R10", "R50", "MdR", "MnR", "geometric_mean")
_CHUNK = 2048


class MetricsInputError(T2VError, ValueError):
    """The similarity matrix, the text→video map or the text mask are inconsistent."""


def _to_numpy(array: Any, name: str) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as err:
        raise MetricsInputError(f"retrieval_metrics: {name} is not array-like: {err}") from err


def _validate(
    sims: Any, text_to_video: Any, text_mask: Any | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = _to_numpy(sims, "sims").astype(np.float64, copy=False)
    if scores.ndim != 2:
        raise MetricsInputError(
            f"retrieval_metrics: sims must be 2-D (num_texts, num_videos), got {scores.shape}"
        )
    num_texts, num_videos = scores.shape
    if num_texts == 0 or num_videos == 0:
        raise MetricsInputError(f"retrieval_metrics: empty similarity matrix {scores.shape}")
    cols = _to_numpy(text_to_video, "text_to_video")
    if cols.shape != (num_texts,) or not np.issubdtype(cols.dtype, np.integer):
        raise MetricsInputError(
            f"retrieval_metrics: text_to_video must be an integer array of shape ({num_texts},), "
            f"got {cols.dtype} {cols.shape}"
        )
    if cols.min() < 0 or cols.max() >= num_videos:
        raise MetricsInputError(
            f"retrieval_metrics: text_to_video values must lie in [0, {num_videos}), "
            f"got [{cols.min()}, {cols.max()}]"
        )
    if text_mask is None:
        mask = np.ones(num_texts, dtype=bool)
    else:
        mask = _to_numpy(text_mask, "text_mask")
        if mask.shape != (num_texts,) or mask.dtype != np.bool_:
            raise MetricsInputError(
                f"retrieval_metrics: text_mask must be a bool array of shape ({num_texts},), got {mask.dtype} {mask.shape}"
            )
    if not mask.any():
        raise MetricsInputError("retrieval_metrics: every text is masked, there is no query")
    if np.isnan(scores[mask]).any():
        raise MetricsInputError("retrieval_metrics: sims contains NaN for unmasked texts")
    return scores, cols.astype(np.int64), mask


def _tie_averaged_rank(n_greater: np.ndarray, n_equal: np.ndarray) -> np.ndarray:
    """0-based rank with ties given the mean of the tied positions (n_equal counts the item itself)."""
    return n_greater + (n_equal - 1) / 2.0


def text_to_video_ranks(scores: np.ndarray, text_to_video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rank (0-based, tie-averaged) of each unmasked text's video among all videos, in text order."""
    rows = np.flatnonzero(mask)
    ranks = np.empty(rows.size, dtype=np.float64)
    for start in range(0, rows.size, _CHUNK):
        idx = rows[start : start + _CHUNK]
        block = scores[idx]
        gt = block[np.arange(idx.size), text_to_video[idx]][:, None]
        ranks[start : start + idx.size] = _tie_averaged_rank((block > gt).sum(1), (block == gt).sum(1))
    return ranks


def video_to_text_ranks(scores: np.ndarray, text_to_video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Best (minimum) 0-based rank among each video's unmasked captions, infinity without one, in column order."""
    valid = np.flatnonzero(mask)
    owners = text_to_video[valid]
    ranks = np.full(scores.shape[1], np.inf)
    for video in np.unique(owners):
        column = np.sort(scores[valid, video])
        own = scores[valid[owners == video], video]
        lo = np.searchsorted(column, own, side="left")
        hi = np.searchsorted(column, own, side="right")
        ranks[video] = _tie_averaged_rank(column.size - hi, hi - lo).min()
    return ranks


def ranks_to_metrics(ranks: np.ndarray) -> dict[str, float]:
    """CE's ``cols2metrics`` of 0-based ranks: R@1 (rank == 0), R@5/10/50 (rank < K) in percent, median and mean
    rank + 1, geometric mean of R1/R5/R10."""
    out = {"R1": float(100.0 * np.mean(ranks == 0))}
    out.update({f"R{k}": float(100.0 * np.mean(ranks < k)) for k in (5, 10, 50)})
    out["MdR"] = float(np.median(ranks)) + 1.0
    out["MnR"] = float(np.mean(ranks)) + 1.0
    recalls = np.array([out["R1"], out["R5"], out["R10"]])
    out["geometric_mean"] = float(np.exp(np.log(recalls).mean())) if (recalls > 0).all() else 0.0
    return out


def retrieval_metrics(
    sims: Any, text_to_video: Any, text_mask: Any | None = None
) -> dict[str, dict[str, float]]:
    """text→video and video→text metrics of a (num_texts, num_videos) score matrix (numpy or torch).

    Returns ``{"t2v": {...}, "v2t": {...}}`` with keys ``R1, R5, R10, R50, MdR, MnR, geometric_mean``; recalls are
    percentages, MdR/MnR 1-based from tie-averaged 0-based ranks (see the module docstring for the exact semantics).
    Raises MetricsInputError on inconsistent shapes, out-of-range video columns or NaN scores.
    """
    scores, cols, mask = _validate(sims, text_to_video, text_mask)
    return {
        "t2v": ranks_to_metrics(text_to_video_ranks(scores, cols, mask)),
        "v2t": ranks_to_metrics(video_to_text_ranks(scores, cols, mask)),
    }
