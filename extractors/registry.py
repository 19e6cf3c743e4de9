"""The expert registry: names -> Expert classes, with lazy imports.

Importing this module imports no model library: the built-in experts are known by name and module
(``extractors/experts/<name>.py``) and imported only when asked for. Registering a name twice is an error, not a warning.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import create_model

from extractors import experts as experts_package
from extractors.base import INPUT_KINDS, Expert
from pipeline.config import Config
from pipeline.errors import ConfigError

E = TypeVar("E", bound=type[Expert])

# the built-in experts: one module per expert in extractors/experts/, named like the expert (found without
# importing them, so adding an expert is adding its module)
BUILTIN_EXPERTS: dict[str, str] = {
    m.name: f"{experts_package.__name__}.{m.name}" for m in pkgutil.iter_modules(experts_package.__path__)
}
_REGISTRY: dict[str, type[Expert]] = {}


def register_expert(cls: E) -> E:
    """Class decorator adding an Expert subclass under ``cls.name``; ConfigError on a duplicate or bad declaration."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__}: an expert needs a non-empty class attribute 'name'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ConfigError(f"expert {name!r} is already registered by {_REGISTRY[name].__module__}")
    missing = [a for a in ("version", "input_kind", "dim") if not hasattr(cls, a)]
    if missing:
        raise ConfigError(f"expert {name!r}: missing class attribute(s) {missing}")
    if cls.input_kind not in INPUT_KINDS:
        raise ConfigError(f"expert {name!r}: input_kind {cls.input_kind!r} is not one of {INPUT_KINDS}")
    _REGISTRY[name] = cls
    return cls


def expert_names() -> list[str]:
    """Sorted names of all experts: the built-in ones plus any registered elsewhere."""
    return sorted(set(BUILTIN_EXPERTS) | set(_REGISTRY))


def expert_class(name: str) -> type[Expert]:
    """The Expert class registered as ``name`` (importing its module on first use); ConfigError if unknown."""
    if name not in _REGISTRY and name in BUILTIN_EXPERTS:
        importlib.import_module(BUILTIN_EXPERTS[name])
        if name not in _REGISTRY:
            raise ConfigError(f"{BUILTIN_EXPERTS[name]}: registers no expert named {name!r}")
    if name not in _REGISTRY:
        raise ConfigError(f"unknown expert {name!r}; known experts: {', '.join(expert_names())}")
    return _REGISTRY[name]


def get_expert(name: str, config: Mapping[str, Any] | None = None) -> Expert:
    """A new (not yet loaded) expert ``name`` with ``config`` overrides; ConfigError for unknown names or keys."""
    return expert_class(name)(config)


def expert_options_model(names: Iterable[str]) -> type[Config]:
    """A config with one optional table per expert of ``names``, each checked against that expert's ``Config``
    (so a file of per-expert options is validated, every problem named by ``expert.option``, before any run)."""
    fields: dict[str, Any] = {name: (expert_class(name).Config, None) for name in names}
    return create_model("ExpertOptions", __base__=Config, **fields)
