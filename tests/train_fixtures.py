"""Tiny synthetic retrieval data for the training tests: a manifest whose captions name a colour and a shape, and
feature shards whose rows encode the same colour and shape (plus noise), so retrieval can beat chance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data_manifest.schema import VideoRecord, write_manifest
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK, ShardWriter, shard_name

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
DIMS = {"appearance": 24, "motion": 12, "speech": 8}


def make_records(splits: dict[str, int]) -> list[VideoRecord]:
    """One video per (colour, shape) pair in turn, several paraphrased captions each."""
    records, k = [], 0
    for split, n in splits.items():
        for _ in range(n):
            colour, shape = COLOURS[k % 4], SHAPES[(k // 4) % 4]
            caps = [f"a {colour} {shape}", f"there is a {colour} {shape} moving", f"the {shape} is {colour}"]
            records.append(
                VideoRecord(
                    video_id=f"v{k:03d}",
                    path=f"videos/v{k:03d}.mp4",
                    captions=caps,
                    split=split,
                    meta={"colour": colour, "shape": shape},
                )
            )
            k += 1
    return records


def write_features(
    root: Path, records: list[VideoRecord], seed: int = 0, missing_speech_every: int = 3
) -> Path:
    """features/<expert>/<fingerprint>/shard-00000.h5 for three experts; every 3rd video has no speech rows."""
    rng = np.random.default_rng(seed)
    protos = {e: rng.normal(size=(8, d)).astype(np.float32) for e, d in DIMS.items()}
    for expert, dim in DIMS.items():
        fingerprint = hashlib.sha256(expert.encode()).hexdigest()[:12]
        path = root / expert / fingerprint / shard_name(0)
        with ShardWriter(
            path,
            expert=expert,
            fingerprint=fingerprint,
            config={},
            weights_sha256="",
            dim=dim,
            dtype="float32",
        ) as writer:
            for i, rec in enumerate(records):
                c, s = COLOURS.index(rec.meta["colour"]), SHAPES.index(rec.meta["shape"])
                if expert == "speech" and i % missing_speech_every == 0:
                    writer.add(
                        rec.video_id,
                        np.zeros((0, dim), np.float32),
                        np.zeros((0, 2), np.float32),
                        status=STATUS_EMPTY,
                        error="no speech",
                    )
                    continue
                n = int(rng.integers(3, 45)) if expert == "appearance" else int(rng.integers(2, 8))
                base = protos[expert][c] + protos[expert][4 + s]
                feats = base + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
                ts = np.stack([np.arange(n), np.arange(n) + 1], 1).astype(np.float32)
                writer.add(rec.video_id, feats.astype(np.float32), ts, status=STATUS_OK)
    return root


def make_dataset_tree(
    tmp: Path, splits: dict[str, int] | None = None
) -> tuple[Path, Path, list[VideoRecord]]:
    """(manifest path, features root, records) under ``tmp``."""
    records = make_records(splits or {"train": 16, "val": 8})
    manifest = tmp / "manifest.jsonl"
    write_manifest(manifest, records)
    features = write_features(tmp / "features", records)
    return manifest, features, records
