"""What training and evaluation share: feature folders, readers, datasets, the head and text side of a run.

``load_run`` rebuilds head + text side from a run folder (``pipeline.runs.record``) so any split of any manifest
can be evaluated.

While training writes a run folder it holds an exclusive ``flock`` on ``<run>/train.lock`` (``lock_run_folder``):
a second ``t2v train`` into the same folder fails at once instead of interleaving checkpoints. The kernel drops
the lock when the process ends, however it ends, so a killed run never leaves the folder locked.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_manifest.atomic import exclusive_lock
from data_manifest.errors import T2VError
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError
from pipeline.features.reader import FeatureReader, latest_feature_dir
from pipeline.heads import RetrievalHead, build_head
from pipeline.runs.record import BEST, RunFolder
from pipeline.training.config import TextConfig, TrainConfig
from pipeline.training.dataset import RetrievalDataset, row_caps
from pipeline.training.text_cache import TextSide


def load_head_state(head: torch.nn.Module, state: dict, ckpt_path: Path) -> None:
    """Load a checkpoint's head weights; a mismatch (e.g. a run of an older layout) is a one-line T2VError."""
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        problem = " ".join(str(err).split())[:300]
        raise T2VError(
            f"{ckpt_path}: weights do not fit the head its config.json builds ({problem})"
        ) from err


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def lock_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/train.lock`` exclusively; ConfigError naming the folder when another process holds it."""
    busy = ConfigError(
        f"{run_dir}: another t2v train is writing this run folder (holds train.lock); "
        "wait for it to finish or use another --out"
    )
    with exclusive_lock(run_dir / "train.lock", busy):
        yield


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def list_experts(features_root: Path) -> list[str]:
    """Expert folders under ``features_root`` (those holding at least one fingerprint folder), sorted."""
    if not features_root.is_dir():
        raise T2VError(f"{features_root}: features folder does not exist (run t2v extract first)")
    found = sorted(
        p.name
        for p in features_root.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and any(c.is_dir() for c in p.iterdir())
    )
    if not found:
        raise T2VError(f"{features_root}: no expert feature folders (run t2v extract first)")
    return found


def resolve_feature_dirs(config: TrainConfig, features_root: Path) -> dict[str, Path]:
    """Expert -> feature folder: the config's pin, else the latest fingerprint folder under ``features_root``."""
    experts = config.experts or list_experts(features_root)
    dirs = {}
    for e in experts:
        pinned = config.features.get(e)
        dirs[e] = Path(pinned) if pinned else Path(latest_feature_dir(features_root, e))
        if not dirs[e].is_dir():
            raise T2VError(f"{dirs[e]}: feature folder of expert {e!r} does not exist")
    return dirs


def load_records(manifest_path: Path) -> list[VideoRecord]:
    """Manifest records (paths are not checked: training reads features, not videos)."""
    from data_manifest.validate import load_manifest

    return load_manifest(manifest_path, check_paths=False)


def default_text_cache_dir(config: TextConfig, run_dir: Path) -> Path:
    """``text.cache_dir`` if set, else ``<run_dir>/text-cache``: a run writes only under its own folder, so the
    features may be read-only."""
    return Path(config.cache_dir) if config.cache_dir else run_dir / "text-cache"


@dataclass
class RunContext:
    """A head with its text side, readers and records: enough to build datasets and score them."""

    config: TrainConfig
    manifest_path: Path
    features_root: Path
    feature_dirs: dict[str, Path]
    readers: dict[str, FeatureReader]
    records: list[VideoRecord]
    head: RetrievalHead
    text_side: TextSide
    device: torch.device
    epoch: int = 0
    extra: dict = field(default_factory=dict)

    def dataset(self, split: str | None, train: bool = False) -> RetrievalDataset:
        """The split's captioned videos with this run's experts and ``max_rows``; T2VError when some of them
        were never extracted for an expert."""
        ds = RetrievalDataset(
            self.records,
            self.readers,
            max_rows=row_caps(self.config, self.readers),
            split=split,
            train=train,
            seed=self.config.seed,
        )
        ds.require_extracted()
        return ds


def open_readers(feature_dirs: dict[str, Path]) -> dict[str, FeatureReader]:
    """One FeatureReader per expert, in the given order."""
    return {e: FeatureReader(d) for e, d in feature_dirs.items()}


def build_context(
    config: TrainConfig,
    manifest_path: Path,
    features_root: Path,
    feature_dirs: dict[str, Path],
    device: torch.device,
    text_dim: int | None = None,
    *,
    run_dir: Path,
) -> RunContext:
    """Open readers, load the manifest, build text side and head (untrained) on ``device``."""
    readers = open_readers(feature_dirs)
    records = load_records(manifest_path)
    text_side = TextSide(config.text, default_text_cache_dir(config.text, run_dir))
    if text_dim is None:
        texts = [c for r in records if r.split in ("train", "val") for c in r.captions]
        text_side.prepare(texts, device=str(device), progress=True)
        text_dim = text_side.dim
    expert_dims = {e: int(r.dim) for e, r in readers.items()}
    seed_everything(config.seed)  # after the text side, whose loading may draw random numbers
    head = build_head(config.head, dict(config.head_options), expert_dims, int(text_dim))
    readers = {e: readers[e] for e in head.expert_names}  # the experts the head reads, in its column order
    return RunContext(
        config=config,
        manifest_path=manifest_path,
        features_root=features_root,
        feature_dirs=feature_dirs,
        readers=readers,
        records=records,
        head=head.to(device),
        text_side=text_side.to(device),
        device=device,
        extra={"expert_dims": expert_dims, "text_dim": int(text_dim)},
    )


def load_run(
    run_dir: Path,
    *,
    checkpoint: str = BEST,
    device: str | None = None,
    manifest_path: str | Path | None = None,
    features_root: str | Path | None = None,
) -> RunContext:
    """Rebuild a trained run from its folder's ``config.json`` and a checkpoint; optionally another manifest /
    features root (same experts, same feature fingerprints). RunError when the folder is incomplete."""
    folder = RunFolder(run_dir)
    saved = folder.read()
    folder.require_checkpoint(checkpoint)  # before any feature folder is opened
    trained_dirs = saved.feature_dirs
    if features_root is not None:
        root = Path(features_root)
        dirs = {e: Path(latest_feature_dir(root, e)) for e in trained_dirs}
        for e, d in dirs.items():
            if d.name != trained_dirs[e].name:
                raise T2VError(
                    f"{d}: expert {e!r} has fingerprint {d.name} but the run was trained on {trained_dirs[e].name}"
                )
    else:
        root, dirs = saved.features_root, trained_dirs
    manifest = Path(manifest_path) if manifest_path is not None else saved.manifest
    config = saved.config
    ctx = build_context(
        config,
        manifest,
        root,
        dirs,
        pick_device(device or config.device),
        saved.text_dim,
        run_dir=Path(run_dir),
    )
    state = folder.load_checkpoint(checkpoint, ctx.device)
    load_head_state(ctx.head, state["head"], folder.checkpoint(checkpoint))
    if state.get("text") is not None:
        ctx.text_side.load_state_dict(state["text"])
    ctx.epoch = int(state["epoch"])
    ctx.extra["selection"] = saved.selection or "val"
    return ctx
