"""Features that `t2v extract` wrote, checked and damaged: `t2v features check` takes the manifest the user extracted,
and extract rebuilds a shard whose data fails verification instead of trusting its attributes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import pipeline.features.plan as plan_module
from pipeline.features.shards import read_shard, shard_attr, shard_name
from tests.conftest import flip_stored_bit, make_dataset
from workflows.cli import main
from workflows.extraction import run_extraction


def test_check_accepts_the_extracted_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    root = tmp_path / "features"
    run_extraction(manifest, ["audio_stats"], root, shard_size=2)
    capsys.readouterr()
    for features in (root, root / "audio_stats"):
        assert main(["features", "check", "--manifest", str(manifest), "--features", str(features)]) == 0
        assert capsys.readouterr().out.splitlines() == [f"{features}: ok"]

    make_dataset(tmp_path / "data", 1, start=4)  # a video added to the manifest, not extracted yet
    assert main(["features", "check", "--manifest", str(manifest), "--features", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "1 manifest video(s) have no rows yet, e.g. ['clip004']" in out[0], out


def test_extract_rebuilds_a_shard_whose_data_fails_verification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    root = tmp_path / "features"
    run_extraction(manifest, ["audio_stats"], root, shard_size=2)
    (folder,) = [d for d in (root / "audio_stats").iterdir() if d.is_dir()]
    damaged, intact = folder / shard_name(0), folder / shard_name(1)
    original, untouched = read_shard(damaged), intact.stat().st_mtime_ns
    flip_stored_bit(damaged, "features")
    assert shard_attr(damaged, "members_digest")  # its attributes still read
    verified: list[Path] = []
    verify = plan_module.verify_shard
    monkeypatch.setattr(plan_module, "verify_shard", lambda path: verified.append(path) or verify(path))

    with caplog.at_level(logging.WARNING, logger="pipeline.features.plan"):
        run_extraction(manifest, ["audio_stats"], root, shard_size=2)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "pipeline.features.plan"]
    assert warning.startswith(f"{damaged}: features: corrupt data (")
    assert warning.endswith("); moved aside to shard-00000.h5.corrupt, t2v extract rebuilds it"), warning
    assert verified == [
        damaged
    ]  # only the changed file was read in full; written shards are recorded verified
    rebuilt = read_shard(damaged)
    assert rebuilt.video_ids == original.video_ids
    np.testing.assert_array_equal(rebuilt.features, original.features)
    np.testing.assert_array_equal(rebuilt.offsets, original.offsets)
    assert (folder / "shard-00000.h5.corrupt").is_file() and intact.stat().st_mtime_ns == untouched
