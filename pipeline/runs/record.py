"""The run folder: one typed owner of what training writes into it and what everything else reads back.

``<run_dir>/``:

- ``config.json`` (``SavedRun``)::

    {"config": <TrainConfig as dict>, "manifest": "/abs/manifest.jsonl", "features_root": "/abs/features",
     "feature_dirs": {"rgb": "/abs/features/rgb/0123456789ab", ...}, "expert_dims": {"rgb": 512, ...},
     "text_dim": 384, "text_model_digest": "...", "selection": "val", "run_hash": "..."}

- ``last.pt`` / ``best.pt``: checkpoints ``{"epoch", "head": state dict, "text": state dict or None, ...}``
  (``last.pt`` also holds optimizer, scheduler, RNG states, history and run hash, see ``pipeline.training.loop``);
- ``curves.jsonl`` / ``curves.png``, ``provenance.json``, ``result.json`` (once all epochs are done);
- ``metrics-<split>[-<tag>].json``, one per evaluation.

Every problem with the folder is a ``RunError`` whose one-line message names the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_manifest.atomic import atomic_path, write_text
from pipeline.errors import ConfigError, RunError
from pipeline.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

BEST = "best.pt"
LAST = "last.pt"


def metrics_name(split: str, tag: str = "", branches: str = "both") -> str:
    """File name of an evaluation's metrics: ``metrics-<split>.json``; ``-<branches>-only`` is added for a
    test-time single-branch score, ``-<tag>`` for another manifest (``metrics-<split>-local-only-<tag>.json``)."""
    parts = [split] + ([f"{branches}-only"] if branches != "both" else []) + ([tag] if tag else [])
    return f"metrics-{'-'.join(parts)}.json"


@dataclass(frozen=True)
class SavedRun:
    """What ``config.json`` holds. ``feature_dirs`` and ``expert_dims`` are in the head's expert order."""

    config: TrainConfig
    manifest: Path
    features_root: Path
    feature_dirs: dict[str, Path]
    expert_dims: dict[str, int]
    text_dim: int
    text_model_digest: str = ""
    selection: str = ""
    run_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (written with sorted keys)."""
        return {
            "config": self.config.to_dict(),
            "manifest": str(self.manifest),
            "features_root": str(self.features_root),
            "feature_dirs": {e: str(d) for e, d in self.feature_dirs.items()},
            "expert_dims": dict(self.expert_dims),
            "text_dim": self.text_dim,
            "text_model_digest": self.text_model_digest,
            "selection": self.selection,
            "run_hash": self.run_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedRun:
        """Parse the JSON form; KeyError / TypeError / ValueError / ConfigError on a malformed one. ``config.json``
        is written with sorted keys, so the head's expert order comes from ``config.experts`` (T2VLAD's expert
        weights are positional: a reordered head scores wrongly)."""
        config = TrainConfig.parse(data["config"], "config")
        order = list(config.experts) or sorted(data["expert_dims"])
        return cls(
            config=config,
            manifest=Path(data["manifest"]),
            features_root=Path(data["features_root"]),
            feature_dirs={e: Path(data["feature_dirs"][e]) for e in order},
            expert_dims={e: int(data["expert_dims"][e]) for e in order},
            text_dim=int(data["text_dim"]),
            text_model_digest=str(data.get("text_model_digest", "")),
            selection=str(data.get("selection", "")),
            run_hash=str(data.get("run_hash", "")),
        )


class RunFolder:
    """Named paths of a run folder, and reading / writing its config and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def curves_jsonl(self) -> Path:
        return self.path / "curves.jsonl"

    @property
    def curves_png(self) -> Path:
        return self.path / "curves.png"

    @property
    def provenance(self) -> Path:
        return self.path / "provenance.json"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    def checkpoint(self, name: str = BEST) -> Path:
        """A checkpoint file of the run by name (``best.pt``, ``last.pt``)."""
        return self.path / name

    def require_checkpoint(self, name: str = BEST) -> Path:
        """The checkpoint's path; RunError when it does not exist."""
        path = self.checkpoint(name)
        if not path.is_file():
            raise RunError(f"{path}: checkpoint missing (is {self.path} a finished or running training run?)")
        return path

    def metrics(self, name: str) -> Path:
        """A metrics file by name (see ``metrics_name``)."""
        return self.path / name

    def metrics_files(self) -> list[Path]:
        """Every evaluation's metrics file, sorted by name."""
        return sorted(self.path.glob("metrics-*.json"))

    def read(self) -> SavedRun:
        """Parse ``config.json``; RunError when the folder or file is missing or the file is not a run config."""
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run folder not found")
        if not self.config_path.is_file():
            raise RunError(f"{self.config_path}: missing (is {self.path} a training run folder?)")
        try:
            return SavedRun.from_dict(json.loads(self.config_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise RunError(f"{self.config_path}: not valid JSON: {err}") from err
        except KeyError as err:
            raise RunError(f"{self.config_path}: missing key {err}") from err
        except (TypeError, ValueError, AttributeError, ConfigError) as err:
            raise RunError(f"{self.config_path}: invalid run config: {err}") from err

    def write(self, saved: SavedRun) -> None:
        """Write ``config.json`` atomically (creates the folder)."""
        write_json(self.config_path, saved.to_dict())

    def load_checkpoint(self, name: str = BEST, device: str | torch.device = "cpu") -> dict[str, Any]:
        """A checkpoint's dict on ``device``; RunError when it is missing, truncated or lacks its ``head``."""
        import torch  # lazy: Luigi task modules name run files without loading torch

        path = self.require_checkpoint(name)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except (
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
        ) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunError(
                f"{path}: unreadable checkpoint (truncated or not a torch file): {reason}"
            ) from err
        if not isinstance(state, dict) or "head" not in state or "epoch" not in state:
            raise RunError(f"{path}: not a t2v checkpoint (no 'head' / 'epoch' entry)")
        return state

    def save_checkpoint(self, state: dict[str, Any], name: str) -> None:
        """``torch.save`` a checkpoint atomically."""
        import torch

        with atomic_path(self.checkpoint(name)) as tmp:
            torch.save(state, tmp)


def write_json(path: Path, data: Any) -> None:
    """JSON (indented, sorted keys) to ``path`` atomically: ``config.json``, metrics, provenance, result."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
