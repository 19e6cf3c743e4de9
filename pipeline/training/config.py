"""Typed training configuration: dataclasses loaded from TOML or JSON, validated with errors that name the key.

A config file looks like (TOML; the same nesting in JSON)::

    head = "t2vlad"                 # any name of pipeline.heads.head_names() (t2vlad | cret | mgfi built in)
    experts = ["rgb", "ocr"]        # empty = every expert folder under the features root
    epochs = 30
    batch_size = 64
    seed = 0
    device = "auto"                 # cpu | cuda | auto
    max_rows = 30                   # rows kept per expert and video (MMT / T2VLAD: 30)

    [head_options]                  # passed as is to build_head (e.g. the T2VLAD ablation switches)

    [text]
    model = "all-MiniLM-L6-v2"      # or a local transformers folder (BERT-base-uncased in the papers)
    mode = "frozen"                 # frozen (token features cached on disk) | finetune (end to end)
    max_length = 37
    lr = 1e-5                       # learning rate of the text encoder in finetune mode

    [optim]                         # papers' setting: Ranger, lr 1e-4 x 0.9 every 5 epochs, weight decay 1e-4
    name = "ranger"
    lr = 1e-4
    weight_decay = 1e-4
    lr_decay = 0.9
    lr_decay_every = 5

    [features]                      # optional pins: expert -> feature folder (else the latest fingerprint)
    rgb = "features/rgb/0123456789ab"

The head's own hyper-parameters (T2VLAD: C=768, K=9, 4 heads, dropout 0.1, margin 0.02) are the defaults of
``pipeline.heads``; ``head_options`` overrides them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.features.fingerprint import canonical_json
from pipeline.heads.registry import head_names

TEXT_MODES = ("frozen", "finetune")
DEVICES = ("cpu", "cuda", "auto")
OPTIMIZERS = ("ranger", "adam", "adamw")


@dataclass
class TextConfig:
    """Text side: encoder folder (or the offline default), frozen/finetune, token length, encoder LR."""

    model: str = "all-MiniLM-L6-v2"
    mode: str = "frozen"
    max_length: int = 37
    lr: float = 1e-5
    cache_dir: str = ""


@dataclass
class OptimConfig:
    """Optimizer and step schedule (lr multiplied by ``lr_decay`` every ``lr_decay_every`` epochs)."""

    name: str = "ranger"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_decay: float = 0.9
    lr_decay_every: int = 5
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    """Everything that determines a training run (plus ``device``, which does not change the result's meaning)."""

    head: str = "t2vlad"
    experts: list[str] = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    max_rows: int = 30
    val_subset: int = 200
    head_options: dict[str, Any] = field(default_factory=dict)
    text: TextConfig = field(default_factory=TextConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    features: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.json`` of a run holds)."""
        return asdict(self)

    def resume_hash(self) -> str:
        """sha256 of the config without ``epochs`` and ``device``: a run may be resumed with more epochs or
        on another device, but not with any other change."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("device")
        return hashlib.sha256(canonical_json(d).encode()).hexdigest()

    def validate(self) -> TrainConfig:
        """Check values; raise ConfigError naming the key and the problem."""
        heads = head_names()
        _check(self.head in heads, "head", f"unknown head {self.head!r} (choose from {', '.join(heads)})")
        _check(self.text.mode in TEXT_MODES, "text.mode", f"must be one of {', '.join(TEXT_MODES)}")
        _check(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        _check(self.optim.name in OPTIMIZERS, "optim.name", f"must be one of {', '.join(OPTIMIZERS)}")
        for key in ("epochs", "batch_size", "eval_batch_size", "max_rows", "val_subset"):
            _check(getattr(self, key) >= 1, key, "must be >= 1")
        _check(self.text.max_length >= 2, "text.max_length", "must be >= 2")
        _check(self.optim.lr_decay_every >= 1, "optim.lr_decay_every", "must be >= 1")
        for key in ("lr", "weight_decay", "lr_decay", "grad_clip"):
            _check(getattr(self.optim, key) >= 0, f"optim.{key}", "must be >= 0")
        _check(self.optim.lr > 0, "optim.lr", "must be > 0")
        _check(self.text.lr > 0, "text.lr", "must be > 0")
        _check(len(set(self.experts)) == len(self.experts), "experts", "lists an expert twice")
        return self


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"config: {key}: {problem}")


_SECTIONS = {"text": TextConfig, "optim": OptimConfig}


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Type-check one value against its dataclass field type (ints are accepted where floats are expected)."""
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind.startswith("list[str]") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if (
        kind.startswith("dict[str, str]")
        and isinstance(value, dict)
        and all(isinstance(v, str) for v in value.values())
    ):
        return dict(value)
    if kind.startswith("dict[str, Any]") and isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"config: {key}: expected {kind}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config: {prefix.rstrip('.') or '<root>'}: expected a table/object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"config: unknown key {name!r} (known: {', '.join(sorted(known))})")
        if prefix == "" and key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, f"{key}.")
        else:
            kwargs[key] = _coerce(value, known[key].type, name)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from a nested dict (unknown keys and wrong types raise ConfigError)."""
    return _build(TrainConfig, data, "").validate()


def load_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` config (``None``: defaults), apply non-None top-level ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config: {err.strerror or err}") from err
        try:
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(
                f"{path}: invalid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}"
            ) from err
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return config_from_dict(data)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(where + str(err)) from err
