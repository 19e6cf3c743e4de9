"""A corpus of broken and unusual inputs: each ends in features or in a recorded one-line reason."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from data_manifest.schema import VideoRecord, write_manifest
from pipeline.features.inspect import failures as list_failures
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import STATUS_EMPTY, STATUS_FAILED, STATUS_OK
from tests.media import corrupt_packets, make_video, truncate
from workflows.extraction import run_extraction
from workflows.tasks_extract import ProbedManifest


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def build_corpus(root: Path) -> dict[str, str]:
    """Write the corpus; returns {video_id: file name}."""
    v = root / "videos"
    v.mkdir(parents=True)
    good = make_video(v / "good.mp4", duration=2)
    files = {"good": "good.mp4"}
    (v / "zero.mp4").write_bytes(b"")
    files["zero_byte"] = "zero.mp4"
    (v / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    files["garbage"] = "garbage.mp4"
    fast = make_video(v / "fast.mp4", duration=3, extra_args=("-movflags", "+faststart"))
    truncate(fast, v / "truncated.mp4", 0.5)
    fast.unlink()
    files["truncated"] = "truncated.mp4"
    truncate(good, v / "no_moov.mp4", 0.6)  # moov atom is at the end: cut away
    files["moov_missing"] = "no_moov.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "aac", str(v / "audio_only.m4a"))
    files["audio_only"] = "audio_only.m4a"
    make_video(v / "silent.mp4", duration=2, audio=False)
    files["no_audio_track"] = "silent.mp4"
    make_video(v / "one_frame.mp4", duration=0.1, fps=10)
    files["one_frame"] = "one_frame.mp4"
    make_video(v / "huge.mp4", duration=0.3, fps=10, size=(3840, 2160), audio=False)
    files["huge_resolution"] = "huge.mp4"
    make_video(v / "vp9.webm", duration=2, codec="libvpx-vp9")
    files["vp9_webm"] = "vp9.webm"
    make_video(
        v / "vfr.mp4",
        duration=2,
        fps=10,
        extra_video_filters="setpts='if(lt(N,10),N*0.05,N*0.15)/TB'",
        extra_args=("-fps_mode", "vfr"),
    )
    files["vfr"] = "vfr.mp4"
    make_video(v / "rotated.mp4", duration=2, extra_args=("-metadata:s:v:0", "rotate=90"))
    files["rotated"] = "rotated.mp4"
    shutil.copy(good, v / "ünïcødé name with spaces.mp4")
    files["non_ascii_spaces"] = "ünïcødé name with spaces.mp4"
    shutil.copy(good, v / "vanishing.mp4")
    files["vanished_after_probe"] = "vanishing.mp4"
    files.update(build_glitches(v))
    return files


def build_glitches(v: Path) -> dict[str, str]:
    """Files ffmpeg decodes with warnings: corrupt packets mid-stream, a timestamp gap, audio ending early."""
    files = {}
    for vid, name, codec, audio in (
        ("audio_corrupt_mp3_avi", "mp3.avi", "mpeg4", "libmp3lame"),
        ("audio_corrupt_ac3_avi", "ac3.avi", "mpeg4", "ac3"),
        ("audio_corrupt_aac_mkv", "aac.mkv", "libx264", "aac"),
    ):
        clean = make_video(v / f"clean_{name}", codec=codec, audio_codec=audio)
        corrupt_packets(clean, v / name, "audio", count=1)
        clean.unlink()
        files[vid] = name
    for vid, name, codec in (
        ("video_corrupt_h264_mkv", "h264.mkv", "libx264"),
        ("video_corrupt_vp9_webm", "vp9_bad.webm", "libvpx-vp9"),
    ):
        clean = make_video(v / f"clean_{name}", fps=25, codec=codec)
        corrupt_packets(clean, v / name, "video", count=1, keep=8)
        clean.unlink()
        files[vid] = name
    first = make_video(v / "first.ts", duration=1, codec="mpeg2video", audio_codec="mp2")
    second = make_video(
        v / "second.ts",
        duration=1,
        codec="mpeg2video",
        audio_codec="mp2",
        extra_args=("-output_ts_offset", "3"),
    )
    (v / "gap.ts").write_bytes(first.read_bytes() + second.read_bytes())
    first.unlink()
    second.unlink()
    files["ts_timestamp_gap"] = "gap.ts"
    make_video(v / "short_audio.mov", audio_codec="pcm_s16le", audio_duration=1)
    files["audio_ends_early_mov_pcm"] = "short_audio.mov"
    return files


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus")
    files = build_corpus(root)
    manifest = root / "manifest.jsonl"
    write_manifest(
        manifest,
        [VideoRecord(vid, f"videos/{name}", [f"a {vid} clip"], "test") for vid, name in files.items()],
    )
    feats = root / "features"
    ProbedManifest(manifest=manifest, features_root=feats).run()
    (root / "videos" / "vanishing.mp4").unlink()
    run_extraction(
        manifest, ["rgb", "audio_stats"], feats, shard_size=4, expert_configs={"rgb": {"fps": 2.0}}
    )
    return feats, files


def _reader(feats: Path, expert: str) -> FeatureReader:
    (d,) = [p for p in (feats / expert).iterdir() if p.is_dir()]
    return FeatureReader(d)


EXPECT_RGB = {
    "good": STATUS_OK,
    "zero_byte": STATUS_FAILED,
    "garbage": STATUS_FAILED,
    "truncated": STATUS_FAILED,
    "moov_missing": STATUS_FAILED,
    "audio_only": STATUS_FAILED,
    "no_audio_track": STATUS_OK,
    "one_frame": STATUS_OK,
    "huge_resolution": STATUS_OK,
    "vp9_webm": STATUS_OK,
    "vfr": STATUS_OK,
    "rotated": STATUS_OK,
    "non_ascii_spaces": STATUS_OK,
    "vanished_after_probe": STATUS_FAILED,
}
# glitches ffmpeg decodes with warnings: (expert, expected start of the warning recorded with status ok)
EXPECT_WARNING = {
    "audio_corrupt_mp3_avi": ("audio_stats", "warning: audio: 1 undecodable packet(s) skipped"),
    "audio_corrupt_ac3_avi": ("audio_stats", "warning: audio: 1 undecodable packet(s) skipped"),
    "audio_corrupt_aac_mkv": ("audio_stats", "warning: audio: 1 undecodable packet(s) skipped"),
    "video_corrupt_h264_mkv": ("rgb", "warning: video: 1 undecodable packet(s) skipped"),
    "video_corrupt_vp9_webm": ("rgb", "warning: video: 1 undecodable packet(s) skipped"),
    "ts_timestamp_gap": ("audio_stats", "warning: audio: timestamp gap(s) of"),
    "audio_ends_early_mov_pcm": ("audio_stats", "warning: audio: ends 1.0"),
}
EXPECT_RGB.update(dict.fromkeys(EXPECT_WARNING, STATUS_OK))


@pytest.mark.parametrize("vid", sorted(EXPECT_RGB))
def test_every_input_ends_in_features_or_a_reason(corpus_run: tuple[Path, dict[str, str]], vid: str) -> None:
    feats, files = corpus_run
    rgb = _reader(feats, "rgb").get(vid)
    assert rgb.status == EXPECT_RGB[vid], rgb.error
    if rgb.status == STATUS_OK:
        assert len(rgb.features) >= 1 and (rgb.timestamps[:, 1] > rgb.timestamps[:, 0]).all()
    else:
        assert rgb.error and "\n" not in rgb.error and len(rgb.error) < 300
    audio = _reader(feats, "audio_stats").get(vid)
    if vid in ("no_audio_track", "huge_resolution"):
        assert audio.status == STATUS_EMPTY and "no audio" in audio.error
    if vid == "audio_only":
        assert audio.status == STATUS_OK


def test_failure_reasons_name_the_problem(corpus_run: tuple[Path, dict[str, str]]) -> None:
    feats, files = corpus_run
    rgb = _reader(feats, "rgb")
    assert "truncat" in rgb.get("truncated").error.lower()
    assert "vanishing.mp4" in rgb.get("vanished_after_probe").error
    assert rgb.get("rotated").features.shape[1] == 1280


@pytest.mark.parametrize("vid", sorted(EXPECT_WARNING))
def test_glitches_end_in_features_and_a_warning(corpus_run: tuple[Path, dict[str, str]], vid: str) -> None:
    feats, files = corpus_run
    path = feats.parent / "videos" / files[vid]
    assert subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"]).returncode == 0
    expert, warning = EXPECT_WARNING[vid]
    for name in ("rgb", "audio_stats"):
        got = _reader(feats, name).get(vid)
        assert got.status == STATUS_OK and len(got.features) >= 1, got.error
        assert got.error.startswith(warning) if name == expert else not got.error, got.error


def test_failures_command_lists_warned_videos(corpus_run: tuple[Path, dict[str, str]]) -> None:
    feats, _ = corpus_run
    warned = {(r["video_id"], r["expert"]) for r in list_failures(feats) if r["status"] == "ok"}
    assert warned == {(vid, expert) for vid, (expert, _) in EXPECT_WARNING.items()}
