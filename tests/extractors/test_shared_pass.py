"""Experts extracted together share one decoding per video and write exactly the shards each writes alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_manifest.schema import VideoRecord
from extractors.audio_frontend import AudioBlockPreparer
from extractors.engine import ShardJob, extract_shard, extract_shards
from extractors.experts.audio_stats import AudioStatsConfig, log_mel_window_stats
from extractors.registry import get_expert
from pipeline.features.shards import STATUS_EMPTY, read_shard, shard_attrs
from tests.media import make_video

NAMES = ["rgb", "s3d", "audio_stats"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shared")
    for i in range(3):
        make_video(d / f"v{i}.mp4", duration=1.5 + i, size=(64, 48), fps=10, audio=i != 1)
    return d


def _experts() -> list:
    experts = []
    for name in NAMES:
        expert = get_expert(name, get_expert(name).smoke_config)
        expert.load("cpu", random_init=True)
        experts.append(expert)
    return experts


def _records() -> list[VideoRecord]:
    return [VideoRecord(f"v{i}", f"v{i}.mp4", [], "train") for i in range(3)]


def _job(expert, out: Path) -> ShardJob:
    return ShardJob(expert, out, "f" * 12, "")


def test_together_equals_alone_and_decodes_once(media: Path, tmp_path: Path, av_opens: list[str]) -> None:
    opened = av_opens
    experts = _experts()
    jobs = [_job(e, tmp_path / "together" / f"{e.name}.h5") for e in experts]
    summaries = extract_shards(jobs, _records(), media, progress=False, workers=2)
    together_opens = len(opened)
    assert together_opens == 4 * 3  # probe, packet index, video, audio: per video, whatever the experts
    assert [s.videos for s in summaries] == [3, 3, 3]
    for expert in experts:
        opened.clear()
        extract_shard(
            expert,
            _records(),
            media,
            tmp_path / "alone" / f"{expert.name}.h5",
            fingerprint="f" * 12,
            weights_sha256="",
            progress=False,
        )
        assert len(opened) == (3 if expert.name != "audio_stats" else 1) * 3
        shared = read_shard(tmp_path / "together" / f"{expert.name}.h5")
        alone = read_shard(tmp_path / "alone" / f"{expert.name}.h5")
        assert shared.video_ids == alone.video_ids
        np.testing.assert_array_equal(shared.features, alone.features)
        np.testing.assert_array_equal(shared.timestamps, alone.timestamps)
        np.testing.assert_array_equal(shared.status, alone.status)
    stats = read_shard(tmp_path / "together" / "audio_stats.h5")
    assert stats.status.tolist()[1] == STATUS_EMPTY and stats.error[1] == "no audio track"
    attrs = shard_attrs(tmp_path / "together" / "rgb.h5")
    assert attrs["wall_s"] >= attrs["model_s"] > 0 and attrs["input_wait_s"] >= 0


def test_reused_videos_are_decoded_only_for_the_experts_that_need_them(media: Path, tmp_path: Path) -> None:
    experts = _experts()
    first = [_job(e, tmp_path / f"{e.name}.h5") for e in experts]
    extract_shards(first, _records(), media, progress=False)
    seen: list[tuple[str, str]] = []
    rgb = experts[0]
    original = rgb.preparer

    def watching(path: Path, record: VideoRecord):  # type: ignore[no-untyped-def]
        seen.append((rgb.name, record.video_id))
        return original(path, record)

    rgb.preparer = watching  # type: ignore[method-assign]
    again = [
        ShardJob(experts[0], tmp_path / "rgb2.h5", "f" * 12, "", previous=tmp_path / "rgb.h5"),
        _job(experts[2], tmp_path / "audio_stats2.h5"),
    ]
    extract_shards(again, _records(), media, progress=False)
    assert seen == []  # rgb's rows were all copied: only audio_stats decoded
    np.testing.assert_array_equal(
        read_shard(tmp_path / "rgb2.h5").features, read_shard(tmp_path / "rgb.h5").features
    )


def test_audio_stats_in_blocks_equals_the_whole_track() -> None:
    config = AudioStatsConfig()
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(16000 * 131 + 777)).astype(np.float32)
    rows, times = log_mel_window_stats(wave, config)
    expert = get_expert("audio_stats")
    preparer = expert.preparer(Path("synthetic.wav"), VideoRecord("x", "x.wav", [], "train"))
    assert isinstance(preparer, AudioBlockPreparer)
    parts = []
    for start in range(0, len(wave), 12345):
        parts += preparer.push(wave[start : start + 12345])
    parts += preparer.finish()
    assert len(parts) > 2
    np.testing.assert_allclose(np.concatenate([p.data for p in parts]), rows, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([p.timestamps for p in parts]), times)
