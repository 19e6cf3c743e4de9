"""Tolerant decoding: undecodable packets are skipped and counted, audio keeps its timeline, too much loss fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import MediaError
from pipeline.media.audio import load_audio
from pipeline.media.decode import FrameSpec, iter_frames
from pipeline.media.glitches import LOSS_TOLERANCE, recording, track
from tests.media import corrupt_packets, make_video

SR = 16000


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("glitches")
    return {
        "ac3": make_video(root / "ac3.mkv", codec="libx264", audio_codec="ac3"),
        "h264": make_video(root / "h264.mkv", fps=25, codec="libx264"),
        "short_audio": make_video(root / "short.mov", audio_codec="pcm_s16le", audio_duration=1),
    }


def test_lost_audio_packet_becomes_silence_of_its_length(clips: dict[str, Path], tmp_path: Path) -> None:
    clean = load_audio(clips["ac3"], SR)
    bad_path = corrupt_packets(clips["ac3"], tmp_path / "bad.mkv", "audio", count=1)
    with recording() as glitches:
        bad = load_audio(bad_path, SR)
    ((loss,),) = [p.packets.values() for p in glitches.stream("audio")]
    assert len(bad) == len(clean)
    silent = np.flatnonzero(bad != clean)
    assert bad[silent[0] : silent[0] + int(0.9 * loss * SR)].max() == 0.0
    tail = slice(-SR // 4, None)
    np.testing.assert_allclose(bad[tail], clean[tail], atol=1e-4)
    assert glitches.warning().startswith("warning: audio: 1 undecodable packet(s) skipped")
    assert not glitches.stream("video")


@pytest.mark.parametrize("stream", ["audio", "video"])
def test_losing_more_than_the_tolerance_fails(clips: dict[str, Path], tmp_path: Path, stream: str) -> None:
    src = clips["ac3"] if stream == "audio" else clips["h264"]
    bad = corrupt_packets(src, tmp_path / "bad.mkv", stream, count=8, keep=0 if stream == "audio" else 8)
    with pytest.raises(MediaError, match=f"bad.mkv: {stream}: .* undecodable packet.*more than 5%"):
        if stream == "audio":
            load_audio(bad, SR)
        else:
            list(iter_frames(bad, FrameSpec("all")))


def test_lost_video_packet_keeps_the_frame_times(clips: dict[str, Path], tmp_path: Path) -> None:
    bad = corrupt_packets(clips["h264"], tmp_path / "bad.mkv", "video", count=1, keep=8)
    spec = FrameSpec("fps", fps=5)
    with recording() as glitches:
        got = np.concatenate([b.timestamps for b in iter_frames(bad, spec)])
    want = np.concatenate([b.timestamps for b in iter_frames(clips["h264"], spec)])
    np.testing.assert_array_equal(got, want)
    assert glitches.warning().startswith("warning: video: 1 undecodable packet(s) skipped")


def test_audio_ending_early_is_a_warning(clips: dict[str, Path]) -> None:
    with recording() as glitches:
        wave = load_audio(clips["short_audio"], SR)
    assert abs(len(wave) - SR) < SR // 50
    assert glitches.warning() == "warning: audio: ends 1.000 s before the file"


def test_a_packet_counts_once_and_the_limit_is_a_share_of_the_duration() -> None:
    with recording() as glitches:
        first, again = track("audio"), track("audio")
        for loss in (first, first, again):
            loss.lost_packet(Path("x.mp4"), 7, 0.04, 10.0, "bad")
        first.lost_packet(Path("x.mp4"), 8, LOSS_TOLERANCE * 10.0 - 0.05, 10.0, "bad")
        with pytest.raises(MediaError, match="x.mp4: audio: 3 undecodable .*; last: bad frame$"):
            first.lost_packet(Path("x.mp4"), 9, 0.02, 10.0, "bad\nframe")
    assert glitches.warning() == "warning: audio: 3 undecodable packet(s) skipped (0.510 s)"
    track("video").lost_packet(Path("x.mp4"), 1, 5.0, None, "unknown duration: never fails")
