"""``ocr``: words read on frames sampled at 1 fps (RapidOCR, PP-OCRv4), one row per word shown, embedded as text.

Per video: frames at ``fps`` (long side capped at ``max_side`` px at decode time) -> RapidOCR text lines
(``extractors/ocr_engine.py``) -> lines with a recognition score below ``min_score`` dropped -> split into words,
normalised (``extractors/words.py``: punctuation stripped, case-folded, non-Latin noise dropped, words shorter than
``min_chars`` dropped) -> a word seen on neighbouring sampled frames (up to ``merge_gap_frames`` sampled frames
missed in between) becomes one row spanning ``[first frame start, last frame end)`` seconds -> row features = the
text model's embedding of the word (``dim`` = its hidden size, 384 for all-MiniLM-L6-v2), ``tokens`` = the words.
No word on any frame: status empty, "no text on screen".

A frame whose mean absolute difference to the previous sampled frame is at most ``reuse_diff`` (0-255 levels)
reuses that frame's reading instead of running OCR again (static titles, still shots).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from pydantic import model_validator

from extractors.base import ExpertConfig, ExpertOutput, Prepared, infra, resolve_device
from extractors.ocr_engine import OCR_DET, OCR_REC, OcrEngine, merge_repeats
from extractors.registry import register_expert
from extractors.weights import WeightsFile, require_weights
from extractors.words import MINILM, WordConfig, WordExpert, split_words
from pipeline.features.shards import STATUS_FAILED, STATUS_OK
from pipeline.media.decode import FrameBatch, FrameRequest, FrameSpec

NO_TEXT = "no text on screen"


class OCRConfig(WordConfig):
    """``fps`` sampled frames per second; ``max_side`` px cap on the decoded long side; frames with a short side
    below ``min_side`` px are upscaled for OCR; ``det_limit_side_len`` px cap on the detector input; ``box_thresh``
    detector box score; ``min_score`` minimum line recognition score; ``merge_gap_frames`` sampled frames a word
    may be missed on and still be merged; ``reuse_diff`` see module docstring. ``threads``: onnxruntime
    threads (1: on small frames more threads cost more CPU time than they save);
    ``part_rows``: frames per prepared part (bounds memory on long videos)."""

    min_chars: int = 2
    fps: float = 1.0
    max_side: int = 960
    min_side: int = 240
    det_limit_side_len: int = 960
    box_thresh: float = 0.5
    min_score: float = 0.8
    merge_gap_frames: int = 1
    reuse_diff: float = 1.0
    threads: int = infra(1)
    part_rows: int = infra(16)

    @model_validator(mode="after")
    def _check_ocr(self) -> Self:
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if min(self.max_side, self.min_side, self.det_limit_side_len) < 32:
            raise ValueError("max_side, min_side and det_limit_side_len must be >= 32 px")
        if not (0 <= self.min_score <= 1 and 0 <= self.box_thresh <= 1):
            raise ValueError("min_score and box_thresh must be in [0, 1]")
        if self.merge_gap_frames < 0 or self.reuse_diff < 0 or self.part_rows < 1:
            raise ValueError("merge_gap_frames and reuse_diff must be >= 0, part_rows >= 1")
        return self

    @property
    def merge_gap_s(self) -> float:
        """Largest gap (seconds) between two sightings of a word that still merges them into one row."""
        return self.merge_gap_frames / self.fps


@register_expert
class OCRExpert(WordExpert):
    """On-screen words (RapidOCR) embedded by the text model; one row per word shown, ``tokens`` = the words."""

    name: ClassVar[str] = "ocr"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "frames"
    Config: ClassVar[type[ExpertConfig]] = OCRConfig
    config: OCRConfig
    # the files of the default config, as ``t2v weights list`` shows them
    weights: ClassVar[tuple[WeightsFile, ...]] = (OCR_DET, OCR_REC, MINILM)

    def engine_weights(self) -> tuple[WeightsFile, ...]:
        return (OCR_DET, OCR_REC)

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        """Load RapidOCR and the text model (CPU). There is no random-init variant of the ONNX models: with
        ``random_init`` the shipped models are loaded all the same (they need no download)."""
        paths = require_weights(self, weights_dir)
        c = self.config
        self.device = resolve_device(device)
        self.engine = OcrEngine(
            paths[OCR_DET.filename],
            paths[OCR_REC.filename],
            det_limit_side_len=c.det_limit_side_len,
            min_side=c.min_side,
            threads=c.threads,
            box_thresh=c.box_thresh,
        )
        self.load_embedder(paths[self.text_file.filename])

    def media_request(self) -> FrameRequest:
        """Frames at ``fps`` with the long side at most ``max_side``, ``part_rows`` frames per part."""
        spec = FrameSpec("fps", fps=self.config.fps, max_side=self.config.max_side)
        return FrameRequest(spec, self.config.part_rows)

    def prepare_batch(self, batch: FrameBatch) -> Prepared:
        """uint8 (n,H,W,3) RGB frames with float32 (n,2) times."""
        return Prepared(batch.frames, batch.timestamps.astype(np.float32))

    def read_words(self, frames: np.ndarray) -> list[list[str]]:
        """Normalised words on each frame (reading order), reusing the previous reading for unchanged frames."""
        c = self.config
        out: list[list[str]] = []
        prev: np.ndarray | None = None
        for frame in frames:
            if prev is not None and prev.shape == frame.shape and _mean_abs_diff(prev, frame) <= c.reuse_diff:
                out.append(out[-1])
                continue
            lines = [line for line in self.engine.read(frame) if line.score >= c.min_score]
            out.append(
                [
                    w
                    for line in lines
                    for w in split_words(line.text, min_chars=c.min_chars, latin_only=c.latin_only)
                ]
            )
            prev = frame
        return out

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        outputs = []
        for item in items:
            words = self.read_words(item.data)
            frames = [(float(s), float(e), w) for (s, e), w in zip(item.timestamps, words, strict=True)]
            tracks = merge_repeats(frames, self.config.merge_gap_s)
            times = np.array([[t.start, t.end] for t in tracks], dtype=np.float32).reshape(-1, 2)
            outputs.append(self.words_output([t.word for t in tracks], times, NO_TEXT))
        return outputs

    def merge(self, parts: list[ExpertOutput]) -> ExpertOutput:
        """Parts of one long video: rows concatenated, and a word running across a part boundary joined."""
        if len(parts) == 1:
            return parts[0]
        failed = [p for p in parts if p.status == STATUS_FAILED]
        if failed:
            return ExpertOutput.failed(self.dim, failed[0].error, token_level=True)
        rows: list[list] = []  # [word, start, end, feature]
        last: dict[str, int] = {}
        for part in parts:
            if part.status != STATUS_OK:
                continue
            joined: set[int] = set()
            current: dict[str, int] = {}
            for word, (start, end), feat in zip(
                part.tokens or [], part.timestamps, part.features, strict=True
            ):
                j = last.get(word)
                if j is not None and j not in joined and start - rows[j][2] <= self.config.merge_gap_s + 1e-6:
                    rows[j][2] = max(rows[j][2], float(end))
                    joined.add(j)
                    current[word] = j
                else:
                    rows.append([word, float(start), float(end), feat])
                    current[word] = len(rows) - 1
            last = current
        if not rows:
            return ExpertOutput.empty(self.dim, NO_TEXT, token_level=True)
        rows.sort(key=lambda r: r[1])
        times = np.array([[r[1], r[2]] for r in rows], dtype=np.float32)
        return ExpertOutput(
            np.stack([r[3] for r in rows]).astype(np.float32), times, tokens=[r[0] for r in rows]
        )


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames in 0-255 levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
