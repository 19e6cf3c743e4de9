"""The vectors an embedding store's index holds, for every head (see ``pipeline.stores.store``).

Inner-product heads (T2VLAD, CRET): ``head.video_vectors`` / ``head.query_vectors``, whose inner product is the
head's score for videos with every expert (``complete_mask``). MGFI (text-conditioned): a query-independent proxy,
the frame values pooled with uniform attention and refined by the head's own ``ff``/``ln_o`` (what the head computes
when attention is uniform), concatenated with the audio vector, against the normalised sentence feature (twice when
the head has audio) — used only to pick candidates that the head then re-ranks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import StoreError
from pipeline.heads import Embedding, RetrievalHead
from pipeline.heads.base import masked_mean


def index_vectors(head: RetrievalHead, emb: Embedding) -> np.ndarray:
    """(B, P) float32 index vectors of video embeddings (exact video vectors, or MGFI's proxy)."""
    with torch.no_grad():
        if not head.text_conditioned:
            return head.video_vectors(emb).float().cpu().numpy()
        if head.name != "mgfi":
            raise StoreError(f"head {head.name!r}: text-conditioned head without an index proxy")
        mean = masked_mean(emb.values, emb.frame_mask, dim=1)
        parts = [F.normalize(mean + head.ff(head.ln_o(mean)), dim=-1)]
        if emb.audio is not None:
            parts.append(emb.audio * emb.audio_available.unsqueeze(-1).to(emb.audio.dtype))
        return torch.cat(parts, dim=1).float().cpu().numpy()


def query_index_vectors(head: RetrievalHead, text_emb: Embedding) -> np.ndarray:
    """(B, P) float32 query vectors against ``index_vectors`` (all experts present / MGFI proxy)."""
    with torch.no_grad():
        if not head.text_conditioned:
            return head.query_vectors(text_emb).float().cpu().numpy()
        sentence = F.normalize(text_emb.sentence, dim=-1)
        parts = [sentence, sentence] if head.audio_expert else [sentence]
        return torch.cat(parts, dim=1).float().cpu().numpy()


def complete_mask(head: RetrievalHead, emb: Embedding) -> np.ndarray:
    """(B,) bool: videos whose ``index_vectors`` score is exact (all experts present; always for CRET)."""
    if head.text_conditioned:
        return np.zeros(len(emb), bool)
    available = getattr(emb, "available", None)
    if available is None:
        return np.ones(len(emb), bool)
    return available.all(dim=1).cpu().numpy()
