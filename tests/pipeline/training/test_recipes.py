"""Every training config under configs/ (the sample configs and the papers' recipes) loads with ``load_config`` and
builds its head, with its own options, on tiny feature sizes; the run config configs/demo.toml is checked by
tests/workflows/test_run_config.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.heads import TextBatch, VideoBatch, build_head
from pipeline.training.config import load_config

ROOT = Path(__file__).resolve().parents[3]
RUN_CONFIGS = {ROOT / "configs" / "demo.toml"}
TRAINING_CONFIGS = sorted(p for p in (ROOT / "configs").glob("**/*.toml") if p not in RUN_CONFIGS)
TINY = {"dim": 8, "ff_dim": 16}


def test_the_recipes_are_there():
    names = {p.relative_to(ROOT).as_posix() for p in TRAINING_CONFIGS}
    assert {
        "configs/msrvtt/t2vlad-paper.toml",
        "configs/msrvtt/t2vlad-port.toml",
        "configs/msrvtt/mgfi-paper.toml",
        "configs/msrvtt/cret-slides.toml",
    } <= names


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_training_config_loads_and_builds_its_head(path):
    config = load_config(path)
    assert config.experts, f"{path}: a recipe names its experts"
    options = dict(config.head_options)
    heads = options.get("num_heads", 1)
    options.update(TINY, dim=TINY["dim"] * heads)  # the config's own options, at a tiny width
    expert_dims = {e: 5 + i for i, e in enumerate(config.experts)}
    head = build_head(config.head, options, expert_dims, text_dim=6).eval()
    rows = min(config.max_rows, 3)
    g = torch.Generator().manual_seed(0)
    video = VideoBatch(
        {e: torch.randn(2, rows, d, generator=g) for e, d in expert_dims.items()},
        {e: torch.ones(2, rows, dtype=torch.bool) for e in expert_dims},
        torch.ones(2, len(expert_dims), dtype=torch.bool),
        experts=list(expert_dims),
    )
    text = TextBatch(torch.randn(2, 4, 6, generator=g), torch.ones(2, 4, dtype=torch.bool))
    scores = head.similarity(head.encode_text(text), head.encode_video(video))
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
