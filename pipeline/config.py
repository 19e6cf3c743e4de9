"""One typed configuration mechanism for expert, head, training and run configs (DESIGN.md §1).

Every config is a ``Config`` (a pydantic model): unknown keys are rejected, types are strict (``"3"`` is not an
int, ``true`` is not a number; an int is accepted where a float is expected), and the whole input is checked before
anything runs. ``read_config_file`` reads a ``.toml`` or ``.json`` file; ``Config.parse`` validates a dict and
turns every problem into one ``SOURCE: key.path: problem`` line of a single ``ConfigError``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from pipeline.errors import ConfigError


def _list_to_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# TOML and JSON have no tuples: a list of three numbers (RGB mean / std) is accepted for a tuple field
FloatTriple = Annotated[tuple[float, float, float], BeforeValidator(_list_to_tuple)]


class Config(BaseModel):
    """Base of every config: unknown keys and wrong types are errors; ``parse`` reports them all at once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data: Any, source: str) -> Self:
        """Validate ``data`` (a dict, or an instance as is); ConfigError with one ``source: key: problem`` line
        per problem."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise config_error(err, cls, source) from None

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> Self:
        """Read ``path`` (None: the defaults), set the non-None top-level ``overrides``, then ``parse``."""
        data = read_config_file(path) if path is not None else {}
        data.update({key: value for key, value in overrides.items() if value is not None})
        return cls.parse(data, str(path) if path is not None else "config")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated again like a fresh config."""
        return self.parse({**dict(self), **changes}, type(self).__name__)


def config_error(err: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """The ConfigError of a failed validation of ``model``: one ``source: key.path: problem`` line per problem."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = tuple(problem["loc"])
        key = ".".join(str(part) for part in loc)
        lines.append(f"{source}: {key + ': ' if key else ''}{_describe(problem, model, loc)}")
    return ConfigError("\n".join(lines))


def _describe(problem: Any, model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    kind = problem["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        return "unknown key" + (f" (known: {', '.join(known)})" if known else "")
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    if kind == "missing" or isinstance(problem.get("input"), dict):
        return str(problem["msg"])
    return f"{problem['msg']}, got {problem['input']!r}"


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``; empty when ``loc`` leads into a plain dict."""
    current: Any = model
    for part in loc:
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        field = current.model_fields.get(part) if is_model else None
        if field is None:
            return []
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a ``.toml`` or ``.json`` config file; ConfigError naming the file otherwise."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: a config file must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from None
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except ValueError as err:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise ConfigError(f"{path}: invalid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data
