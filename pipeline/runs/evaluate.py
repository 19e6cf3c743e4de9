"""Evaluation: the (texts x videos) similarity matrix of a head, computed in blocks, and the papers' metrics.

The video side is encoded once, in batches of ``batch_size`` videos; then each block of captions is encoded and
scored against every video block with ``head.similarity``. Text-conditioned heads (MGFI) need nothing else: their
``similarity`` computes the query-dependent video representation inside the block. Memory is one
(text block x video block) score tile plus the encoded video side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_manifest.errors import T2VError
from pipeline.heads.base import RetrievalHead
from pipeline.metrics import retrieval_metrics
from pipeline.runs.folder import load_run
from pipeline.runs.record import BEST, RunFolder, metrics_name, write_json
from pipeline.training.dataset import RetrievalDataset, make_loader
from pipeline.training.text_cache import TextSide

METRIC_KEYS = ("R1", "R5", "R10", "R50", "MdR", "MnR", "geometric_mean")


@torch.no_grad()
def similarity_matrix(
    head: RetrievalHead,
    text_side: TextSide,
    dataset: RetrievalDataset,
    texts: list[str],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Scores (len(texts), len(dataset)) float32 of ``head`` in eval mode; column j = ``dataset`` video j."""
    was_training = head.training, text_side.training
    head.eval()
    text_side.eval()
    try:
        video_blocks = [
            head.encode_video(b.to(device).video) for b in make_loader(dataset, batch_size, False)
        ]
        rows = []
        for i in range(0, len(texts), batch_size):
            text_emb = head.encode_text(text_side(texts[i : i + batch_size], device=device))
            tiles = [head.similarity(text_emb, v).float().cpu() for v in video_blocks]
            rows.append(torch.cat(tiles, dim=1))
        out = torch.cat(rows, dim=0) if rows else torch.zeros(0, len(dataset))
    finally:
        head.train(was_training[0])
        text_side.train(was_training[1])
    return out.numpy()


def evaluate_dataset(
    head: RetrievalHead,
    text_side: TextSide,
    dataset: RetrievalDataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Every caption of ``dataset`` as a query against its videos: ``retrieval_metrics`` (DESIGN.md §6)."""
    texts, text_to_video = dataset.queries()
    if not texts:
        raise T2VError(f"split {dataset.split!r}: no captioned videos to evaluate")
    sims = similarity_matrix(head, text_side, dataset, texts, batch_size=batch_size, device=device)
    return retrieval_metrics(sims, text_to_video)


def format_metrics_table(metrics: dict[str, dict[str, float]], title: str = "") -> str:
    """A fixed-width text table: one row per direction (t2v, v2t), columns R1 R5 R10 R50 MdR MnR geometric mean."""
    header = f"{'':<5}" + "".join(f"{k:>8}" for k in ("R@1", "R@5", "R@10", "R@50", "MdR", "MnR", "GM"))
    lines = [title] if title else []
    lines.append(header)
    for direction in ("t2v", "v2t"):
        m = metrics[direction]
        lines.append(f"{direction:<5}" + "".join(f"{float(m[k]):>8.2f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def evaluate_run(
    run_dir: str | Path,
    manifest_path: str | Path | None = None,
    split: str = "test",
    features_root: str | Path | None = None,
    *,
    checkpoint: str = BEST,
    device: str | None = None,
    out_name: str | None = None,
    progress: bool = True,
    branches: str = "both",
) -> dict[str, Any]:
    """Evaluate a trained run on ``split`` of a manifest (default: the training manifest).

    ``branches`` (one of the head class's ``scoring_branches``: T2VLAD's ``local`` / ``global`` / ``both``) scores
    with one branch only at test time (the paper's "w/o global/local alignment"); other heads take only ``both``.

    Features: the folders the run was trained on, unless ``features_root`` is given (then the run's experts'
    latest fingerprint folders there; feature folders of other fingerprints than training are refused).
    Writes ``<run_dir>/<out_name or metrics_name(split, branches=branches)>`` and returns its content
    (``{"split", "manifest", "num_videos", "num_texts", "checkpoint", "epoch", "branches", "selection", "metrics":
    {"t2v", "v2t"}}``; ``selection`` is how training chose the checkpoint, see ``pipeline.training.loop``).
    """
    run = load_run(
        Path(run_dir),
        checkpoint=checkpoint,
        device=device,
        manifest_path=manifest_path,
        features_root=features_root,
    )
    if branches not in run.head.scoring_branches:
        choices = "|".join(run.head.scoring_branches)
        raise T2VError(f"{run_dir}: --branches {branches}: a {run.config.head} run takes only {choices}")
    run.head.set_scoring_branches(branches)
    dataset = run.dataset(split)
    if len(dataset) == 0:
        raise T2VError(f"{run.manifest_path}: split {split!r} has no captioned videos")
    run.text_side.prepare(dataset.queries()[0], device=run.device, progress=progress)
    metrics = evaluate_dataset(
        run.head, run.text_side, dataset, batch_size=run.config.eval_batch_size, device=run.device
    )
    texts, _ = dataset.queries()
    result = {
        "split": split,
        "manifest": str(run.manifest_path),
        "num_videos": len(dataset),
        "num_texts": len(texts),
        "checkpoint": checkpoint,
        "epoch": run.epoch,
        "branches": branches,
        "selection": run.extra["selection"],
        "feature_dirs": {e: str(p) for e, p in run.feature_dirs.items()},
        "metrics": metrics,
    }
    write_json(RunFolder(run_dir).metrics(out_name or metrics_name(split, branches=branches)), result)
    return result
