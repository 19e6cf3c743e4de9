"""extract_shard: order, statuses, cross-video batching, bounded prefetch, parts, retries, atomicity; audio_stats."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from data_manifest.schema import VideoRecord
from extractors.base import ExpertOutput, FrameConfig, FrameExpert, PerBatch, Prepared
from extractors.engine import extract_shard
from extractors.experts.audio_stats import AudioStatsConfig, log_mel_window_stats
from extractors.registry import get_expert
from pipeline.errors import ShardError
from pipeline.features.shards import STATUS_EMPTY, STATUS_FAILED, STATUS_OK, read_shard
from pipeline.media.decode import FrameBatch
from tests.media import make_video, truncate


class MeanColour(FrameExpert):
    """A cheap real frame expert: mean R, G, B of each 16x16 frame (not registered: tests only)."""

    name: ClassVar[str] = "mean_colour"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 3

    def __init__(self, config: dict | None = None, boom: str = "") -> None:
        super().__init__({"image_size": 16, "resize": 16, "fps": 2.0, **(config or {})})
        self.boom = boom
        self.calls: list[list[int]] = []
        self.started: list[str] = []
        self.lock = threading.Lock()

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        self.device = "cpu"

    def preparer(self, path: Path, record: VideoRecord) -> PerBatch:
        with self.lock:
            self.started.append(record.video_id)

        def tagged(batch: FrameBatch) -> Prepared:
            part = self.prepare_batch(batch)
            part.extra["video_id"] = record.video_id
            return part

        return PerBatch(tagged)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        self.calls.append([it.rows for it in items])
        if self.boom and any(it.extra.get("video_id") == self.boom for it in items):
            raise RuntimeError("kernel exploded\nsecond line")
        return super().forward(items)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("engine_media")
    for i in range(6):
        make_video(d / f"v{i}.mp4", duration=1.0 + 0.5 * i, size=(32, 24), fps=8, audio=i % 2 == 0)
    (d / "zero.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(b"this is not a video at all" * 40)
    truncate(d / "v5.mp4", d / "truncated.mp4", 0.3)
    return d


def _records(names: list[str]) -> list[VideoRecord]:
    return [VideoRecord(n, f"{n}.mp4", [], "train") for n in names]


GOOD = [f"v{i}" for i in range(6)]


def _run(expert, names, media, out, **kw):
    return extract_shard(
        expert, _records(names), media, out, fingerprint="f" * 12, weights_sha256="", progress=False, **kw
    )


def test_shard_order_rows_and_bad_media(media: Path, tmp_path: Path) -> None:
    names = ["v0", "zero", "v1", "garbage", "v2", "missing", "truncated", "v3"]
    summary = _run(MeanColour(), names, media, tmp_path / "s.h5", device="auto")
    data = read_shard(tmp_path / "s.h5")
    assert data.video_ids == names
    by_id = dict(zip(data.video_ids, data.status.tolist(), strict=True))
    errors = dict(zip(data.video_ids, data.error, strict=True))
    for bad in ("zero", "garbage", "missing"):
        assert by_id[bad] == STATUS_FAILED
        assert f"{bad}.mp4" in errors[bad] and "\n" not in errors[bad]
    assert by_id["truncated"] in (
        STATUS_OK,
        STATUS_FAILED,
    )  # truncation is decode's call; never crashes the shard
    for i, n in enumerate(["v0", "v1", "v2", "v3"]):
        rows = data.rows(names.index(n))
        assert by_id[n] == STATUS_OK and errors[n] == ""
        assert rows.stop - rows.start == 2 + i  # 2 fps x (1.0 + 0.5 i) s
        times = data.timestamps[rows]
        assert np.allclose(times[:, 0], np.arange(len(times)) * 0.5) and (times[:, 1] > times[:, 0]).all()
    assert summary.ok + summary.failed + summary.empty == len(names)
    assert summary.rows == len(data.features)
    assert data.attrs["expert"] == "mean_colour" and data.attrs["fingerprint"] == "f" * 12


def test_batches_span_videos_and_match_single_video_results(media: Path, tmp_path: Path) -> None:
    batched = MeanColour({"batch_size": 16})
    _run(batched, GOOD, media, tmp_path / "a.h5")
    assert any(len(call) > 1 for call in batched.calls)  # one forward saw several videos
    single = MeanColour({"batch_size": 1, "part_rows": 1})
    _run(single, GOOD, media, tmp_path / "b.h5")
    assert all(len(call) == 1 and call[0] == 1 for call in single.calls)
    a, b = read_shard(tmp_path / "a.h5"), read_shard(tmp_path / "b.h5")
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_prefetch_is_bounded(media: Path, tmp_path: Path) -> None:
    names = GOOD * 1
    expert = MeanColour({"batch_size": 1, "part_rows": 1000})
    seen: list[int] = []
    forward = expert.forward

    def counting_forward(items: list[Prepared]) -> list[ExpertOutput]:
        with expert.lock:
            seen.append(len(expert.started) - names.index(items[0].extra["video_id"]))
        return forward(items)

    expert.forward = counting_forward  # type: ignore[method-assign]
    _run(expert, names, media, tmp_path / "s.h5", workers=1)
    assert max(seen) <= 1 + 2 + 1  # workers + 2 videos ahead of the one being run, plus itself


def test_model_error_fails_only_that_video(media: Path, tmp_path: Path) -> None:
    summary = _run(MeanColour({"batch_size": 64}, boom="v2"), GOOD, media, tmp_path / "s.h5")
    data = read_shard(tmp_path / "s.h5")
    assert data.status.tolist() == [0, 0, 2, 0, 0, 0]
    assert data.error[2] == "model failed: kernel exploded second line"
    assert summary.failed == 1 and summary.ok == 5


def test_previous_and_retry_failed(media: Path, tmp_path: Path) -> None:
    work = tmp_path / "media"
    work.mkdir()
    for n in ("v0", "v1"):
        (work / f"{n}.mp4").write_bytes((media / f"{n}.mp4").read_bytes())
    out = tmp_path / "s.h5"
    _run(MeanColour(), ["v0", "v1", "late"], work, out)
    assert read_shard(out).status.tolist() == [0, 0, 2]
    (work / "late.mp4").write_bytes((media / "v2.mp4").read_bytes())
    again = MeanColour()
    summary = _run(again, ["v0", "v1", "late"], work, out, previous=out)
    assert summary.reused == 3 and again.started == [] and read_shard(out).status.tolist() == [0, 0, 2]
    first = read_shard(out)
    retry = MeanColour()
    summary = _run(retry, ["v0", "v1", "late"], work, out, previous=out, retry_failed=True)
    assert retry.started == ["late"] and summary.reused == 2
    data = read_shard(out)
    assert data.status.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(data.features[: first.offsets[2]], first.features)
    with pytest.raises(ShardError, match="fingerprint"):
        extract_shard(
            MeanColour(),
            _records(["v0"]),
            work,
            tmp_path / "x.h5",
            fingerprint="0" * 12,
            weights_sha256="",
            progress=False,
            previous=out,
        )


def test_bug_in_prepare_propagates_and_leaves_no_file(media: Path, tmp_path: Path) -> None:
    class Buggy(MeanColour):
        def preparer(self, path: Path, record: VideoRecord) -> PerBatch:
            if record.video_id == "v1":
                raise KeyError("a bug, not bad media")
            return super().preparer(path, record)

    with pytest.raises(KeyError, match="a bug"):
        _run(Buggy({"part_rows": 1000}), GOOD, media, tmp_path / "s.h5")
    assert list(tmp_path.iterdir()) == []


def test_frame_config_validation() -> None:
    with pytest.raises(Exception, match="resize"):
        FrameConfig(image_size=224, resize=100)


def test_audio_stats_statuses_and_shapes(media: Path, tmp_path: Path) -> None:
    expert = get_expert("audio_stats")
    _run(expert, ["v0", "v1", "v4", "zero"], media, tmp_path / "a.h5", weights_dir=tmp_path)
    data = read_shard(tmp_path / "a.h5")
    assert data.status.tolist() == [STATUS_OK, STATUS_EMPTY, STATUS_OK, STATUS_FAILED]
    assert data.error[1] == "no audio track"
    assert data.features.shape[1] == 128
    rows = data.rows(2)  # 3 s of audio -> windows of 0.96 s: 3 full + 1 tail
    assert rows.stop - rows.start == 4
    np.testing.assert_allclose(data.timestamps[rows][:3, 0], [0.0, 0.96, 1.92], atol=1e-6)


def test_audio_stats_sine_peaks_in_its_mel_band() -> None:
    config = AudioStatsConfig()
    t = np.arange(16000 * 2) / 16000
    rows, times = log_mel_window_stats((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), config)
    assert rows.shape == (3, 128) and rows.dtype == np.float32 and times.shape == (3, 2)
    means = rows[0, :64]
    centres = np.linspace(1127 * np.log1p(125 / 700), 1127 * np.log1p(7500 / 700), 66)[1:-1]
    centre_hz = 700 * (np.exp(centres / 1127) - 1)
    assert abs(centre_hz[int(np.argmax(means))] - 1000) < 60
    assert rows[0, 64:].max() < 0.5  # a steady tone barely varies within a window
    quiet, _ = log_mel_window_stats(np.zeros(100, np.float32), config)
    assert quiet.shape == (1, 128) and np.isfinite(quiet).all()


def test_ok_without_rows_is_recorded_as_empty(media: Path, tmp_path: Path) -> None:
    class Silent(MeanColour):
        def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
            return [ExpertOutput(np.zeros((0, 3), np.float32), np.zeros((0, 2), np.float32)) for _ in items]

    summary = _run(Silent(), ["v0"], media, tmp_path / "s.h5")
    data = read_shard(tmp_path / "s.h5")
    assert (summary.empty, data.status.tolist(), data.error) == (
        1,
        [STATUS_EMPTY],
        ["expert produced no rows"],
    )
