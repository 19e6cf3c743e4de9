"""Two manifests sharing one features root: a shard holds all its plan members or is not written, plan updates
are locked, and each manifest keeps its own summary."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from pipeline.features.plan import ShardPlan, default_plan_path
from pipeline.features.reader import FeatureReader
from tests.conftest import make_dataset
from workflows.extraction import run_extraction
from workflows.tasks_extract import SKIPPED, load_plan_specs


def _subset(manifest: Path, name: str, ids: set[str]) -> Path:
    """A second manifest beside ``manifest`` holding only the videos ``ids``."""
    out = manifest.parent / name
    write_manifest(out, [r for r in load_manifest(manifest, check_paths=False) if r.video_id in ids])
    return out


def _video_ids(root: Path, expert: str) -> set[str]:
    (fp_dir,) = [d for d in (root / expert).iterdir() if d.is_dir()]
    return set(FeatureReader(fp_dir).video_ids)


def test_shard_deleted_then_rerun_with_other_manifest_is_left_whole(tmp_path: Path) -> None:
    full = make_dataset(tmp_path / "data", 4)  # clip000..clip003 → shards [0, 1], [2, 3]
    part = _subset(full, "part.jsonl", {"clip000", "clip002"})
    feats = tmp_path / "features"
    run_extraction(full, ["audio_stats"], feats, shard_size=2)
    run_extraction(part, ["audio_stats"], feats, shard_size=2)
    (shard0,) = (feats / "audio_stats").rglob("shard-00000.h5")
    shard0.unlink()

    report = run_extraction(part, ["audio_stats"], feats, shard_size=2)
    assert not shard0.exists()  # not rebuilt holding clip000 alone
    assert report.experts["audio_stats"][SKIPPED] == 1
    assert "1 shards skipped: members not in this manifest" in report.lines()[0]

    run_extraction(full, ["audio_stats"], feats, shard_size=2)
    assert _video_ids(feats, "audio_stats") == {"clip000", "clip001", "clip002", "clip003"}
    assert len(list((feats / "audio_stats").rglob("summary-s2-*.json"))) == 2


def test_concurrent_extracts_of_two_manifests_into_one_root(tmp_path: Path) -> None:
    full = make_dataset(tmp_path / "data", 8)
    first = _subset(full, "first.jsonl", {f"clip{i:03d}" for i in range(4)})
    second = _subset(full, "second.jsonl", {f"clip{i:03d}" for i in range(4, 8)})
    feats = tmp_path / "features"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workflows.cli",
                "extract",
                "--manifest",
                str(m),
                "--experts",
                "audio_stats",
            ]
            + ["--out", str(feats), "--shard-size", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in (first, second)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert _video_ids(feats, "audio_stats") == {f"clip{i:03d}" for i in range(8)}
    summaries = [json.loads(p.read_text()) for p in (feats / "audio_stats").rglob("summary-s1-*.json")]
    assert sorted(s["manifest"] for s in summaries) == sorted(str(m.absolute()) for m in (first, second))
    assert all(s["ok"] + s["empty"] == 4 and s[SKIPPED] == 0 for s in summaries)


def test_plan_updates_of_two_manifests_never_lose_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow load (both updates read the plan before either saves) loses no shard: the update is locked."""
    probed = []
    for name, start in (("a", 0), ("b", 10)):
        path = tmp_path / f"{name}.probed.jsonl"
        records = [VideoRecord(f"v{i}", f"/m/v{i}.mp4", ["c"], "train") for i in range(start, start + 3)]
        for rec in records:
            rec.content_hash = "h" + rec.video_id
        write_manifest(path, records)
        probed.append(path)
    load = ShardPlan.load

    def slow_load(path: Path) -> ShardPlan:
        plan = load(path)
        time.sleep(0.3)
        return plan

    monkeypatch.setattr(ShardPlan, "load", staticmethod(slow_load))
    root = tmp_path / "features"
    threads = [
        threading.Thread(target=load_plan_specs, args=(p, root, 1), kwargs={"save": True}) for p in probed
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    specs = load(default_plan_path(root, 1)).specs()
    assert sorted(s.video_ids[0] for s in specs) == ["v0", "v1", "v10", "v11", "v12", "v2"]
