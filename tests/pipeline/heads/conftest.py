"""Tiny-tensor set-up shared by the head tests: random padded batches, garbage padding rows, encode-and-score.

Each head's own test module (``test_<head>.py``) defines ``DIMS`` (expert -> feature size) and ``SMALL`` (a tiny
config); the contract test (``test_head_contract.py``) runs every registered head through them.
"""

from __future__ import annotations

import torch

from pipeline.heads import Embedding, RetrievalHead, TextBatch, VideoBatch, build_head

TEXT_DIM = 7


def random_batches(
    dims: dict[str, int],
    b: int = 4,
    rows: int = 3,
    tokens: int = 5,
    seed: int = 1,
    experts: list[str] | None = None,
) -> tuple[VideoBatch, TextBatch]:
    """B videos with ``rows`` rows of every expert of ``dims`` and B texts of ``tokens`` tokens, all real and
    available (tests mask what they need); ``experts`` names the availability columns (None: the head's)."""
    g = torch.Generator().manual_seed(seed)
    feats = {e: torch.randn(b, rows, d, generator=g) for e, d in dims.items()}
    masks = {e: torch.ones(b, rows, dtype=torch.bool) for e in dims}
    video = VideoBatch(feats, masks, torch.ones(b, len(dims), dtype=torch.bool), experts=experts)
    text = TextBatch(torch.randn(b, tokens, TEXT_DIM, generator=g), torch.ones(b, tokens, dtype=torch.bool))
    return video, text


def pad_batches(
    video: VideoBatch, text: TextBatch, video_value: float, text_value: float, extra: int = 2
) -> tuple[VideoBatch, TextBatch]:
    """The same batches with ``extra`` padding rows (mask False) of every expert and text, filled with the values."""
    feats = {
        e: torch.cat([x, torch.full((x.shape[0], extra, x.shape[2]), video_value)], 1)
        for e, x in video.features.items()
    }
    masks = {
        e: torch.cat([m, torch.zeros(m.shape[0], extra, dtype=torch.bool)], 1) for e, m in video.masks.items()
    }
    tokens = torch.cat([text.tokens, torch.full((text.tokens.shape[0], extra, TEXT_DIM), text_value)], 1)
    tmask = torch.cat([text.mask, torch.zeros(text.mask.shape[0], extra, dtype=torch.bool)], 1)
    return VideoBatch(feats, masks, video.available, video.experts), TextBatch(tokens, tmask)


def embed(head: RetrievalHead, video: VideoBatch, text: TextBatch) -> tuple[Embedding, Embedding]:
    """(text embedding, video embedding)."""
    return head.encode_text(text), head.encode_video(video)


def scores(head: RetrievalHead, video: VideoBatch, text: TextBatch) -> torch.Tensor:
    """(B_t, B_v) similarity of freshly encoded batches."""
    return head.similarity(*embed(head, video, text))


def seeded_head(name: str, config: dict, dims: dict[str, int], seed: int = 0) -> RetrievalHead:
    """``build_head`` after ``torch.manual_seed(seed)``: the same weights every time."""
    torch.manual_seed(seed)
    return build_head(name, config, dims, TEXT_DIM)
