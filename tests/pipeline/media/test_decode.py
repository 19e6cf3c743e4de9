"""Decoding and sampling on real generated media (decord and PyAV paths), audio loading and windows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.errors import ConfigError, MediaError, NoAudioError
from pipeline.media import decode
from pipeline.media import readers as video_readers
from pipeline.media.decode import FrameSpec, iter_clips, iter_frames, plan_clips, plan_frames, probe_video
from tests.media import make_video, truncate

W, H, FPS, DUR = 64, 48, 10, 2.0


def _truth(duration: float = DUR, fps: int = FPS) -> np.ndarray:
    """The testsrc2 frames as exact RGB, straight from ffmpeg's source."""
    src = f"testsrc2=size={W}x{H}:rate={fps}:duration={duration}"
    cmd = [
        "ffmpeg",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        src,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    out = {
        "lossless": make_video(
            d / "lossless.mkv",
            audio=False,
            codec="libx264rgb",
            extra_args=("-pix_fmt", "rgb24", "-qp", "0", "-g", "5"),
        ),
        "mp4": make_video(d / "clip.mp4"),
        "webm": make_video(d / "clip.webm", codec="libvpx-vp9"),
        "short": make_video(d / "short.mp4", duration=0.5, audio=False),
        "one_frame": make_video(d / "one.mp4", duration=0.1, audio=False),
        "bframes": make_video(
            d / "bframes.mp4",
            duration=3.0,
            audio=False,
            extra_args=("-preset", "medium", "-bf", "3", "-g", "12"),
        ),
        "long": make_video(
            d / "long.mp4", duration=10.0, fps=25, audio=False, extra_args=("-movflags", "+faststart")
        ),
    }
    vfr = d / "vfr.mp4"
    src = f"testsrc2=size={W}x{H}:rate={FPS}:duration={DUR}"
    setpts = "setpts='if(lt(N,10),N*0.1,1.0+(N-10)*0.3)/TB'"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, "-vf", setpts]
    cmd += [
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(vfr),
    ]
    subprocess.run(cmd, check=True)
    out["vfr"] = vfr
    rot = d / "rot90.mp4"
    base = make_video(d / "rot_src.mp4", audio=False)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(base), "-c", "copy"]
    subprocess.run([*cmd, "-metadata:s:v:0", "rotate=90", str(rot)], check=True)
    out["rot"] = rot
    shown = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(rot), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    out["rot_shown"] = np.frombuffer(shown, np.uint8).reshape(-1, W, H, 3)
    out["truncated"] = truncate(out["long"], d / "truncated.mp4", 0.5)
    out["zero"] = d / "zero.mp4"
    out["zero"].write_bytes(b"")
    out["garbage"] = d / "garbage.mp4"
    out["garbage"].write_bytes(b"not a video at all" * 100)
    return out


def _all(path: Path, spec: FrameSpec, batch: int = 7, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    batches = list(iter_frames(path, spec, batch=batch, backend=backend))
    assert all(len(b.frames) <= batch for b in batches)
    return np.concatenate([b.frames for b in batches]), np.concatenate([b.timestamps for b in batches])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_lossless_frames_are_exact(media: dict, backend: str) -> None:
    truth = _truth()
    frames, times = _all(media["lossless"], FrameSpec("all"), backend=backend)
    assert frames.dtype == np.uint8 and frames.shape == (20, H, W, 3)
    np.testing.assert_array_equal(frames, truth)
    np.testing.assert_allclose(times[:, 0], np.arange(20) / FPS, atol=1e-4)
    np.testing.assert_allclose(times[:, 1], np.arange(1, 21) / FPS, atol=1e-4)
    # sparse reads (seeking to keyframes, and backwards) give exactly the same frames
    spec = FrameSpec("uniform", num_frames=5)
    frames, _ = _all(media["lossless"], spec, batch=2, backend=backend)
    np.testing.assert_array_equal(frames, truth[[2, 6, 10, 14, 18]])
    clip_spec = FrameSpec("clips", clip_len=6, clip_stride_s=0.3)
    idx, _, _ = plan_clips(clip_spec, np.arange(20) / FPS, np.arange(1, 21) / FPS)
    clips = np.concatenate([b.clips for b in iter_clips(media["lossless"], clip_spec, backend=backend)])
    np.testing.assert_array_equal(clips, truth[idx])


def test_sparse_reads_match_dense_with_b_frames(media: dict) -> None:
    """Skipping unneeded non-reference frames and seeking never changes the frames that are returned."""
    dense, _ = _all(media["bframes"], FrameSpec("all"), backend="pyav")
    assert len(dense) == 30
    for spec in (FrameSpec("fps", fps=3), FrameSpec("uniform", num_frames=7)):
        starts = np.arange(30) / FPS
        idx, _ = plan_frames(spec, starts, starts + 1 / FPS)
        for backend in ("pyav", "decord"):
            frames, _ = _all(media["bframes"], spec, batch=3, backend=backend)
            np.testing.assert_array_equal(frames, dense[idx])


@pytest.mark.parametrize("short_side", [None, 30])
def test_pyav_conversion_matches_per_frame_to_ndarray(media: dict, short_side: int | None) -> None:
    """The reader's one reused swscale context gives exactly PyAV's per-frame ``to_ndarray`` pixels."""
    frames, _ = _all(media["bframes"], FrameSpec("all", short_side=short_side), backend="pyav")
    width, height = decode.output_size(W, H, short_side, None)
    with av.open(str(media["bframes"])) as container:
        expected = [
            f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(video=0)
        ]
    assert frames.shape == (30, height, width, 3)
    np.testing.assert_array_equal(frames, np.stack(expected))


def test_spec_rows_and_timestamps(media: dict) -> None:
    frames, times = _all(media["mp4"], FrameSpec("uniform", num_frames=4))
    assert frames.shape[0] == 4
    np.testing.assert_allclose(times, [[0, 0.5], [0.5, 1.0], [1.0, 1.5], [1.5, 2.0]], atol=1e-4)
    frames, times = _all(media["mp4"], FrameSpec("fps", fps=3))
    assert frames.shape[0] == 6
    np.testing.assert_allclose(times[:, 0], np.arange(6) / 3, atol=1e-4)
    np.testing.assert_allclose(times[-1, 1], 2.0, atol=1e-4)
    frames, times = _all(media["mp4"], FrameSpec("all", short_side=24))
    assert frames.shape == (20, 24, 32, 3)
    frames, _ = _all(media["mp4"], FrameSpec("fps", fps=1, max_side=32))
    assert frames.shape == (2, 24, 32, 3)
    batches = list(
        iter_clips(media["mp4"], FrameSpec("clips", clip_len=8, fps=5, clip_stride_s=1.0), batch=1)
    )
    assert [b.clips.shape for b in batches] == [(1, 8, H, W, 3)] * 2
    np.testing.assert_allclose(
        np.concatenate([b.timestamps for b in batches]), [[0, 1.6], [1.0, 2.0]], atol=1e-4
    )
    assert [int(b.valid[0]) for b in batches] == [8, 5]
    assert [bool(b.padded[0]) for b in batches] == [False, True]


def test_batches_shrink_for_huge_frames(media: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_BATCH_BYTES", W * H * 3 * 2)
    assert [len(b.frames) for b in iter_frames(media["mp4"], FrameSpec("fps", fps=2), batch=32)] == [2, 2]
    clip_spec = FrameSpec("clips", clip_len=2, fps=2)
    assert [len(b.clips) for b in iter_clips(media["mp4"], clip_spec, batch=4)] == [1, 1]


def test_plan_clips_back_to_back_without_tail() -> None:
    starts = np.arange(40) / 10
    idx, times, valid = plan_clips(FrameSpec("clips", clip_len=10), starts, starts + 0.1)
    assert idx.shape == (4, 10) and (valid == 10).all()
    np.testing.assert_array_equal(idx[1], np.arange(10, 20))
    idx, _ = plan_frames(FrameSpec("uniform", num_frames=50), starts, starts + 0.1)
    assert len(idx) == 50 and idx.max() < 40


def test_short_video_gives_one_padded_clip(media: dict) -> None:
    batches = list(iter_clips(media["short"], FrameSpec("clips", clip_len=16, fps=10)))
    assert len(batches) == 1
    b = batches[0]
    assert b.clips.shape == (1, 16, H, W, 3) and int(b.valid[0]) == 5 and bool(b.padded[0])
    np.testing.assert_array_equal(b.clips[0, 5:], np.repeat(b.clips[0, 4:5], 11, axis=0))
    np.testing.assert_allclose(b.timestamps, [[0.0, 0.5]], atol=1e-4)
    one = list(iter_clips(media["one_frame"], FrameSpec("clips", clip_len=4)))
    assert len(one) == 1 and int(one[0].valid[0]) == 1
    frames, _ = _all(media["one_frame"], FrameSpec("uniform", num_frames=3))
    assert frames.shape[0] == 3


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_vp9_webm(media: dict, backend: str) -> None:
    frames, times = _all(media["webm"], FrameSpec("all"), backend=backend)
    assert frames.shape == (20, H, W, 3)
    assert np.all(np.diff(times[:, 0]) > 0)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_vfr_uses_real_frame_times(media: dict, backend: str) -> None:
    _, times = _all(media["vfr"], FrameSpec("all"), backend=backend)
    assert len(times) == 20
    np.testing.assert_allclose(times[:10, 0], np.arange(10) / 10, atol=1e-3)
    assert times[11, 0] - times[10, 0] > 0.25  # second half runs at ~0.3 s per frame
    _, fps_times = _all(media["vfr"], FrameSpec("fps", fps=1), backend=backend)
    assert len(fps_times) == 4  # 3.7 s of video, not 2 s


def test_rotation_is_honoured(media: dict) -> None:
    info = probe_video(media["rot"])
    assert info.rotation == 90 and (info.width, info.height) == (H, W)
    frames, _ = _all(media["rot"], FrameSpec("all"))
    assert frames.shape == (20, W, H, 3)
    assert np.abs(frames.astype(int) - media["rot_shown"].astype(int)).mean() < 2
    small, _ = _all(media["rot"], FrameSpec("uniform", num_frames=2, short_side=24))
    assert small.shape == (2, 32, 24, 3)


@pytest.mark.parametrize("spec", [FrameSpec("all"), FrameSpec("uniform", num_frames=4)])
def test_truncated_file_is_detected(media: dict, spec: FrameSpec) -> None:
    with pytest.raises(MediaError, match=r"truncated\.mp4: truncated: decoded \d+ of 250 frames"):
        list(iter_frames(media["truncated"], spec))


@pytest.mark.parametrize("name", ["zero", "garbage"])
def test_broken_files_raise_media_error(media: dict, name: str) -> None:
    with pytest.raises(MediaError, match=str(media[name].name)):
        list(iter_frames(media[name], FrameSpec("uniform", num_frames=2)))


def test_missing_file_and_bad_spec(tmp_path: Path, media: dict) -> None:
    with pytest.raises(MediaError, match="nope.mp4: file not found"):
        list(iter_frames(tmp_path / "nope.mp4", FrameSpec("all")))
    with pytest.raises(ConfigError):
        FrameSpec("uniform")
    with pytest.raises(ConfigError):
        FrameSpec("sometimes")
    with pytest.raises(ConfigError):
        list(iter_frames(media["mp4"], FrameSpec("clips", clip_len=4)))
    with pytest.raises(ConfigError, match="backend"):
        list(iter_frames(media["mp4"], FrameSpec("all"), backend="opencv"))


def test_reader_failure_mid_stream_falls_back(media: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []
    real = decode.open_decord

    def flaky(path: Path, info: object, sizes: object, threads: int) -> object:
        reader = real(path, info, sizes, threads)
        opened.append(threads)
        calls = {"n": 0}
        inner = reader.read

        def read(indices: np.ndarray, need: np.ndarray) -> list[list[np.ndarray]]:
            calls["n"] += 1
            if threads == 0 and calls["n"] > 1:
                raise video_readers.DecodeFailure("Thread worker: Error sending packet")
            return inner(indices, need)

        reader.read = read
        return reader

    monkeypatch.setattr(decode, "open_decord", flaky)
    frames, _ = _all(media["lossless"], FrameSpec("all"), batch=4, backend="decord")
    assert opened == [0, 1]
    np.testing.assert_array_equal(frames, _truth())


def test_audio_loading(media: dict) -> None:
    for rate in (16000, 32000):
        wave = decode.load_audio(media["mp4"], rate)
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert abs(len(wave) / rate - DUR) < 0.1
        assert 0.05 < np.abs(wave).max() <= 1.0
    assert abs(len(decode.load_audio(media["webm"], 16000)) / 16000 - DUR) < 0.1
    with pytest.raises(NoAudioError, match="short.mp4: no audio track"):
        decode.load_audio(media["short"], 16000)
    with pytest.raises(MediaError, match="garbage.mp4"):
        decode.load_audio(media["garbage"], 16000)


def test_audio_windows() -> None:
    wave = np.arange(25, dtype=np.float32)
    windows, times = decode.audio_windows(wave, 10, 1.0, 0.5)
    assert windows.shape == (4, 10)
    np.testing.assert_allclose(times, [[0, 1], [0.5, 1.5], [1.0, 2.0], [1.5, 2.5]])
    np.testing.assert_array_equal(windows[3, :10], np.r_[np.arange(15, 25), np.zeros(0)])
    short, t = decode.audio_windows(wave[:3], 10, 1.0)
    assert short.shape == (1, 10) and short[0, 3:].sum() == 0
    np.testing.assert_allclose(t, [[0, 0.3]])
    empty, t = decode.audio_windows(np.zeros(0, np.float32), 10, 1.0)
    assert empty.shape == (0, 10) and t.shape == (0, 2)
