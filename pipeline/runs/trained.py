"""A trained run's head rebuilt from its folder (``config.json`` + checkpoint) without features or manifest.

Run folders are written by ``pipeline.training.loop`` (see ``pipeline.runs.folder`` for ``config.json``); checkpoints hold
``{"epoch", "head": state dict, "text": state dict or None}``. ``checkpoint_sha256`` identifies the weights that
built an embedding store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_manifest.hashing import sha256_file
from pipeline.errors import StoreError
from pipeline.heads import RetrievalHead, build_head
from pipeline.runs.folder import saved_expert_order
from pipeline.training.config import TrainConfig


@dataclass
class TrainedRun:
    """A run folder's head (eval mode, checkpoint loaded) and what identifies it."""

    run_dir: Path
    saved: dict[str, Any]
    config: TrainConfig
    head: RetrievalHead
    checkpoint: Path
    checkpoint_sha256: str
    text_state: dict[str, Any] | None
    epoch: int


def load_trained_run(run_dir: str | Path, checkpoint: str = "best.pt", device: str = "cpu") -> TrainedRun:
    """Rebuild the head of ``run_dir`` (``config.json`` + checkpoint, see ``pipeline.runs.folder``) without opening
    features or the manifest."""
    run_dir = Path(run_dir).resolve()
    cfg_path, ckpt = run_dir / "config.json", run_dir / checkpoint
    for p in (cfg_path, ckpt):
        if not p.is_file():
            raise StoreError(f"{p}: missing (is {run_dir} a training run folder?)")
    saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    config = TrainConfig.parse(saved["config"], f"{cfg_path}: config")
    expert_dims = {e: int(saved["expert_dims"][e]) for e in saved_expert_order(saved)}
    head = build_head(config.head, dict(config.head_options), expert_dims, int(saved["text_dim"]))
    state = torch.load(ckpt, map_location=device, weights_only=True)
    head.load_state_dict(state["head"])
    head.to(device).eval()
    return TrainedRun(
        run_dir, saved, config, head, ckpt, sha256_file(ckpt), state.get("text"), int(state["epoch"])
    )
