"""Probing: good, truncated (moov at end / faststart), audio-less, rotated, zero-byte and missing files;
unchanged files are skipped; the CLI writes the manifest back and prints a summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

import data_manifest.probe as probe_module
from data_manifest.errors import ManifestError
from data_manifest.hashing import sha256_file
from data_manifest.probe import (
    content_hash,
    journal_path,
    probe_file,
    probe_manifest,
    probe_manifest_summary,
    read_probed_copy,
)
from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from tests.media import make_video, truncate


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe_media")
    files = {
        "good": make_video(d / "good.mp4", duration=2.0, fps=10),
        "noaudio": make_video(d / "noaudio.mp4", duration=1.0, fps=10, audio=False),
    }
    full_moov_end = make_video(d / "moov_end_full.mp4", duration=4.0, fps=10)
    files["moov_end"] = truncate(full_moov_end, d / "moov_end.mp4", 0.5)
    full_fast = make_video(d / "fast_full.mp4", duration=4.0, fps=10, extra_args=("-movflags", "+faststart"))
    files["faststart"] = truncate(full_fast, d / "faststart.mp4", 0.5)
    files["zero"] = d / "zero.mp4"
    files["zero"].write_bytes(b"")
    files["text"] = d / "notes.mp4"
    files["text"].write_text("not a video at all\n")
    files["missing"] = d / "missing.mp4"
    files["rotated"] = _rotated_video(d / "rotated.mp4")
    return files


def _rotated_video(path: Path) -> Path:
    """A 64x48 H.264 clip whose display matrix says: rotate by 90 degrees (shown as 48x64)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_good_file(media: dict[str, Path]) -> None:
    info = probe_file(media["good"])
    assert info["probe_error"] is None
    assert info["duration"] == pytest.approx(2.0, abs=0.05)
    assert info["fps"] == 10 and info["num_frames"] == 20
    assert (info["width"], info["height"]) == (64, 48)
    assert info["has_audio"] is True and info["codec"] == "h264"
    assert info["content_hash"] == content_hash(media["good"]) and len(info["content_hash"]) == 16
    st = media["good"].stat()
    assert info["file_size"] == st.st_size and info["file_mtime"] == st.st_mtime


def test_audio_less_and_rotated(media: dict[str, Path]) -> None:
    info = probe_file(media["noaudio"])
    assert info["probe_error"] is None and info["has_audio"] is False and info["num_frames"] == 10
    rotated = probe_file(media["rotated"])
    assert rotated["probe_error"] is None and (rotated["width"], rotated["height"]) == (48, 64)


def test_truncated_moov_at_end_is_unreadable(media: dict[str, Path]) -> None:
    info = probe_file(media["moov_end"])
    assert info["probe_error"].startswith("unreadable: Invalid data found when processing input")
    assert info["content_hash"] is not None and info["duration"] is None


def test_truncated_faststart_counts_present_frames(media: dict[str, Path]) -> None:
    info = probe_file(media["faststart"])
    present = info["num_frames"]
    assert 5 < present < 40
    assert info["probe_error"] == f"truncated: {present} of 40 frames present"
    assert info["duration"] == pytest.approx(present / 10, abs=0.15)


@pytest.mark.parametrize(
    ("name", "error"),
    [("zero", "empty file (0 bytes)"), ("missing", "missing: file not found"), ("text", "unreadable: ")],
)
def test_bad_files_never_raise(media: dict[str, Path], name: str, error: str) -> None:
    assert probe_file(media[name])["probe_error"].startswith(error)


def _manifest(tmp_path: Path, media: dict[str, Path]) -> Path:
    records = [
        VideoRecord(name, str(path), [f"clip {name}"], "train") for name, path in sorted(media.items())
    ]
    write_manifest(tmp_path / "manifest.jsonl", records)
    return tmp_path / "manifest.jsonl"


def test_probe_manifest_parallel_then_skips_unchanged(tmp_path: Path, media: dict[str, Path]) -> None:
    path = _manifest(tmp_path, media)
    records = {r.video_id: r for r in probe_manifest(path, workers=2)}
    written = {r.video_id: r for r in load_manifest(path, check_paths=False)}
    assert written == records
    assert written["good"].num_frames == 20 and written["good"].probe_error is None
    assert written["faststart"].probe_error.startswith("truncated:")
    assert written["missing"].probe_error == "missing: file not found"
    assert sum(r.probe_error is None for r in written.values()) == 3  # good, noaudio, rotated

    # A second run probes nothing: every existing file is unchanged. A touched file is probed again.
    copy = tmp_path / "good_copy.mp4"
    copy.write_bytes(media["good"].read_bytes())
    lines = path.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "path": str(copy)})
    path.write_text("\n".join(lines) + "\n")
    _, summary = probe_manifest_summary(path, workers=1, progress=False)
    assert (summary.probed, summary.skipped) == (2, len(media) - 2)  # the new path + the missing file
    os.utime(copy, (1_000_000_000, 1_000_000_000))
    _, summary = probe_manifest_summary(path, workers=1, progress=False)
    assert (summary.probed, summary.ok, summary.failed) == (2, 1, 1)


def test_cli_probe_to_out(tmp_path: Path, media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from workflows.cli import main

    path = _manifest(tmp_path, {"good": media["good"], "zero": media["zero"]})
    out = tmp_path / "sub" / "probed.jsonl"
    assert main(["manifest", "probe", str(path), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    summary = capsys.readouterr().out
    assert "probed 2 videos: 1 ok, 1 failed; 0 unchanged skipped" in summary
    probed = {r.video_id: r for r in load_manifest(out)}
    assert probed["good"].duration == pytest.approx(2.0, abs=0.05)
    assert probed["zero"].probe_error == "empty file (0 bytes)"
    assert load_manifest(path)[0].duration is None  # the input is left alone


def _crashing_probe(path: str, full_hash: bool = False) -> dict:
    """Stands in for a demuxer that dies natively on one file (worker processes are forked, so this is used)."""
    if "crash" in path:
        os._exit(3)
    return probe_file(path, full_hash)


def test_worker_crash_marks_only_its_file(
    tmp_path: Path, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = tmp_path / "crash.mp4"
    crash.write_bytes(media["good"].read_bytes())
    monkeypatch.setattr(probe_module, "probe_file", _crashing_probe)
    path = _manifest(tmp_path, {"crash": crash, "good": media["good"], "noaudio": media["noaudio"]})
    records = {r.video_id: r for r in probe_manifest(path, workers=2)}
    assert records["crash"].probe_error == "probe crashed: the demuxer killed its worker process"
    assert records["good"].probe_error is None and records["noaudio"].probe_error is None


def test_partial_hash_reads_the_ends_of_large_files(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1000))
    assert content_hash(small) == sha256_file(small)[:16]  # small files: whole-file hash, as before
    big = tmp_path / "big.bin"
    data = bytearray(os.urandom(3 << 20))
    big.write_bytes(data)
    partial, full = content_hash(big), content_hash(big, full=True)
    assert partial != full and full == sha256_file(big)[:16]
    data[len(data) // 2] ^= 0xFF  # an edit in the middle: only the full hash sees it
    big.write_bytes(data)
    assert content_hash(big) == partial and content_hash(big, full=True) != full
    data[-1] ^= 0xFF
    big.write_bytes(data)
    assert content_hash(big) != partial
    big.write_bytes(data + b"x")
    assert len({content_hash(big), partial}) == 2


def test_interrupted_probe_resumes_from_its_journal(
    tmp_path: Path, media: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    present = {k: v for k, v in media.items() if k != "missing"}  # a missing file is always probed again
    path = _manifest(tmp_path, present)
    want = {r.video_id: r for r in probe_manifest(path, workers=1, out=tmp_path / "ref.jsonl")}
    probed: list[str] = []

    def interrupted(file: str, full_hash: bool = False) -> dict:
        if len(probed) == 3:
            raise KeyboardInterrupt
        probed.append(file)
        return probe_file(file, full_hash)

    monkeypatch.setattr(probe_module, "probe_file", interrupted)
    out = tmp_path / "probed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        probe_manifest_summary(path, workers=1, out=out, progress=False)
    assert len(journal_path(out).read_text().splitlines()) == 3 and not out.exists()

    probed.clear()
    monkeypatch.setattr(
        probe_module, "probe_file", lambda f, full_hash=False: probed.append(f) or probe_file(f)
    )
    _, summary = probe_manifest_summary(path, workers=1, out=out, progress=False)
    assert len(probed) == len(present) - 3  # only what the interrupted run had not reached
    assert summary.probed == len(present) and not journal_path(out).exists()
    assert {r.video_id: r for r in load_manifest(out, check_paths=False)} == want


def test_probed_copy_reads_back_without_revalidation(tmp_path: Path, media: dict[str, Path]) -> None:
    out = tmp_path / "probed.jsonl"
    records = probe_manifest(_manifest(tmp_path, media), workers=1, out=out)
    assert read_probed_copy(out) == records
    out.write_text(out.read_text() + "{truncated\n")
    with pytest.raises(ManifestError, match=rf"probed.jsonl:{len(records) + 1}: not a probed record"):
        read_probed_copy(out)
