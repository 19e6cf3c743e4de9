"""The ``t2v run`` configuration: one TOML file naming the dataset, experts, heads, store and searches.

Paths are relative to the folder ``t2v run`` is started in. Example (``configs/demo.toml``)::

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
    split = "test"
    [store]
    head = "t2vlad"
    [search]
    queries = ["the word WHALE appears on the screen", "a person says lobster"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

_SECTIONS = {
    "sample": {"n", "seed", "workers"},
    "extract": {"experts", "shard_size", "workers", "device", "options", "weights_dir"},
    "train": {"heads", "ablation", "split"},
    "store": {"head", "split"},
    "search": {"queries", "k"},
}


@dataclass
class RunConfig:
    """Typed view of the run file; see the module docstring for the meaning of each key."""

    out: Path
    manifest: Path
    sample: dict[str, int] | None
    experts: list[str]
    expert_options: dict[str, dict[str, Any]]
    shard_size: int = 64
    workers: int = 1
    device: str = "auto"
    weights_dir: Path | None = None
    heads: dict[str, Path | None] = field(default_factory=dict)
    ablation: bool = False
    split: str = "test"
    store_head: str | None = None
    queries: list[str] = field(default_factory=list)
    k: int = 5

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def stores(self) -> Path:
        return self.out / "stores"

    @property
    def report(self) -> Path:
        return self.out / "report"


def load_run_config(path: str | Path) -> RunConfig:
    """Parse and check a run file; ConfigError names the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read run config: {err}") from err
    unknown = sorted(set(data) - {"out", "manifest", *_SECTIONS})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}")
    for section, keys in _SECTIONS.items():
        extra = sorted(set(data.get(section, {})) - keys)
        if extra:
            raise ConfigError(f"{path}: [{section}]: unknown key(s) {extra} (known: {sorted(keys)})")
    out = Path(data.get("out", "t2v-output"))
    sample = data.get("sample")
    if "manifest" in data:
        manifest = Path(data["manifest"])
    elif sample is not None:
        manifest = out / "sample" / "manifest.jsonl"
    else:
        raise ConfigError(f"{path}: give `manifest = ...` or a [sample] section")
    ex, tr = data.get("extract", {}), data.get("train", {})
    experts = list(ex.get("experts", []))
    if not experts:
        raise ConfigError(f"{path}: [extract]: experts must list at least one expert")
    heads = {name: (Path(cfg) if cfg else None) for name, cfg in tr.get("heads", {}).items()}
    store_head = data.get("store", {}).get("head")
    if store_head is not None and store_head not in heads:
        raise ConfigError(f"{path}: [store]: head {store_head!r} is not one of [train] heads {sorted(heads)}")
    return RunConfig(
        out=out,
        manifest=manifest,
        sample=dict(sample) if sample is not None else None,
        experts=experts,
        expert_options={k: dict(v) for k, v in ex.get("options", {}).items()},
        shard_size=int(ex.get("shard_size", 64)),
        workers=int(ex.get("workers", 1)),
        device=str(ex.get("device", "auto")),
        weights_dir=Path(ex["weights_dir"]) if ex.get("weights_dir") else None,
        heads=heads,
        ablation=bool(tr.get("ablation", False)),
        split=str(tr.get("split", "test")),
        store_head=store_head,
        queries=list(data.get("search", {}).get("queries", [])),
        k=int(data.get("search", {}).get("k", 5)),
    )
