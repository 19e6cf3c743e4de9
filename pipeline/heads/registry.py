"""The head registry: names -> ``RetrievalHead`` classes, with lazy imports.

A head is one module ``pipeline/heads/<name>.py`` holding a ``RetrievalHead`` subclass decorated with
``@register_head`` whose class attribute ``name`` is ``"<name>"``; everything else (training, stores, search, report,
ablations, the command line) asks the registry and the head class. Importing this module imports neither torch nor
any head: the built-in heads are found by *reading* the package's modules for a ``@register_head`` class (a few ms),
and a head's module is imported the first time its class is asked for. Registering a name twice is an error.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.heads.base import RetrievalHead

H = TypeVar("H", bound=type)
_PACKAGE = "pipeline.heads"
_REGISTRY: dict[str, type[RetrievalHead]] = {}
_REQUIRED = ("config_class", "video_embedding")


def _declares_head(source: str) -> bool:
    """True when the module source defines a class decorated with ``register_head``."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Name) and dec.id == "register_head") or (
                    isinstance(dec, ast.Attribute) and dec.attr == "register_head"
                ):
                    return True
    return False


@cache
def builtin_heads() -> dict[str, str]:
    """Built-in head name -> module, from the ``pipeline/heads/*.py`` files that declare a registered head."""
    found = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if path.stem != "registry" and "register_head" in source and _declares_head(source):
            found[path.stem] = f"{_PACKAGE}.{path.stem}"
    return found


def register_head(cls: H) -> H:
    """Class decorator adding a RetrievalHead subclass under ``cls.name``; ConfigError on a duplicate name or a
    missing declaration. A head defined in ``pipeline/heads/`` must be named after its module."""
    from pipeline.heads.base import RetrievalHead

    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__}: a head needs a non-empty class attribute 'name'")
    if not (isinstance(cls, type) and issubclass(cls, RetrievalHead)):
        raise ConfigError(f"head {name!r}: {cls.__qualname__} is not a RetrievalHead subclass")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ConfigError(f"head {name!r} is already registered by {_REGISTRY[name].__module__}")
    package, _, stem = cls.__module__.rpartition(".")
    if package == _PACKAGE and stem != name:
        raise ConfigError(
            f"head {name!r}: a built-in head must live in {_PACKAGE}.{name}, not {cls.__module__}"
        )
    missing = [a for a in _REQUIRED if not hasattr(cls, a)]
    if missing:
        raise ConfigError(f"head {name!r}: missing class attribute(s) {missing}")
    _REGISTRY[name] = cls
    return cls


def head_names() -> list[str]:
    """Sorted names accepted by ``build_head``: the built-in heads plus any registered elsewhere (imports none)."""
    return sorted(set(builtin_heads()) | set(_REGISTRY))


def head_class(name: str) -> type[RetrievalHead]:
    """The head class registered as ``name`` (importing its module on first use); ConfigError if unknown."""
    if name not in _REGISTRY and name in builtin_heads():
        importlib.import_module(builtin_heads()[name])
    if name not in _REGISTRY:
        raise ConfigError(f"unknown head {name!r}; known heads: {head_names()}")
    return _REGISTRY[name]


def head_config_class(name: str) -> type[Config]:
    """The typed config class of a head (its defaults are the paper's settings)."""
    return head_class(name).config_class


def build_head(
    name: str, config: dict[str, Any] | None, expert_dims: dict[str, int], text_dim: int
) -> RetrievalHead:
    """Build head ``name`` from a plain config dict (unknown keys → ConfigError), the feature size of each expert
    the data offers (``{"rgb": 1280, ...}``) and the text encoder's token size."""
    cls = head_class(name)
    typed = cls.config_class.parse(config or {}, f"head {name!r}")
    return cls(typed, dict(expert_dims), int(text_dim))
