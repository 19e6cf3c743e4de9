"""Typed training configuration (``pipeline.config.Config`` models) loaded from TOML or JSON; errors name the key.

A config file looks like (TOML; the same nesting in JSON)::

    head = "t2vlad"                 # any name of pipeline.heads.head_names() (t2vlad | cret | mgfi built in)
    experts = ["rgb", "ocr"]        # empty = every expert folder under the features root
    epochs = 30
    batch_size = 64
    seed = 0
    device = "auto"                 # cpu | cuda | auto
    max_rows = 30                   # rows kept per expert and video, for experts not in expert_max_rows
    expert_max_rows = { speech = 112, rgb = 51, s3d = 49 }   # per-expert caps; replaces the default table
                                    # (the public T2VLAD port's: speech 112, rgb 51, flow/s3d 49, scene/audio 31)
    selection = "val"               # val: the val split, else a hold-out of training videos | test: the test split
    holdout_fraction = 0.05         # without a val split: this share of the training videos is held out ...
    holdout_min = 20                # ... but at least this many (at most half of them)
    stages = [3, 2]                 # epochs of each of the head's training stages (MGFI: frames_text, audio);
                                    # they add up to epochs; empty (default) = one stage

    [head_options]                  # the head's config (checked when the file loads), passed to build_head

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

import hashlib
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.features.fingerprint import canonical_json
from pipeline.heads.registry import head_class, head_config_class

# Rows kept per expert and video by the public T2VLAD port on MMT's MSR-VTT features ("audio" is MMT's VGGish,
# "flow" its S3D); every other expert keeps ``max_rows`` (30).
PORT_ROW_CAPS = {"speech": 112, "rgb": 51, "flow": 49, "s3d": 49, "scene": 31, "audio": 31, "vggish": 31}


class TextConfig(Config):
    """Text side: encoder folder (or the offline default), frozen/finetune, token length, encoder LR."""

    model: str = "all-MiniLM-L6-v2"
    mode: Literal["frozen", "finetune"] = "frozen"
    max_length: int = Field(37, ge=2)
    lr: float = Field(1e-5, gt=0)
    cache_dir: str = ""  # folder of the frozen token cache; "" = <run folder>/text-cache


class OptimConfig(Config):
    """Optimizer and step schedule (lr multiplied by ``lr_decay`` every ``lr_decay_every`` epochs)."""

    name: Literal["ranger", "adam", "adamw"] = "ranger"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    lr_decay: float = Field(0.9, ge=0)
    lr_decay_every: int = Field(5, ge=1)
    grad_clip: float = Field(0.0, ge=0)


class TrainConfig(Config):
    """Everything that determines a training run (plus ``device``, which does not change the result's meaning).

    ``head_options`` is checked against the head's own config (``pipeline.heads.head_config_class``) and kept as
    given, so the saved config and the resume hash hold exactly what the user wrote."""

    head: str = "t2vlad"
    experts: list[str] = Field(default_factory=list)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    max_rows: int = Field(30, ge=1)
    expert_max_rows: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: dict(PORT_ROW_CAPS)
    )
    selection: Literal["val", "test"] = "val"
    holdout_fraction: float = Field(0.05, gt=0, lt=1)
    holdout_min: int = Field(20, ge=1)
    stages: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    head_options: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    text: TextConfig = Field(default_factory=TextConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    features: dict[str, str] = Field(default_factory=dict)

    @field_validator("head")
    @classmethod
    def _known_head(cls, head: str) -> str:
        try:
            head_config_class(head)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return head

    @field_validator("experts")
    @classmethod
    def _distinct_experts(cls, experts: list[str]) -> list[str]:
        if len(set(experts)) != len(experts):
            raise ValueError("lists an expert twice")
        return experts

    @field_validator("head_options")
    @classmethod
    def _head_options_fit_head(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "head" in info.data:  # an unknown head is reported on its own line
            head_config_class(info.data["head"]).model_validate(options)
        return options

    @model_validator(mode="after")
    def _stages_fit_head(self) -> TrainConfig:
        if self.stages:
            names = list(head_class(self.head).training_stages)
            if len(self.stages) != len(names):
                raise ValueError(
                    f"stages: head {self.head!r} has {len(names)} training stages {names}, got {len(self.stages)}"
                )
            if sum(self.stages) != self.epochs:
                raise ValueError(
                    f"stages: their epochs add up to {sum(self.stages)}, not epochs = {self.epochs}"
                )
        return self

    def stage_of(self, epoch: int) -> int | None:
        """The training stage (index into ``stages``) that epoch ``epoch`` (1-based) belongs to; None without
        stages."""
        if not self.stages:
            return None
        return min(bisect_left(list(accumulate(self.stages)), epoch), len(self.stages) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what ``config.json`` of a run holds)."""
        return self.model_dump()

    def resume_hash(self) -> str:
        """sha256 of the config without ``epochs`` and ``device``: a run may be resumed with more epochs or
        on another device, but not with any other change."""
        d = self.to_dict()
        d.pop("epochs")
        d.pop("device")
        return hashlib.sha256(canonical_json(d).encode()).hexdigest()


def load_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` config (``None``: defaults), apply non-None top-level ``overrides``."""
    return TrainConfig.load(path, **overrides)
