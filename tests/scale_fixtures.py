"""Datasets of many videos for the scale test and benchmark: N manifest entries linked to a few real clips.

``finished_run`` stands in for a finished first run without decoding anything: the manifest carries each clip's
real probe (so the DAG's probe step skips every file, as it does for unchanged files) and each planned shard is
written with one zero row per video, carrying the plan's ``members_digest``; the DAG itself then writes the
summaries. What a rerun then does (probe check, plan, completeness of every shard) is the real code path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from data_manifest.probe import probe_file
from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from extractors.registry import get_expert
from pipeline.features.plan import ShardPlan
from pipeline.features.shards import ShardWriter, shard_name
from tests.media import make_video
from workflows.extraction import feature_sets, run_extraction

EXPERT = "audio_stats"
ROOT = Path(__file__).resolve().parents[1]


def make_clips(folder: Path, count: int = 3) -> list[Path]:
    """``count`` tiny real clips (1 s, with audio) to link many videos to."""
    return [
        make_video(
            folder / f"clip{i}.mp4",
            duration=1.0,
            fps=8,
            source=("testsrc2", "smptebars", "rgbtestsrc")[i % 3],
        )
        for i in range(count)
    ]


def linked_manifest(root: Path, n: int, clips: list[Path], *, probed: bool) -> Path:
    """``root/manifest.jsonl`` of ``n`` videos, each a symlink ``root/videos/vNNNNNNN.mp4`` to one of ``clips``.

    ``probed``: fill the probe fields from each clip's real probe (the DAG then re-probes nothing).
    """
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    probes = [probe_file(c) for c in clips] if probed else []
    records = []
    for i in range(n):
        link = videos / f"v{i:07d}.mp4"
        if not link.is_symlink():
            link.symlink_to(clips[i % len(clips)].resolve())
        rec = VideoRecord(f"v{i:07d}", f"videos/{link.name}", [f"video {i}"], "train")
        for key, value in (probes[i % len(clips)] if probed else {}).items():
            setattr(rec, key, value)
        records.append(rec)
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


def finished_run(root: Path, n: int, clips: list[Path], *, shard_size: int = 64) -> tuple[Path, Path]:
    """A finished ``audio_stats`` run over ``n`` linked videos (stand-in shards); returns (manifest, features)."""
    manifest = linked_manifest(root, n, clips, probed=True)
    features = root / "features"
    specs = ShardPlan().update(load_manifest(manifest, check_paths=False), shard_size)
    (task,) = feature_sets(manifest, [EXPERT], features, shard_size=shard_size)
    expert = get_expert(EXPERT)
    folder = task.feature_dir()
    for spec in specs:
        with ShardWriter(
            folder / shard_name(spec.index),
            expert=EXPERT,
            fingerprint=folder.name,
            config=expert.config_dict(),
            weights_sha256=expert.weights_sha256(None),
            dim=expert.dim,
            members_digest=spec.members_digest,
            compression=None,
        ) as writer:
            for vid in spec.video_ids:
                writer.add(vid, np.zeros((1, expert.dim), np.float16), np.zeros((1, 2), np.float32))
    run_extraction(manifest, [EXPERT], features, shard_size=shard_size)
    return manifest, features


def timed_noop_rerun(manifest: Path, features: Path, *, shard_size: int = 64) -> float:
    """Seconds a fresh process spends in ``run_extraction`` when everything is done (imports not counted)."""
    code = (
        "import sys, time; from workflows.extraction import run_extraction\n"
        "t = time.perf_counter()\n"
        f"run_extraction(sys.argv[1], [{EXPERT!r}], sys.argv[2], shard_size={shard_size})\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(manifest), str(features)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])
