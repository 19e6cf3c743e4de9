"""HDF5 shard writer/reader: layout, round trip, atomic commit, crash safety."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from data_manifest.atomic import temps_of
from pipeline.errors import ShardError
from pipeline.features.fingerprint import canonical_json, fingerprint
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import (
    STATUS_EMPTY,
    STATUS_FAILED,
    STATUS_OK,
    ShardWriter,
    read_shard,
    read_shard_index,
    shard_attr,
    shard_attrs,
    shard_counts,
    shard_name,
    verify_shard,
)

ROOT = Path(__file__).resolve().parents[3]


def _writer(path: Path, **kw: object) -> ShardWriter:
    args = {
        "expert": "rgb",
        "fingerprint": "abc123def456",
        "config": {"fps": 1.0},
        "weights_sha256": "ff" * 32,
    }
    args.update(kw)
    return ShardWriter(path, dim=4, **args)


def test_fingerprint_and_canonical_json() -> None:
    assert canonical_json({"b": [1, (2, 3)], "a": 0.1, "c": "é"}) == '{"a":0.1,"b":[1,[2,3]],"c":"é"}'
    assert canonical_json({"x": np.float32(0.5), "n": np.int64(3)}) == '{"n":3,"x":0.5}'
    fp = fingerprint("rgb", "1", {"fps": 1.0, "size": 224}, "ab" * 32)
    assert len(fp) == 12 and all(c in "0123456789abcdef" for c in fp)
    assert fp == fingerprint("rgb", "1", {"size": 224, "fps": 1.0}, "ab" * 32)
    for other in (
        fingerprint("rgb2", "1", {"fps": 1.0, "size": 224}, "ab" * 32),
        fingerprint("rgb", "2", {"fps": 1.0, "size": 224}, "ab" * 32),
        fingerprint("rgb", "1", {"fps": 2.0, "size": 224}, "ab" * 32),
        fingerprint("rgb", "1", {"fps": 1.0, "size": 224}, "cd" * 32),
    ):
        assert other != fp
    with pytest.raises(Exception, match="not finite"):
        canonical_json({"x": float("nan")})


def test_round_trip_layout_and_attrs(tmp_path: Path) -> None:
    path = tmp_path / shard_name(3)
    assert path.name == "shard-00003.h5"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    with _writer(path, members_digest="d1", compression="lzf") as w:
        w.add("a", a, np.stack([np.arange(5), np.arange(1, 6)], 1))
        w.add("b", np.zeros((0, 4)), np.zeros((0, 2)), status=STATUS_EMPTY, error="no audio track")
        w.add(
            "c",
            np.zeros((0, 4)),
            np.zeros((0, 2)),
            status=STATUS_FAILED,
            error="x.mp4: truncated:\n decoded 3",
        )
    data = read_shard(path)
    assert data.video_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(data.offsets, [0, 5, 5, 5])
    assert data.features.dtype == np.float16 and data.features.shape == (5, 4)
    np.testing.assert_allclose(data.features, a, atol=1e-2)
    assert data.timestamps.dtype == np.float32
    np.testing.assert_array_equal(data.status, [STATUS_OK, STATUS_EMPTY, STATUS_FAILED])
    assert data.error == ["", "no audio track", "x.mp4: truncated: decoded 3"]
    assert data.tokens is None
    attrs = shard_attrs(path)
    assert (
        attrs["expert"] == "rgb" and attrs["fingerprint"] == "abc123def456" and attrs["schema_version"] == 1
    )
    assert attrs["config"] == '{"fps":1.0}' and attrs["weights_sha256"] == "ff" * 32
    assert attrs["members_digest"] == "d1" and "created_at" in attrs
    assert set(json.loads(attrs["package_versions"])) >= {"torch", "numpy", "h5py", "t2v"}
    with h5py.File(path, "r") as f:
        assert f["features"].compression == "lzf" and f["features"].chunks is not None
        assert f["video_ids"].dtype.kind == "O"


def test_float32_tokens_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with _writer(path, dtype="float32", token_level=True, extra_attrs={"retry_token": "r1"}) as w:
        w.add("v", np.ones((2, 4)), np.zeros((2, 2)), tokens=["tiger", "harbour"])
    data = read_shard(path)
    assert data.features.dtype == np.float32 and data.tokens == ["tiger", "harbour"]
    assert data.attrs["retry_token"] == "r1"
    with h5py.File(path, "r") as f:
        assert f["features"].compression == "gzip" and f["features"].shuffle


def test_bad_rows_are_rejected(tmp_path: Path) -> None:
    with _writer(tmp_path / "shard-00000.h5") as w:
        w.add("v", np.ones((2, 4)), np.zeros((2, 2)))
        with pytest.raises(ShardError, match="v: added twice"):
            w.add("v", np.ones((2, 4)), np.zeros((2, 2)))
        with pytest.raises(ShardError, match="w: features shape"):
            w.add("w", np.ones((2, 3)), np.zeros((2, 2)))
        with pytest.raises(ShardError, match="w: timestamps shape"):
            w.add("w", np.ones((2, 4)), np.zeros((3, 2)))
        with pytest.raises(ShardError, match="NaN"):
            w.add("w", np.full((1, 4), np.nan), np.zeros((1, 2)))
        with pytest.raises(ShardError, match="not token-level"):
            w.add("w", np.ones((1, 4)), np.zeros((1, 2)), tokens=["x"])
    assert read_shard(tmp_path / "shard-00000.h5").video_ids == ["v"]
    with pytest.raises(ShardError, match="extra_attrs"):
        _writer(tmp_path / "shard-00001.h5", extra_attrs={"fingerprint": "x"})


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with pytest.raises(RuntimeError), _writer(path) as w:
        w.add("v", np.ones((2, 4)), np.zeros((2, 2)))
        assert w.tmp_path.exists() and not path.exists()
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


KILL_SCRIPT = """
import sys, time, numpy as np
from pipeline.features.shards import ShardWriter
w = ShardWriter(sys.argv[1], expert="rgb", fingerprint="abc123def456", config={}, weights_sha256="", dim=4)
w.add("dead", np.ones((3, 4)), np.zeros((3, 2)))
print("written", flush=True)
time.sleep(60)
"""


def test_killed_writer_invisible_and_cleaned(tmp_path: Path) -> None:
    folder = tmp_path / "features" / "rgb" / "abc123def456"
    with _writer(folder / "shard-00000.h5") as w:
        w.add("ok", np.ones((1, 4)), np.zeros((1, 2)))
    target = folder / "shard-00001.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    tmps = temps_of(target)
    assert len(tmps) == 1 and not target.exists()
    reader = FeatureReader(folder)
    assert reader.video_ids == ["ok"]
    with _writer(target) as w:
        w.add("again", np.ones((1, 4)), np.zeros((1, 2)))
    assert not tmps[0].exists()
    assert FeatureReader(folder).video_ids == ["ok", "again"]


def test_unreadable_shard(tmp_path: Path) -> None:
    bad = tmp_path / "shard-00000.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(ShardError, match="shard-00000.h5"):
        read_shard(bad)
    with pytest.raises(ShardError, match="shard-00000.h5"):
        shard_attrs(bad)


def test_read_shard_index_reads_all_but_rows_and_lengths_that_disagree_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with _writer(path) as w:
        w.add("a", np.ones((2, 4)), np.zeros((2, 2)))
        w.add("b", np.ones((1, 4)), np.zeros((1, 2)), status=STATUS_FAILED, error="bad")
    index = read_shard_index(path)
    assert (index.video_ids, index.rows, index.dim, index.offsets.tolist()) == (["a", "b"], 3, 4, [0, 2, 3])
    assert index.status.tolist() == [STATUS_OK, STATUS_FAILED] and index.error == ["", "bad"]
    with h5py.File(path, "a") as f:
        del f["status"], f["timestamps"]
        f.create_dataset("status", data=np.zeros(3, np.int8))
        f.create_dataset("timestamps", data=np.zeros((2, 2), np.float32))
    problems = [f"{path}: status: 3 entries for 2 videos", f"{path}: timestamps: 2 rows, but features has 3"]
    assert verify_shard(path) == problems
    with pytest.raises(ShardError, match=re.escape(problems[0])):
        read_shard(path)


def test_many_rows_stream_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    rng = np.random.default_rng(1)
    rows = {f"v{i}": rng.standard_normal((300 + 97 * i, 4)).astype(np.float32) for i in range(6)}
    with _writer(path, dtype="float32") as w:
        for vid, feats in rows.items():
            w.add(vid, feats, np.zeros((len(feats), 2)))
    data = read_shard(path)
    assert data.video_ids == list(rows)
    for i, feats in enumerate(rows.values()):
        np.testing.assert_array_equal(data.features[data.rows(i)], feats)


def test_counts_come_from_attributes_or_the_status_of_older_shards(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with _writer(path) as w:
        w.add("a", np.ones((3, 4)), np.zeros((3, 2)))
        w.add("b", np.zeros((0, 4)), np.zeros((0, 2)), status=STATUS_EMPTY)
        w.add("c", np.zeros((0, 4)), np.zeros((0, 2)), status=STATUS_FAILED, error="boom")
    want = {"ok": 1, "empty": 1, "failed": 1, "rows": 3}
    assert shard_counts(path) == want
    assert shard_attr(path, "expert") == "rgb" and shard_attr(path, "absent") is None
    with h5py.File(path, "a") as f:  # a shard written before the count attributes existed
        for key in ("n_ok", "n_empty", "n_failed", "n_rows"):
            del f.attrs[key]
    assert shard_counts(path) == want
    with pytest.raises(ShardError, match="nothing.h5"):
        shard_counts(tmp_path / "nothing.h5")
