"""Alignment heads on cached expert features: T2VLAD, CRET, MGFI/CMFI, one module each, found through the registry
(``pipeline.heads.registry``: ``head_names``, ``head_class``, ``build_head``).

Every head follows ``pipeline.heads.base.RetrievalHead``; see that module for the batch and embedding contract and
the capabilities a head declares. The names below are imported on first use, so that ``head_names()`` (the command
line's choices, the training config's check) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Embedding": "pipeline.heads.base",
    "HeadInputError": "pipeline.heads.base",
    "InnerProductHead": "pipeline.heads.base",
    "RetrievalHead": "pipeline.heads.base",
    "TextBatch": "pipeline.heads.base",
    "VideoBatch": "pipeline.heads.base",
    "build_head": "pipeline.heads.registry",
    "head_class": "pipeline.heads.registry",
    "head_config_class": "pipeline.heads.registry",
    "head_names": "pipeline.heads.registry",
    "register_head": "pipeline.heads.registry",
}


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


__all__ = sorted(_EXPORTS)
