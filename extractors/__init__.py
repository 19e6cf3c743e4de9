"""Experts (feature extractors), their registry and their weights. See ``extractors/base.py`` for the contract."""

from extractors.registry import expert_class, expert_names, get_expert, register_expert

__all__ = ["expert_class", "expert_names", "get_expert", "register_expert"]
