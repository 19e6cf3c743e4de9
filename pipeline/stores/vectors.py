"""The vectors an embedding store's index holds, asked of the head (see ``pipeline.stores.store``).

Inner-product heads: ``index_video_vectors`` / ``index_query_vectors`` are the head's exact ``video_vectors`` /
``query_vectors``, whose inner product is the head's score for the videos ``index_exact`` marks (``complete``).
Text-conditioned heads: a query-independent proxy of the head's choosing, used only to pick candidates that the
head then re-ranks (``RetrievalHead`` documents the contract).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.heads import Embedding, RetrievalHead


def index_vectors(head: RetrievalHead, emb: Embedding) -> np.ndarray:
    """(B, P) float32 index vectors of video embeddings."""
    with torch.no_grad():
        return head.index_video_vectors(emb).float().cpu().numpy()


def query_index_vectors(head: RetrievalHead, text_emb: Embedding) -> np.ndarray:
    """(B, P) float32 query vectors against ``index_vectors``."""
    with torch.no_grad():
        return head.index_query_vectors(text_emb).float().cpu().numpy()


def complete_mask(head: RetrievalHead, emb: Embedding) -> np.ndarray:
    """(B,) bool: videos whose ``index_vectors`` score is exact."""
    return head.index_exact(emb).cpu().numpy()
