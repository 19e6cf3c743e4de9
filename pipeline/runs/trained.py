"""A trained run's head rebuilt from its folder (``config.json`` + checkpoint) without features or manifest.

Run folders are written by ``pipeline.training.loop`` and read through ``pipeline.runs.record``.
``checkpoint_sha256`` identifies the weights that built an embedding store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_manifest.hashing import sha256_file
from pipeline.heads import RetrievalHead, build_head
from pipeline.runs.folder import load_head_state
from pipeline.runs.record import BEST, RunFolder, SavedRun
from pipeline.training.config import TrainConfig


@dataclass
class TrainedRun:
    """A run folder's head (eval mode, checkpoint loaded) and what identifies it."""

    run_dir: Path
    saved: SavedRun
    config: TrainConfig
    head: RetrievalHead
    checkpoint: Path
    checkpoint_sha256: str
    text_state: dict[str, Any] | None
    epoch: int


def load_trained_run(run_dir: str | Path, checkpoint: str = BEST, device: str = "cpu") -> TrainedRun:
    """Rebuild the head of ``run_dir`` (``config.json`` + checkpoint) without opening features or the manifest;
    RunError when the folder is incomplete, T2VError when the weights do not fit the head."""
    folder = RunFolder(Path(run_dir).resolve())
    saved = folder.read()
    config = saved.config
    head = build_head(config.head, dict(config.head_options), saved.expert_dims, saved.text_dim)
    state = folder.load_checkpoint(checkpoint, device)
    load_head_state(head, state["head"], folder.checkpoint(checkpoint))
    head.to(device).eval()
    ckpt = folder.checkpoint(checkpoint)
    return TrainedRun(
        folder.path, saved, config, head, ckpt, sha256_file(ckpt), state.get("text"), int(state["epoch"])
    )
