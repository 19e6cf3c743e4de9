"""The extraction DAG end to end: real decoders, real HDF5 shards, Luigi (local scheduler and a real luigid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_manifest.schema import write_manifest
from data_manifest.validate import load_manifest
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import SHARD_GLOB, read_shard
from tests.conftest import make_dataset
from workflows.extraction import run_extraction

EXPERTS = ["rgb", "audio_stats"]
FAST_RGB = {"rgb": {"fps": 1.0}}


def _shards(root: Path, expert: str) -> dict[str, int]:
    """{relative shard path: mtime_ns} of every shard file of an expert (all fingerprints)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted((root / expert).rglob(SHARD_GLOB))}


def _features(root: Path, expert: str) -> dict[str, np.ndarray]:
    (fp_dir,) = [d for d in (root / expert).iterdir() if d.is_dir()]
    reader = FeatureReader(fp_dir)
    return {vid: reader.get(vid).features for vid in reader.video_ids}


def test_two_experts_then_append_then_option_change_then_caption_edit(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    feats = tmp_path / "features"
    report = run_extraction(manifest, EXPERTS, feats, shard_size=2, expert_configs=FAST_RGB)
    assert report.experts["rgb"]["ok"] == 4
    # clip002 has no audio track: "empty", not a failure
    assert report.experts["audio_stats"]["empty"] == 1 and report.experts["audio_stats"]["failed"] == 0
    assert report.experts["rgb"]["model_s"] > 0 and "waited for input" in report.lines()[0]
    rgb_before, audio_before = _shards(feats, "rgb"), _shards(feats, "audio_stats")
    assert len(rgb_before) == 2

    make_dataset(tmp_path / "data", 2, start=4)  # append two videos -> one new shard per expert
    run_extraction(manifest, EXPERTS, feats, shard_size=2, expert_configs=FAST_RGB)
    rgb_after = _shards(feats, "rgb")
    assert len(rgb_after) == 3
    assert {k: rgb_after[k] for k in rgb_before} == rgb_before  # old shards untouched

    audio_mid = _shards(feats, "audio_stats")
    run_extraction(manifest, EXPERTS, feats, shard_size=2, expert_configs={"rgb": {"fps": 2.0}})
    assert len([d for d in (feats / "rgb").iterdir() if d.is_dir()]) == 2  # new fingerprint folder
    assert _shards(feats, "audio_stats") == audio_mid  # other expert not re-run
    assert {k: v for k, v in _shards(feats, "rgb").items() if k in rgb_after} == rgb_after

    records = load_manifest(manifest)
    records[0].captions = ["an edited caption"]
    write_manifest(manifest, records)
    everything = {e: _shards(feats, e) for e in EXPERTS}
    run_extraction(manifest, EXPERTS, feats, shard_size=2, expert_configs={"rgb": {"fps": 2.0}})
    assert {e: _shards(feats, e) for e in EXPERTS} == everything  # captions invalidate no features
    assert audio_before.keys() <= audio_mid.keys()


def test_changed_video_content_invalidates_only_its_shard(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    feats = tmp_path / "features"
    run_extraction(manifest, ["audio_stats"], feats, shard_size=2)
    before = _shards(feats, "audio_stats")
    from tests.media import make_video

    make_video(tmp_path / "data" / "videos" / "clip003.mp4", duration=3.0, fps=8, source="smptebars")
    run_extraction(manifest, ["audio_stats"], feats, shard_size=2)
    after = _shards(feats, "audio_stats")
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {k for k in before if k.endswith("shard-00001.h5")}


def _extract(*args: str) -> subprocess.CompletedProcess:
    """``t2v extract ARGS`` in a fresh process, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", "extract", *args], capture_output=True, text=True, timeout=600
    )


def _t2v(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workflows.cli", *args], **kw)


def test_sigkill_mid_run_resumes_to_identical_features(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 6)
    ref = tmp_path / "ref"
    run_extraction(manifest, ["rgb"], ref, shard_size=1, expert_configs=FAST_RGB)

    feats = tmp_path / "features"
    args = (
        "extract",
        "--manifest",
        str(manifest),
        "--experts",
        "rgb",
        "--out",
        str(feats),
        "--shard-size",
        "1",
        "--device",
        "cpu",
    )
    proc = _t2v(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((feats / "rgb").rglob(SHARD_GLOB)) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list((feats / "rgb").rglob(SHARD_GLOB))
    assert 1 <= len(done) < 6, "kill should land mid-run"
    for path in done:  # every visible shard is complete
        read_shard(path)

    rerun = _t2v(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    got, want = _features(feats, "rgb"), _features(ref, "rgb")
    assert got.keys() == want.keys()
    for vid in want:
        np.testing.assert_array_equal(got[vid], want[vid])


def test_two_workers_against_luigid(tmp_path: Path, luigid: str) -> None:
    # Through the CLI: Luigi forks one process per running task, and a fork of a process that has already run
    # torch's OpenMP thread pool (as this pytest process has) can hang in the child.
    manifest = make_dataset(tmp_path / "data", 4)
    feats = tmp_path / "features"
    proc = _extract(
        "--manifest",
        str(manifest),
        "--experts",
        ",".join(EXPERTS),
        "--out",
        str(feats),
        "--shard-size",
        "1",
        "--workers",
        "2",
        "--device",
        "cpu",
        "--scheduler-url",
        luigid,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rgb = json.loads(next((feats / "rgb").rglob("summary-s1-*.json")).read_text())
    audio = json.loads(next((feats / "audio_stats").rglob("summary-s1-*.json")).read_text())
    assert rgb["ok"] == 4 and rgb["shards"] == 4
    assert audio["ok"] + audio["empty"] == 4


def test_cli_summary_and_bad_expert(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 2)
    ok = _extract("--manifest", str(manifest), "--experts", "audio_stats", "--out", str(tmp_path / "f"))
    assert ok.returncode == 0, ok.stderr
    assert "audio_stats" in ok.stdout and "wall time" in ok.stdout
    bad = _extract("--manifest", str(manifest), "--experts", "nosuch")
    assert bad.returncode == 1
    assert "unknown expert 'nosuch'" in bad.stderr and "Traceback" not in bad.stderr
    summary = json.loads(next((tmp_path / "f" / "audio_stats").rglob("summary-s64-*.json")).read_text())
    assert summary["ok"] + summary["empty"] == 2


def test_retry_failed_redoes_only_failed_videos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from extractors.registry import expert_class
    from pipeline.errors import MediaError

    manifest = make_dataset(tmp_path / "data", 3)
    feats = tmp_path / "features"
    cls = expert_class("rgb")
    original = cls.preparer

    def flaky(self, path, record):  # a transient read error (network disk, ...): the file itself is fine
        if record.video_id == "clip001":
            raise MediaError(f"{path}: transient read error")
        return original(self, path, record)

    monkeypatch.setattr(cls, "preparer", flaky)
    first = run_extraction(manifest, ["rgb"], feats, shard_size=3, expert_configs=FAST_RGB)
    assert first.experts["rgb"]["failed"] == 1
    monkeypatch.undo()
    (shard,) = (feats / "rgb").rglob(SHARD_GLOB)
    before = read_shard(shard)
    again = run_extraction(manifest, ["rgb"], feats, shard_size=3, expert_configs=FAST_RGB)
    assert again.experts["rgb"]["failed"] == 1  # nothing changed on disk: a plain rerun keeps the shard
    retried = run_extraction(
        manifest, ["rgb"], feats, shard_size=3, expert_configs=FAST_RGB, retry_failed=True
    )
    assert retried.experts["rgb"]["failed"] == 0 and retried.experts["rgb"]["ok"] == 3
    after = read_shard(shard)
    for vid in ("clip000", "clip002"):  # good rows were copied, not recomputed differently
        i, j = before.video_ids.index(vid), after.video_ids.index(vid)
        np.testing.assert_array_equal(before.features[before.rows(i)], after.features[after.rows(j)])


def test_file_replaced_in_place_is_reprobed_and_reextracted(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 2)
    victim = tmp_path / "data" / "videos" / "clip001.mp4"
    good = victim.read_bytes()
    victim.write_bytes(b"not a video at all")
    feats = tmp_path / "features"
    assert (
        run_extraction(manifest, ["audio_stats"], feats, shard_size=2).experts["audio_stats"]["failed"] == 1
    )
    victim.write_bytes(good)  # repaired in place, manifest untouched
    assert (
        run_extraction(manifest, ["audio_stats"], feats, shard_size=2).experts["audio_stats"]["failed"] == 0
    )


def test_evaluate_on_another_manifest_extracts_its_features(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from workflows.cli import main

    manifest = make_dataset(tmp_path / "train", 4)
    feats = tmp_path / "features"
    run_extraction(manifest, ["audio_stats"], feats, shard_size=4)
    config = tmp_path / "tiny.toml"
    config.write_text(
        'experts = ["audio_stats"]\nepochs = 1\nbatch_size = 4\ndevice = "cpu"\n'
        '[head_options]\ndim = 16\nnum_clusters = 2\nff_dim = 32\n[optim]\nname = "adam"\n'
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--head",
                "t2vlad",
                "--manifest",
                str(manifest),
                "--config",
                str(config),
                "--features",
                str(feats),
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    other = make_dataset(tmp_path / "other", 3, start=10)  # clip010..clip012: never extracted
    capsys.readouterr()
    assert main(["evaluate", str(run), "--manifest", str(other), "--split", "train", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_videos"] == 3 and result["num_texts"] == 3
    assert {"clip010", "clip011", "clip012"} <= set(
        _features(feats, "audio_stats")
    )  # same fingerprint folder
