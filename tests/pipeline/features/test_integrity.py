"""Shard integrity: fletcher32 checksums, offsets and status validation, full-read verification, check --repair.

Each corruption case flips one byte of a written shard on disk and expects a one-line ShardError naming the shard
from every reader, a problem from ``verify_shard`` and ``t2v features check``, never different features."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from data_manifest.schema import VideoRecord, write_manifest
from pipeline.errors import ShardError
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import STATUS_FAILED, ShardWriter, read_shard, shard_name, verify_shard
from tests.conftest import flip_stored_bit
from workflows.cli import main

FP = "0123456789ab"
IDS = [f"v{i}" for i in range(6)]


def _shard(folder: Path, index: int = 0, ids: list[str] = IDS) -> Path:
    """A float16 gzip shard of ``ids`` with 300 random rows per video (several compressed chunks)."""
    path = folder / shard_name(index)
    rng = np.random.default_rng(index)
    with ShardWriter(path, expert="rgb", fingerprint=FP, config={}, weights_sha256="", dim=8) as w:
        for k, vid in enumerate(ids):
            n = 300
            times = np.stack([np.arange(n), np.arange(n) + 1], 1)
            status = STATUS_FAILED if k == 1 else 0
            feats = rng.standard_normal((n, 8)) if status == 0 else np.zeros((0, 8))
            w.add(vid, feats, times[: len(feats)], status, "broken" if status else "")
    return path


def _old_layout(src: Path, dst: Path, **replace: np.ndarray) -> Path:
    """Copy a shard as writers before the checksums wrote it (no fletcher32), optionally replacing datasets."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for name in a:
            data = replace.get(name, a[name][()])
            b.create_dataset(name, data=data, dtype=a[name].dtype)
        b.attrs.update(a.attrs)
    return dst


def test_numeric_datasets_carry_checksums_and_keep_compression(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    with h5py.File(path, "r") as f:
        assert {n for n in f if f[n].fletcher32} == {"features", "timestamps", "offsets", "status"}
        assert f["features"].compression == "gzip" and f["features"].shuffle
    assert verify_shard(path) == []
    assert read_shard(path).video_ids == IDS


@pytest.mark.parametrize("dataset", ["features", "timestamps", "offsets", "status"])
def test_flipped_byte_is_an_error_naming_the_shard(tmp_path: Path, dataset: str) -> None:
    path = _shard(tmp_path)
    chunk = 2 if dataset == "features" else 0  # a compressed features chunk in the middle of the shard
    flip_stored_bit(path, dataset, chunk=chunk, at=3)
    problems = verify_shard(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: {dataset}: corrupt data (")
    with pytest.raises(ShardError, match=rf"^{path}: .*corrupt data") as err:
        read_shard(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ShardError, match=rf"^{path}: .*corrupt data.*t2v features check --repair") as err:
        FeatureReader(tmp_path).get_many(IDS)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"offsets": [0, 300, 300, 200, 900, 1200, 1500]}, "offsets: decrease at video 3 (300 -> 200)"),
        ({"offsets": [5, 300, 300, 600, 900, 1200, 1500]}, "offsets: start at 5, not 0"),
        (
            {"offsets": [0, 300, 300, 600, 900, 1200, 1400]},
            "offsets: end at 1400, but features has 1500 rows",
        ),
        ({"status": np.array([0, 2, 0, 7, 0, 0], np.int8)}, "status: invalid code 7 at video 3"),
    ],
    ids=["offsets decrease", "offsets start", "offsets end", "status code"],
)
def test_old_shards_without_checksums_read_and_are_validated(
    tmp_path: Path, change: dict, problem: str
) -> None:
    new = _shard(tmp_path / "new")
    old = _old_layout(new, (tmp_path / "old").mkdir() or tmp_path / "old" / shard_name(0))
    assert verify_shard(old) == [] and read_shard(old).video_ids == IDS
    np.testing.assert_array_equal(
        FeatureReader(old.parent).get("v3").features, read_shard(new).features[600:900]
    )

    bad = _old_layout(new, old, **{k: np.asarray(v) for k, v in change.items()})
    assert verify_shard(bad) == [
        f"{bad}: {problem}" + (" (1 invalid; allowed 0, 1, 2)" if "status" in change else "")
    ]
    with pytest.raises(ShardError, match=rf"^{re.escape(str(bad))}: {re.escape(problem)}"):
        read_shard(bad)
    with pytest.raises(ShardError, match=rf"^{re.escape(str(bad))}: {re.escape(problem)}"):
        FeatureReader(bad.parent).get_many(IDS)


def test_check_reads_the_data_and_repair_moves_damaged_shards_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "features"
    folder = root / "rgb" / FP
    good, damaged = _shard(folder, 0, IDS[:3]), _shard(folder, 1, IDS[3:])
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [VideoRecord(v, f"{v}.mp4", ["x"], "train") for v in IDS])
    args = ["features", "check", "--manifest", str(manifest), "--features", str(root)]
    assert main(args) == 0
    capsys.readouterr()

    flip_stored_bit(damaged, "features", chunk=1, at=10)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{damaged}: features: corrupt data (" in out and str(good) not in out
    assert damaged.exists()

    assert main([*args, "--repair"]) == 1
    out = capsys.readouterr().out
    assert f"{damaged}: moved aside to shard-00001.h5.corrupt; t2v extract rebuilds it" in out
    assert not damaged.exists() and (folder / "shard-00001.h5.corrupt").is_file()
    assert main(args) == 0
    assert "3 manifest video(s) have no rows yet" in capsys.readouterr().out
    assert FeatureReader(folder).video_ids == IDS[:3]


def test_damaged_utf8_in_ids_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = _shard(tmp_path)
    data = path.read_bytes()
    at = data.index(b"v4")  # the id's bytes in HDF5's global heap, which has no checksum
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    (problem,) = verify_shard(path)
    assert problem.startswith(f"{path}: video_ids: corrupt data (")
    with pytest.raises(ShardError, match=rf"^{re.escape(str(path))}: cannot read shard index: .*utf-8"):
        FeatureReader(tmp_path)
