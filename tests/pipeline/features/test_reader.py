"""FeatureReader across shards, get_many grouping, folder helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ShardError
from pipeline.features.reader import FeatureReader, latest_feature_dir, list_fingerprints
from pipeline.features.shards import STATUS_EMPTY, ShardWriter, shard_name


def _write(
    folder: Path, index: int, ids: list[str], fp: str = "fp0", dim: int = 3, token_level: bool = False
) -> None:
    with ShardWriter(
        folder / shard_name(index),
        expert="e",
        fingerprint=fp,
        config={},
        weights_sha256="",
        dim=dim,
        token_level=token_level,
    ) as w:
        for k, vid in enumerate(ids):
            n = k + 1
            feats = np.full((n, dim), index * 10 + k, dtype=np.float32)
            times = np.stack([np.arange(n), np.arange(n) + 1], 1)
            tokens = [f"{vid}-{i}" for i in range(n)] if token_level else None
            w.add(vid, feats, times, tokens=tokens)
        w.add(
            f"empty{index}", np.zeros((0, dim)), np.zeros((0, 2)), status=STATUS_EMPTY, error="no audio track"
        )


def test_reader_across_shards(tmp_path: Path) -> None:
    folder = tmp_path / "e" / "fp0"
    _write(folder, 0, ["a", "b", "c"])
    _write(folder, 1, ["d", "e"])
    (folder / ".shard-00002.h5.999999.x.tmp").write_bytes(b"half")
    reader = FeatureReader(folder)
    assert reader.video_ids == ["a", "b", "c", "empty0", "d", "e", "empty1"]
    assert reader.dim == 3 and len(reader) == 7 and "d" in reader and "zz" not in reader
    assert reader.attrs["fingerprint"] == "fp0"
    vf = reader.get("e")
    assert vf.features.dtype == np.float32 and vf.features.shape == (2, 3) and (vf.features == 11).all()
    np.testing.assert_array_equal(vf.timestamps, [[0, 1], [1, 2]])
    assert vf.status == 0 and vf.error == "" and vf.tokens is None
    many = reader.get_many(["c", "a", "e", "empty0", "b"])
    assert set(many) == {"a", "b", "c", "e", "empty0"}
    assert many["c"].features.shape == (3, 3) and (many["c"].features == 2).all()
    assert many["a"].features.shape == (1, 3) and (many["a"].features == 0).all()
    assert many["empty0"].status == STATUS_EMPTY and many["empty0"].features.shape == (0, 3)
    assert many["empty0"].error == "no audio track"
    with pytest.raises(ShardError, match="no features"):
        reader.get("zz")


def test_tokens_and_conflicts(tmp_path: Path) -> None:
    folder = tmp_path / "ocr" / "fp1"
    _write(folder, 0, ["a", "b"], fp="fp1", token_level=True)
    reader = FeatureReader(folder)
    assert reader.get("b").tokens == ["b-0", "b-1"] and reader.token_level
    _write(folder, 1, ["b"], fp="fp1", token_level=True)
    with pytest.raises(ShardError, match="also in shard-00000.h5"):
        FeatureReader(folder)
    other = tmp_path / "ocr" / "fp2"
    _write(other, 0, ["a"], fp="fp2")
    _write(other, 1, ["b"], fp="fpX")
    with pytest.raises(ShardError, match="differ"):
        FeatureReader(other)
    with pytest.raises(ShardError, match="no feature shards"):
        FeatureReader(tmp_path / "nothing")


def test_latest_feature_dir(tmp_path: Path) -> None:
    _write(tmp_path / "e" / "old", 0, ["a"])
    _write(tmp_path / "e" / "new", 0, ["a"])
    (tmp_path / "e" / "emptydir").mkdir()
    os.utime(tmp_path / "e" / "old" / "shard-00000.h5", (1000, 1000))
    assert [d.fingerprint for d in list_fingerprints(tmp_path, "e")] == ["old", "new"]
    assert latest_feature_dir(tmp_path, "e") == tmp_path / "e" / "new"
    with pytest.raises(ShardError, match="no feature shards for expert 'x'"):
        latest_feature_dir(tmp_path, "x")
