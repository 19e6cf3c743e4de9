"""The OCR engine behind the ``ocr`` expert: RapidOCR (PP-OCRv4 detection + recognition, ONNX, CPU), and the
merging of a word seen on neighbouring sampled frames into one row.

RapidOCR's packaged defaults are tuned for documents: the detector input is resized so its *short* side is 736 px,
which for a 160x120 video frame means a 6x upscale and most of the time spent on empty pixels. Here the detector keeps the frame's size
and only caps the long side (``det_limit_side_len``, type "max"), the text-angle classifier is off (video titles are
upright), and frames whose short side is below ``min_side`` px are upscaled (bicubic) before detection so that the
recogniser gets crops of a usable height. The model files are the expert's weights (sha256-checked), read from the
weights folder when it holds a copy, else from the ``rapidocr-onnxruntime`` package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extractors.weights import WeightsFile

OCR_SOURCE = (
    "https://github.com/RapidAI/RapidOCR (PP-OCRv4 ONNX models, also in PyPI rapidocr-onnxruntime 1.4.4)"
)
OCR_DET = WeightsFile(
    filename="rapidocr/ch_PP-OCRv4_det_infer.onnx",
    sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    source=OCR_SOURCE,
    note="text detector (DB); ships in PyPI package rapidocr-onnxruntime",
    package="rapidocr_onnxruntime",
    package_path="models/ch_PP-OCRv4_det_infer.onnx",
)
OCR_REC = WeightsFile(
    filename="rapidocr/ch_PP-OCRv4_rec_infer.onnx",
    sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    source=OCR_SOURCE,
    note="text recogniser (CRNN/SVTR, Chinese + Latin); ships in PyPI package rapidocr-onnxruntime",
    package="rapidocr_onnxruntime",
    package_path="models/ch_PP-OCRv4_rec_infer.onnx",
)


@dataclass
class TextLine:
    """One recognised text line: ``text``, recognition ``score`` in [0, 1], ``box`` float32 (4,2) pixels (x, y)."""

    text: str
    score: float
    box: np.ndarray


class OcrEngine:
    """RapidOCR with video-friendly sizes. ``read(frame)`` -> text lines in reading order (top-down, left-right).

    ``det_limit_side_len``: the detector's input long side is capped at this many pixels (multiple of 32);
    ``min_side``: frames with a shorter short side are upscaled to it; ``threads``: onnxruntime intra-op threads;
    ``box_thresh``: detector box score threshold.
    """

    def __init__(
        self,
        det_path: Path,
        rec_path: Path,
        *,
        det_limit_side_len: int = 640,
        min_side: int = 240,
        threads: int = 2,
        box_thresh: float = 0.5,
    ) -> None:
        from rapidocr_onnxruntime import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self.min_side = min_side
        self._ocr = RapidOCR(
            det_model_path=str(det_path),
            rec_model_path=str(rec_path),
            det_limit_side_len=det_limit_side_len,
            det_limit_type="max",
            det_box_thresh=box_thresh,
            use_cls=False,
            text_score=0.0,
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
        )

    def scale_for(self, height: int, width: int) -> float:
        """Upscale factor applied before detection (1.0 when the short side is already >= ``min_side``)."""
        short = min(height, width)
        return 1.0 if short >= self.min_side or short == 0 else self.min_side / short

    def read(self, frame: np.ndarray) -> list[TextLine]:
        """Text lines of one uint8 (H,W,3) RGB frame; boxes in the frame's own pixel coordinates."""
        import cv2

        scale = self.scale_for(*frame.shape[:2])
        image = np.ascontiguousarray(frame[..., ::-1])  # RapidOCR expects BGR arrays
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        result, _ = self._ocr(image, use_cls=False)
        lines = []
        for box, text, score in result or []:
            lines.append(TextLine(str(text), float(score), np.asarray(box, dtype=np.float32) / scale))
        return lines


@dataclass
class WordTrack:
    """One row of the OCR output: ``word`` seen on consecutive sampled frames from ``start`` to ``end`` seconds."""

    word: str
    start: float
    end: float
    frames: int = 1


def merge_repeats(frames: list[tuple[float, float, list[str]]], max_gap_s: float) -> list[WordTrack]:
    """Merge a word seen on neighbouring frames into one row spanning ``[first start, last end)``.

    ``frames``: per sampled frame, in time order, ``(start, end, words)`` (seconds, the words read on it). A word
    continues an earlier row of the same word when that row ended at most ``max_gap_s`` seconds before this frame
    starts (so a word missed on one frame in between is still merged when ``max_gap_s`` >= the sampling interval).
    A word shown k times on one frame continues (or opens) k rows. Rows come out ordered by start time, then by
    reading order on the frame where they first appeared.
    """
    tracks: list[WordTrack] = []
    by_word: dict[str, list[WordTrack]] = {}
    for start, end, words in frames:
        for word in words:
            # a row is live when it ended before this frame (not yet extended by it) and recently enough
            live = [
                t
                for t in by_word.get(word, [])
                if t.end <= start + 1e-6 and start - t.end <= max_gap_s + 1e-6
            ]
            if live:
                live[0].end = max(live[0].end, end)
                live[0].frames += 1
            else:
                track = WordTrack(word, start, end)
                tracks.append(track)
                by_word.setdefault(word, []).append(track)
    return sorted(tracks, key=lambda t: t.start)
