"""Tiny fake runs for the store / search / report tests: a random-init head saved through ``pipeline.runs.record``
as training saves runs (``config.json`` + ``best.pt``), on the synthetic features of ``tests.train_fixtures``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

import pipeline  # noqa: F401
from data_manifest.schema import VideoRecord
from pipeline.heads import build_head
from pipeline.runs.record import BEST, RunFolder, SavedRun
from pipeline.text_encoder import model_dir_digest, resolve_text_model_dir
from pipeline.training.config import TextConfig, TrainConfig
from tests.train_fixtures import DIMS, make_dataset_tree

HEAD_OPTIONS = {
    "t2vlad": {"dim": 16, "num_clusters": 3, "ff_dim": 32, "num_heads": 2},
    "cret": {
        "dim": 16,
        "num_heads": 2,
        "ff_dim": 32,
        "num_centers": 3,
        "temporal_layers": 1,
        "ccm_layers": 1,
    },
    "mgfi": {"dim": 16, "ff_dim": 32, "frame_expert": "appearance", "audio_expert": "speech"},
}
TEXT_DIM = 384


@lru_cache(maxsize=1)
def text_digest() -> str:
    return model_dir_digest(resolve_text_model_dir(None))


def save_run(run_dir: Path, head_name: str, manifest: Path, features: Path, seed: int = 0) -> Path:
    """A random-init head of ``head_name`` saved as a finished run (epoch 0) in ``run_dir``."""
    torch.manual_seed(seed)
    experts = list(DIMS)
    head = build_head(head_name, HEAD_OPTIONS[head_name], DIMS, TEXT_DIM)
    config = TrainConfig(
        head=head_name,
        experts=experts,
        device="cpu",
        head_options=HEAD_OPTIONS[head_name],
        text=TextConfig(cache_dir=str(run_dir.parent / "text-cache")),
    )
    folder = RunFolder(run_dir)
    folder.write(
        SavedRun(
            config=config,
            manifest=manifest,
            features_root=features,
            feature_dirs={e: next((features / e).iterdir()) for e in experts},
            expert_dims=DIMS,
            text_dim=TEXT_DIM,
            text_model_digest=text_digest(),
            selection="val",
            run_hash="test",
        )
    )
    folder.save_checkpoint({"epoch": 0, "head": head.state_dict(), "text": None}, BEST)
    return run_dir


def make_tree(tmp: Path, splits: dict[str, int] | None = None) -> tuple[Path, Path, list[VideoRecord]]:
    """(manifest, features root, records): every 3rd video lacks the ``speech`` expert."""
    return make_dataset_tree(tmp, splits or {"train": 4, "val": 2, "test": 9})
