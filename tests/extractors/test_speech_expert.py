"""The ``speech`` expert: a golden ASR run with the real whisper tiny.en model on a phrase spoken by espeak-ng
(word error rate bound), empty statuses for tone-only, silent and audio-less clips, the pocketsphinx engine, the
automatic fallback, and config / fingerprint rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import pipeline  # noqa: F401  (torchvision CPU fix before anything imports transformers)
from data_manifest.schema import VideoRecord
from extractors.asr_engine import POCKETSPHINX_EN_US, SphinxASR, peak_rms_db, speech_present
from extractors.registry import get_expert
from extractors.weights import resolve_file
from extractors.words import MINILM
from pipeline.errors import ConfigError
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK
from pipeline.media.decode import load_audio
from tests.media import make_video
from tests.words import word_error_rate

PHRASE = "please open the window before dinner"
WER_BOUND = (
    0.34  # measured: 0.0 with whisper tiny.en on espeak-ng en-us at 150 wpm; 2 of 6 words may go wrong
)


def _record(path: Path) -> VideoRecord:
    return VideoRecord(video_id=path.stem, path=str(path), captions=[], split="test")


def _spoken_clip(path: Path, text: str) -> Path:
    """espeak-ng (en-us, 150 wpm) saying ``text`` muxed as AAC into a small H.264 clip."""
    wav = path.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "color=size=64x48:rate=10:d=4",
    ]
    cmd += [
        "-i",
        str(wav),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    return _spoken_clip(tmp_path_factory.mktemp("speech") / "phrase.mp4", PHRASE)


@pytest.fixture(scope="module")
def speech():
    expert = get_expert("speech")
    expert.load("cpu")
    return expert


# --- helpers and config (no models) ---------------------------------------------------------------------------


def test_word_error_rate():
    assert word_error_rate("a b c".split(), "a b c".split()) == 0.0
    assert word_error_rate("a b c".split(), "a x c d".split()) == pytest.approx(2 / 3)
    assert word_error_rate("a b c".split(), []) == 1.0


def test_levels_and_speech_check():
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert peak_rms_db(tone) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)
    assert peak_rms_db(np.zeros(16000, np.float32)) == float("-inf")
    assert not speech_present(np.zeros(16000, np.float32), -50.0, use_vad=False)
    assert speech_present(tone, -50.0, use_vad=False)
    assert not speech_present(tone, -50.0, use_vad=True)  # silero VAD: a pure tone is not speech


def test_config_engines_and_fingerprints():
    whisper = get_expert("speech")
    assert whisper.token_level and whisper.dim == 384 and whisper.input_kind == "speech"
    assert whisper.config_dict()["engine"] == "whisper"
    assert [w.filename for w in whisper.weights] == ["whisper-tiny.en/model.bin", MINILM.filename]
    sphinx = get_expert("speech", {"engine": "pocketsphinx"})
    assert "whisper_model" not in sphinx.config_dict() and len(sphinx.weights) == len(POCKETSPHINX_EN_US) + 1
    fallback = get_expert("speech", {"whisper_model": "no-such-whisper-folder"})
    assert fallback.config_dict()["engine"] == "pocketsphinx"
    assert fallback.fingerprint() == sphinx.fingerprint() != whisper.fingerprint()
    assert whisper.fingerprint() == get_expert("speech", {"threads": 1}).fingerprint()
    with pytest.raises(ConfigError, match="engine"):
        get_expert("speech", {"engine": "kaldi"})


def test_long_audio_is_prepared_in_parts(tmp_path):
    clip = make_video(tmp_path / "long.mp4", duration=65.0, size=(32, 24), fps=1, audio=True)
    expert = get_expert("speech", {"part_s": 30.0})
    parts = list(expert.iter_prepare(clip, _record(clip)))
    spans = np.concatenate([p.timestamps for p in parts])
    np.testing.assert_allclose(spans[:, 0], [0.0, 30.0, 60.0])
    np.testing.assert_allclose(spans[:2, 1], [30.0, 60.0])
    assert 64.9 < spans[2, 1] < 65.2
    assert [len(p.data) for p in parts[:2]] == [480000, 480000]
    assert not any(p.extra["speech"] for p in parts)  # a sine tone: no speech, the recogniser will not run


# --- golden runs with the real models -------------------------------------------------------------------------


def test_transcribes_espeak_phrase(speech, spoken):
    out = speech.extract(spoken, _record(spoken))
    assert out.status == STATUS_OK, out.error
    wer = word_error_rate(PHRASE.split(), out.tokens)
    assert wer <= WER_BOUND, (out.tokens, wer)
    assert out.features.shape == (len(out.tokens), 384)
    np.testing.assert_allclose(out.features, speech.embedder(out.tokens), atol=1e-5)
    starts, ends = out.timestamps[:, 0], out.timestamps[:, 1]
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert starts[0] >= 0 and ends[-1] <= 4.0
    spoken_s = len(load_audio(spoken, 16000)) / 16000
    assert ends[-1] <= spoken_s + 0.5
    again = speech.extract(spoken, _record(spoken))  # temperature 0 only: the same words every time
    assert again.tokens == out.tokens and np.array_equal(again.timestamps, out.timestamps)


def test_tone_only_is_empty(speech, tmp_path):
    clip = make_video(tmp_path / "tone.mp4", duration=2.0, audio=True)  # 440 Hz sine
    out = speech.extract(clip, _record(clip))
    assert (out.status, out.error, out.tokens) == (STATUS_EMPTY, "no speech", [])
    assert out.features.shape == (0, 384)


def test_silence_is_empty(speech, tmp_path):
    clip = tmp_path / "silent.mp4"
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "color=size=64x48:rate=10:d=2",
    ]
    cmd += [
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=mono",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        str(clip),
    ]
    subprocess.run(cmd, check=True)
    out = speech.extract(clip, _record(clip))
    assert (out.status, out.error) == (STATUS_EMPTY, "no speech")


def test_no_audio_track_is_empty(speech, tmp_path):
    clip = make_video(tmp_path / "mute.mp4", duration=1.0, audio=False)
    out = speech.extract(clip, _record(clip))
    assert (out.status, out.error, out.tokens) == (STATUS_EMPTY, "no audio track", [])


def test_pocketsphinx_engine_gives_timed_words(spoken):
    paths = {
        wf.package_path.removeprefix("model/en-us/"): resolve_file(wf, None) for wf in POCKETSPHINX_EN_US
    }
    asr = SphinxASR(paths["en-us/mdef"].parent, paths["en-us.lm.bin"], paths["cmudict-en-us.dict"])
    wave = load_audio(spoken, 16000)
    words = asr.transcribe(wave)
    assert words, "pocketsphinx recognised nothing"
    assert all(w.text and w.text[0] not in "<[" and "(" not in w.text for w in words)
    assert all(0 <= w.start < w.end <= len(wave) / 16000 + 0.05 for w in words)
