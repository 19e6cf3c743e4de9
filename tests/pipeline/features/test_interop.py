"""MMT / Collaborative-Experts import and export, and the `t2v features` commands."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from data_manifest.schema import VideoRecord, write_manifest
from pipeline.errors import ConfigError, ShardError
from pipeline.features.interop import (
    export_mmt,
    import_features,
    mmt_path,
    read_ce_pickle,
    read_mmt,
    source_digest,
)
from pipeline.features.plan import ShardPlan, default_plan_path
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import STATUS_EMPTY, STATUS_FAILED, STATUS_OK, ShardWriter, shard_name
from workflows.cli import main

FP = "0123456789ab"


def _h(video_id: str) -> str:
    return hashlib.sha256(video_id.encode()).hexdigest()[:16]


def _features(root: Path, ids: list[str], plan_size: int | None = None) -> Path:
    folder = root / "rgb" / FP
    specs = None
    if plan_size:
        plan = ShardPlan()
        specs = plan.update(
            [VideoRecord(v, f"{v}.mp4", [], "train", content_hash=_h(v)) for v in ids], plan_size
        )
        plan.save(default_plan_path(root, plan_size))
    groups = [(s.index, list(s.video_ids), s.members_digest) for s in specs] if specs else [(0, ids, "")]
    for index, members, digest in groups:
        with ShardWriter(
            folder / shard_name(index),
            expert="rgb",
            fingerprint=FP,
            config={},
            weights_sha256="",
            dim=3,
            dtype="float32",
            members_digest=digest,
        ) as w:
            for k, vid in enumerate(members):
                if vid.startswith("bad"):
                    w.add(vid, np.zeros((0, 3)), np.zeros((0, 2)), STATUS_FAILED, f"{vid}.mp4: truncated")
                elif vid.startswith("mute"):
                    w.add(vid, np.zeros((0, 3)), np.zeros((0, 2)), STATUS_EMPTY, "no audio track")
                else:
                    n = k + 2
                    w.add(
                        vid, np.arange(n * 3).reshape(n, 3) + k, np.stack([np.arange(n), np.arange(n) + 1], 1)
                    )
    return folder


def test_mmt_round_trip(tmp_path: Path) -> None:
    folder = _features(tmp_path / "features", ["abc1", "xyz2", "bad3", "nocap4"])
    out = tmp_path / "mmt"
    records = [
        VideoRecord("abc1", "a.mp4", ["a red circle", "a ball"], "train"),
        VideoRecord("xyz2", "x.mp4", ["a square"], "train"),
        VideoRecord("bad3", "b.mp4", ["broken"], "test"),
        VideoRecord("nocap4", "n.mp4", [], "unlabelled"),
    ]
    assert export_mmt(folder, out, records=records) == (3, 1)
    path = mmt_path(out, "abc1")
    assert path == out / "a" / "b" / "c" / "abc1.h5"
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["features.rgb"][()], np.arange(6).reshape(2, 3))
        np.testing.assert_array_equal(f["features_t.rgb"][()], [[0, 1], [1, 2]])
        assert list(f["raw_captions.1"].asstr()[()]) == ["a", "ball"]
    with h5py.File(mmt_path(out, "bad3"), "r") as f:
        assert np.isnan(f["features.rgb"][0, 0])
        np.testing.assert_array_equal(f["features_t.rgb"][()], [[0, 0]])  # finite times for MMT
    assert not mmt_path(out, "nocap4").exists()  # MMT asserts at least one caption per file
    # a second expert goes into the same files; the first one's datasets stay; captions follow the manifest
    records[0] = VideoRecord("abc1", "a.mp4", ["only one now"], "train")
    export_mmt(folder, out, expert="scene", records=records)
    with h5py.File(path, "r") as f:
        assert {"features.rgb", "features.scene", "raw_captions.0"} <= set(f)
        assert "raw_captions.1" not in f and list(f["raw_captions.0"].asstr()[()]) == ["only", "one", "now"]

    items = list(read_mmt(out, "rgb"))
    assert [i.video_id for i in items] == ["abc1", "bad3", "xyz2"]
    imported = import_features(
        items, tmp_path / "imp", expert="rgb", fmt="mmt", source_sha256=source_digest(out.rglob("*.h5"))
    )
    reader = FeatureReader(imported)
    assert reader.attrs["config"] == '{"imported_from":"mmt"}'
    original = FeatureReader(folder)
    for vid in ("abc1", "xyz2"):
        np.testing.assert_array_equal(reader.get(vid).features, original.get(vid).features)
        np.testing.assert_array_equal(reader.get(vid).timestamps, original.get(vid).timestamps)
    assert reader.get("bad3").status == STATUS_EMPTY


def _aligned_mmt_file(path: Path, features: np.ndarray, times: np.ndarray | None) -> None:
    with h5py.File(path, "w") as f:
        f["features.rgb"] = features
        if times is not None:
            f["features_t.rgb"] = times
        f["raw_captions.0"] = np.asarray(["x"], dtype=h5py.string_dtype("utf-8"))


def test_mmt_import_keeps_times_aligned_with_the_rows_it_keeps(tmp_path: Path) -> None:
    rows = np.arange(9.0).reshape(3, 3)
    times = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    with_nan_row = rows.copy()
    with_nan_row[1] = np.nan
    nan_time = times.copy()
    nan_time[2] = np.nan
    _aligned_mmt_file(
        tmp_path / "extra.h5", rows, np.vstack([times, [[3.0, 4.0]]])
    )  # one time row more than rows
    _aligned_mmt_file(tmp_path / "nanrow.h5", with_nan_row, times)  # a NaN feature row: its time goes with it
    _aligned_mmt_file(tmp_path / "nantime.h5", rows, nan_time)  # one unknown time: only that row's
    _aligned_mmt_file(tmp_path / "notimes.h5", rows, None)
    got = {i.video_id: i for i in read_mmt(tmp_path, "rgb")}
    np.testing.assert_array_equal(got["extra"].timestamps, times)
    np.testing.assert_array_equal(got["nanrow"].features, rows[[0, 2]])
    np.testing.assert_array_equal(got["nanrow"].timestamps, times[[0, 2]])
    np.testing.assert_array_equal(got["nantime"].timestamps[:2], times[:2])
    assert np.isnan(got["nantime"].timestamps[2]).all()
    assert got["notimes"].status == STATUS_OK and np.isnan(got["notimes"].timestamps).all()


def test_export_writes_real_times_for_rows_of_unknown_time(tmp_path: Path) -> None:
    src = tmp_path / "ce.pkl"
    src.write_bytes(pickle.dumps({"v1": np.ones((4, 2), np.float32), "v2": np.ones((2, 2), np.float32)}))
    folder = import_features(
        read_ce_pickle(src, trust_pickle=True), tmp_path / "f", expert="audio", fmt="ce", source_sha256="aa"
    )
    records = [
        VideoRecord("v1", "1.mp4", ["a"], "train", duration=8.0),
        VideoRecord("v2", "2.mp4", ["b"], "train"),
    ]
    out = tmp_path / "mmt"
    with pytest.raises(ShardError, match="v2: row times unknown and the manifest has no duration"):
        export_mmt(folder, out, records=records, flat=True)
    records[1] = VideoRecord("v2", "2.mp4", ["b"], "train", duration=3.0)
    assert export_mmt(folder, out, records=records, flat=True) == (2, 0)
    with h5py.File(out / "v1.h5", "r") as f:
        np.testing.assert_array_equal(f["features_t.audio"][()], [[0, 2], [2, 4], [4, 6], [6, 8]])
    with h5py.File(out / "v2.h5", "r") as f:
        np.testing.assert_array_equal(f["features_t.audio"][()], [[0, 1.5], [1.5, 3]])


def _pickle(path: Path, data: dict) -> Path:
    path.write_bytes(pickle.dumps(data))
    return path


def test_ce_pickle_needs_trust(tmp_path: Path) -> None:
    src = tmp_path / "audio.pkl"
    data = {
        "v1": np.ones(4, np.float32),
        "v2": np.full((3, 4), np.nan),
        "v3": np.arange(8.0).reshape(2, 4),
        "v5": float("nan"),  # CE marks a missing video with a bare NaN float
    }
    src.write_bytes(pickle.dumps(data))
    with pytest.raises(ConfigError, match="arbitrary code.*--trust-pickle"):
        list(read_ce_pickle(src))
    items = list(read_ce_pickle(src, trust_pickle=True))
    assert [(i.video_id, i.status, i.features.shape) for i in items] == [
        ("v1", STATUS_OK, (1, 4)),
        ("v2", STATUS_EMPTY, (0, 4)),
        ("v3", STATUS_OK, (2, 4)),
        ("v5", STATUS_EMPTY, (0, 0)),
    ]
    with pytest.raises(ShardError, match="expected a"):
        list(read_ce_pickle(_pickle(tmp_path / "scalar.pkl", {"v": 1.5}), trust_pickle=True))
    ids = ("v1", "v2", "v3", "v4", "v5")
    records = [VideoRecord(v, f"{v}.mp4", [], "test", content_hash=v) for v in ids]
    folder = import_features(
        items, tmp_path / "f", expert="audio", fmt="ce", source_sha256="aa", shard_size=2, records=records
    )
    reader = FeatureReader(folder)
    assert reader.video_ids == list(ids) and len(reader.shards) == 3
    assert reader.get("v5").status == STATUS_EMPTY and reader.get("v5").features.shape == (0, 4)
    assert reader.get("v4").status == STATUS_EMPTY and "not in the imported" in reader.get("v4").error
    assert np.isnan(reader.get("v3").timestamps).all()


def test_cli_info_check_failures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "features"
    folder = _features(root, ["a1", "mute2", "bad3", "b4"], plan_size=2)
    manifest = tmp_path / "m.jsonl"
    recs = [
        VideoRecord(v, f"{v}.mp4", ["x"], "train", content_hash=_h(v))
        for v in ("a1", "mute2", "bad3", "b4", "c5")
    ]
    write_manifest(manifest, recs)

    assert main(["features", "info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shards"] == 2 and info["videos"] == 4 and info["dim"] == [3]
    assert info["status"] == {"ok": 2, "empty": 1, "failed": 1} and info["attrs"]["fingerprint"] == FP
    assert main(["features", "info", str(folder / "shard-00000.h5")]) == 0
    assert "rows: 2" in capsys.readouterr().out

    assert main(["features", "check", "--manifest", str(manifest), "--features", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "1 manifest video(s) have no rows" in out

    assert main(["features", "failures", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["video_id"], r["status"]) for r in rows] == [("mute2", "empty"), ("bad3", "failed")]
    assert main(["features", "failures", str(folder)]) == 0
    assert "bad3.mp4: truncated" in capsys.readouterr().out

    # a changed content hash makes shard 1 stale; an unknown id and a wrong folder name are problems
    recs[2].content_hash = "ffff"
    write_manifest(manifest, [r for r in recs if r.video_id != "a1"])
    (folder.parent / "wrongname").mkdir()
    (folder / "shard-00001.h5").rename(folder.parent / "wrongname" / "shard-00001.h5")
    assert main(["features", "check", "--manifest", str(manifest), "--features", str(root)]) == 1
    out = capsys.readouterr().out
    assert "shard-00000.h5: 1 video id(s) not in the manifest" in out
    assert "fingerprint attribute '0123456789ab' is not the folder's 'wrongname'" in out
    assert "members_digest differs from plan-2.json" in out
    (folder / "shard-00009.h5").write_bytes(b"not hdf5")
    assert main(["features", "check", "--manifest", str(manifest), "--features", str(folder)]) == 1
    assert "shard-00009.h5: cannot read shard" in capsys.readouterr().out


def test_cli_import_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _features(tmp_path / "features", ["abc1", "def2"])
    out = tmp_path / "mmt"
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, [VideoRecord(v, f"{v}.mp4", ["a caption"], "train") for v in ("abc1", "def2")])
    with pytest.raises(SystemExit):  # --manifest is required: MMT needs the captions
        main(["features", "export-mmt", str(folder), "--out", str(out), "--flat"])
    assert "--manifest" in capsys.readouterr().err
    assert (
        main(
            ["features", "export-mmt", str(folder), "--out", str(out), "--flat", "--manifest", str(manifest)]
        )
        == 0
    )
    assert (out / "abc1.h5").exists()
    assert (
        main(
            [
                "features",
                "import",
                str(out),
                "--format",
                "mmt",
                "--expert",
                "rgb",
                "--out",
                str(tmp_path / "i"),
            ]
        )
        == 0
    )
    pkl = tmp_path / "x.pkl"
    pkl.write_bytes(pickle.dumps({"a": np.ones(2)}))
    assert (
        main(
            ["features", "import", str(pkl), "--format", "ce", "--expert", "x", "--out", str(tmp_path / "i")]
        )
        == 1
    )
    assert "--trust-pickle" in capsys.readouterr().err
    args = ["features", "import", str(pkl), "--format", "ce", "--expert", "x", "--out", str(tmp_path / "i")]
    assert main([*args, "--trust-pickle"]) == 0
    assert main(["features", "info", str(tmp_path / "nothing")]) == 1


def _mmt_file(path: Path, **datasets: dict) -> Path:
    with h5py.File(path, "w") as f:
        for name, kwargs in datasets.items():
            f.create_dataset(name.replace("__", "."), **kwargs)
    return path


@pytest.mark.parametrize(
    "dataset, problem",
    [
        (
            {"shape": (1_000_000, 1000), "dtype": "f4", "chunks": (1000, 1000)},
            "declares shape (1000000, 1000)",
        ),
        (
            {"shape": (1_000_000, 1000), "dtype": "f4", "external": [("/dev/zero", 0, 4_000_000_000)]},
            "outside",
        ),
        ({"data": np.array(["a", "b"], dtype=h5py.string_dtype())}, "expected numbers"),
    ],
    ids=["unwritten chunks", "external storage", "strings"],
)
def test_mmt_dataset_is_checked_before_it_is_read(tmp_path: Path, dataset: dict, problem: str) -> None:
    """A 1-10 KB file declaring 4 GB of features is a one-line error, not a 4 GB allocation."""
    path = _mmt_file(tmp_path / "v1.h5", features__rgb=dataset)
    assert path.stat().st_size < 16_000
    with pytest.raises(ShardError, match=rf"^{path}: features\.rgb: .*{re.escape(problem)}") as err:
        list(read_mmt(path, "rgb"))
    assert "\n" not in str(err.value)


def test_mmt_bounds_keep_highly_compressed_real_data(tmp_path: Path) -> None:
    zeros = {"data": np.zeros((1000, 1000), "f4"), "chunks": (1000, 1000), "compression": "gzip"}
    times = {"data": np.arange(2000.0).reshape(1000, 2)}
    path = _mmt_file(tmp_path / "v1.h5", features__rgb=zeros, features_t__rgb=times)
    (item,) = read_mmt(path, "rgb")
    assert item.features.shape == (1000, 1000) and not item.features.any()
    np.testing.assert_array_equal(item.timestamps, times["data"])


def test_cli_failures_and_errors_show_terminal_controls_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "rgb" / FP
    error = "clip\x1b]0;owned\x07.mp4: truncated\rall good\x9b2J"
    with ShardWriter(
        folder / shard_name(0), expert="rgb", fingerprint=FP, config={}, weights_sha256="", dim=3
    ) as w:
        w.add("v1", np.zeros((0, 3)), np.zeros((0, 2)), STATUS_FAILED, error)
    capsys.readouterr()
    assert main(["features", "failures", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "clip\\x1b]0;owned\\x07.mp4: truncated all good\\x9b2J" in out  # the writer made CR a space
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in out)
    assert main(["features", "failures", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["error"] == error.replace("\r", " ")
    assert main(["features", "info", str(tmp_path / "no\x1b[2Jthing")]) == 1
    assert "no\\x1b[2Jthing" in capsys.readouterr().err
