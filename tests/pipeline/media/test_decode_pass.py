"""One decoding pass for several requests gives each request exactly what it would get alone, opening the file a
constant number of times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.media import decode
from pipeline.media.audio import AudioRequest, iter_audio, iter_audio_rates
from pipeline.media.decode import (
    ClipBatch,
    FrameBatch,
    FrameRequest,
    FrameSpec,
    StreamFailed,
    decode_pass,
    iter_clips,
    iter_frames,
)
from tests.media import make_video

REQUESTS = [
    FrameRequest(FrameSpec("fps", fps=1.0, short_side=40), 2),
    FrameRequest(FrameSpec("clips", clip_len=4, fps=8.0, clip_stride_s=0.75, short_side=32), 3),
    FrameRequest(FrameSpec("uniform", num_frames=4, short_side=40), 16),
    FrameRequest(FrameSpec("all", max_side=24), 5),
    FrameRequest(FrameSpec("fps", fps=2.5, max_side=64), 4),
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("pass") / "v.mp4", duration=4.3, size=(96, 64), fps=12)


def _alone(path: Path, request: FrameRequest) -> list[FrameBatch | ClipBatch]:
    if request.spec.kind == "clips":
        return list(iter_clips(path, request.spec, batch=request.batch))
    return list(iter_frames(path, request.spec, batch=request.batch))


def _rows(batches: list) -> tuple[np.ndarray, np.ndarray]:
    data = [b.clips if isinstance(b, ClipBatch) else b.frames for b in batches]
    return np.concatenate(data), np.concatenate([b.timestamps for b in batches])


def test_each_request_gets_what_it_would_get_alone(clip: Path) -> None:
    got: dict[int, list] = {i: [] for i in range(len(REQUESTS))}
    for i, batch in decode.iter_frame_requests(clip, REQUESTS):
        assert len(batch.timestamps) <= REQUESTS[i].batch
        got[i].append(batch)
    for i, request in enumerate(REQUESTS):
        shared, alone = _rows(got[i]), _rows(_alone(clip, request))
        np.testing.assert_array_equal(shared[0], alone[0])  # bit-identical frames
        np.testing.assert_array_equal(shared[1], alone[1])


def test_audio_once_for_several_rates(clip: Path) -> None:
    chunks: dict[int, list[np.ndarray]] = {16000: [], 32000: []}
    for rate, chunk in iter_audio_rates(clip, [16000, 32000, 16000]):
        chunks[rate].append(chunk)
    for rate, parts in chunks.items():
        np.testing.assert_array_equal(np.concatenate(parts), np.concatenate(list(iter_audio(clip, rate))))


def test_file_opened_a_constant_number_of_times(clip: Path, av_opens: list[str]) -> None:
    opened = av_opens
    list(decode_pass(clip, [REQUESTS[0], AudioRequest(16000)]))
    few = len(opened)
    opened.clear()
    list(decode_pass(clip, [*REQUESTS, AudioRequest(16000), AudioRequest(32000), AudioRequest(16000)]))
    assert len(opened) == few == 4


def test_a_failing_stream_fails_only_its_requests(tmp_path: Path) -> None:
    silent = make_video(tmp_path / "silent.mp4", duration=1.0, audio=False)
    pieces = list(decode_pass(silent, [AudioRequest(16000), REQUESTS[0]]))
    failed = [p for p in pieces if isinstance(p, StreamFailed)]
    assert len(failed) == 1 and failed[0].requests == (0,) and "no audio track" in str(failed[0].error)
    assert sum(1 for p in pieces if not isinstance(p, StreamFailed) and p[0] == 1) >= 1
