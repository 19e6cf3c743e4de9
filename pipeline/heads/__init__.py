"""Alignment heads on cached expert features: T2VLAD, CRET, MGFI/CMFI (``build_head`` picks one by name).

Every head follows ``pipeline.heads.base.RetrievalHead``; see that module for the batch and embedding contract.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.heads.base import (
    Embedding,
    HeadInputError,
    InnerProductHead,
    RetrievalHead,
    TextBatch,
    VideoBatch,
)

# name -> (module, head class, config class)
_HEADS: dict[str, tuple[str, str, str]] = {
    "t2vlad": ("pipeline.heads.t2vlad", "T2VLADHead", "T2VLADConfig"),
    "cret": ("pipeline.heads.cret", "CRETHead", "CRETConfig"),
    "mgfi": ("pipeline.heads.mgfi", "MGFIHead", "MGFIConfig"),
}


def head_names() -> list[str]:
    """Names accepted by ``build_head``."""
    return sorted(_HEADS)


def head_config_class(name: str) -> type[Config]:
    """The typed config of a head (its defaults are the paper's settings)."""
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}; known heads: {head_names()}")
    module, _, config_cls = _HEADS[name]
    return getattr(import_module(module), config_cls)


def build_head(
    name: str, config: dict[str, Any] | None, expert_dims: dict[str, int], text_dim: int
) -> RetrievalHead:
    """Build head ``name`` from a plain config dict (unknown keys → ConfigError), the feature size of each expert
    the data offers (``{"rgb": 1280, ...}``) and the text encoder's token size."""
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}; known heads: {head_names()}")
    module, head_cls, _ = _HEADS[name]
    typed = head_config_class(name).parse(config or {}, f"head {name!r}")
    return getattr(import_module(module), head_cls)(typed, dict(expert_dims), int(text_dim))


__all__ = [
    "Embedding",
    "HeadInputError",
    "InnerProductHead",
    "RetrievalHead",
    "TextBatch",
    "VideoBatch",
    "build_head",
    "head_config_class",
    "head_names",
]
