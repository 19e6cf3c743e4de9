"""`t2v features check` on features that `t2v extract` wrote: the manifest the user extracted is the one to give."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_dataset
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
