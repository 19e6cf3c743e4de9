"""The ``t2v run`` configuration: one TOML file naming the dataset, experts, heads, store and searches.

Paths are relative to the folder ``t2v run`` is started in. The whole file, each expert's options and each head's
training config are checked when the file loads, before any data is generated or read. Example (``configs/demo.toml``)::

    out = "demo-output"                 # everything is written under here
    [sample]                            # optional: generate the embedded sample dataset into <out>/sample
    n = 300
    seed = 0
    [extract]
    experts = ["rgb", "audio_stats", "ocr", "speech"]
    shard_size = 64
    workers = 1
    device = "auto"
    [extract.options.rgb]               # per-expert options (see `t2v weights list` for the experts)
    fps = 1.0
    [train]
    heads = { t2vlad = "configs/sample/t2vlad.toml", cret = "configs/sample/cret.toml" }
    ablation = true                     # train the ablation variants of the head offering them (T2VLAD); write the table
    split = "test"                      # the split every head is evaluated on
    [store]
    head = "t2vlad"                     # encode this head's run into an embedding store (and the report)
    split = "test"                      # the videos the store holds (default: [train] split)
    [search]
    queries = ["the word WHALE appears on the screen", "a person says lobster"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from extractors.registry import expert_options_model
from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.heads import head_config_class
from pipeline.training.config import TrainConfig


class SampleSection(Config):
    """``[sample]``: generate the embedded sample dataset (``n`` clips, ``seed``, ``workers`` processes)."""

    n: int = Field(300, ge=1)
    seed: int = 0
    workers: int = Field(2, ge=1)


class ExtractSection(Config):
    """``[extract]``: the experts, their per-expert ``options`` tables and how the extraction DAG runs."""

    experts: list[str] = Field(min_length=1)
    shard_size: int = Field(64, ge=1)
    workers: int = Field(1, ge=1)
    device: str = "auto"
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    weights_dir: str = ""

    @field_validator("options")
    @classmethod
    def _options_fit_experts(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            model = expert_options_model(options)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        model.model_validate(options)
        return options

    @model_validator(mode="after")
    def _options_for_listed_experts(self) -> Self:
        unlisted = sorted(set(self.options) - set(self.experts))
        if unlisted:
            raise ValueError(f"options given for experts not in experts: {unlisted}")
        return self


class TrainSection(Config):
    """``[train]``: head name -> training config file ("" = the head's defaults), ablation, evaluated split."""

    heads: dict[str, str] = Field(default_factory=dict)
    ablation: bool = False
    split: str = "test"

    @field_validator("heads")
    @classmethod
    def _known_heads(cls, heads: dict[str, str]) -> dict[str, str]:
        for head in heads:
            try:
                head_config_class(head)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return heads


class StoreSection(Config):
    """``[store]``: the head whose run is encoded into a store, and the split the store holds."""

    head: str | None = None
    split: str | None = None


class SearchSection(Config):
    """``[search]``: queries run against the store, ``k`` results each."""

    queries: list[str] = Field(default_factory=list)
    k: int = Field(5, ge=1)


class RunConfig(Config):
    """The run file; see the module docstring for the meaning of each key."""

    out: str = "t2v-output"
    manifest: str = ""
    sample: SampleSection | None = None
    extract: ExtractSection
    train: TrainSection = Field(default_factory=TrainSection)
    store: StoreSection = Field(default_factory=StoreSection)
    search: SearchSection = Field(default_factory=SearchSection)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.manifest and self.sample is None:
            raise ValueError("give `manifest = ...` or a [sample] section")
        if self.store.head is not None and self.store.head not in self.train.heads:
            raise ValueError(
                f"[store] head {self.store.head!r} is not one of [train] heads {sorted(self.train.heads)}"
            )
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def manifest_path(self) -> Path:
        """``manifest``, or the manifest of the generated sample under ``<out>/sample``."""
        return Path(self.manifest) if self.manifest else self.out_dir / "sample" / "manifest.jsonl"

    @property
    def weights_dir(self) -> Path | None:
        return Path(self.extract.weights_dir) if self.extract.weights_dir else None

    @property
    def store_split(self) -> str:
        """The split the store encodes: ``[store] split``, else ``[train] split``."""
        return self.store.split or self.train.split

    def head_config_path(self, head: str) -> Path | None:
        """The training config file of ``head`` (None: the head's defaults)."""
        file = self.train.heads[head]
        return Path(file) if file else None

    @property
    def features(self) -> Path:
        return self.out_dir / "features"

    @property
    def runs(self) -> Path:
        return self.out_dir / "runs"

    @property
    def stores(self) -> Path:
        return self.out_dir / "stores"

    @property
    def report(self) -> Path:
        return self.out_dir / "report"


def load_run_config(path: str | Path) -> RunConfig:
    """Read and check a run file and the training config file of each of its heads; every problem of every file
    is one ``FILE: key: problem`` line of the ConfigError."""
    cfg = RunConfig.load(path)
    problems = []
    for head in cfg.train.heads:
        file = cfg.head_config_path(head)
        if file is not None:
            try:
                TrainConfig.load(file, head=head)
            except ConfigError as err:
                problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg
