"""The contract every expert follows: typed config, weights, CPU-side ``prepare`` and batched ``forward``.

An expert is a class with these class attributes:

- ``name`` (registry key and feature folder), ``version`` (bump it to invalidate old features on purpose),
- ``input_kind``: "frames", "clips", "audio" or "speech",
- ``dim``: features per row, ``token_level``: rows are tokens (OCR / speech words, patches) with ``tokens`` text,
- ``weights``: the ``WeightsFile`` entries it needs (empty for weight-free experts),
- ``Config``: a frozen ``ExpertConfig`` subclass (a ``pipeline.config.Config``) with its options. The sampling spec
  (fps, clip length, sample rate) and the preprocessing that travels with the weights (input size, mean, std) live
  there, like timm's ``PretrainedCfg``. Fields declared with ``infra(...)`` (batch size) do not change features and
  stay out of the fingerprint. ``smoke_config``: overrides for a cheap run of the same architecture (smaller input),
  used by the registry-wide contract test.

Life cycle: ``load(device, weights_dir)`` once (``random_init=True`` for tests: same architecture, no files; the
base class sets ``self.loaded`` after any subclass's ``load`` returns), then per video, on decode threads (CPU only,
thread-safe): the expert never decodes itself. It declares what it reads (``media_request()``: frames at its
sampling and size, or audio at its rate) and a per-video ``preparer`` that receives the decoded batches in time
order and returns prepared parts (by default ``prepare_batch`` per batch); one decoding pass feeds every expert
extracted together (``extractors.shared_pass``). Then ``forward(items)`` on the main thread with prepared items of
several videos. A long video gives several parts, so memory stays bounded; the engine merges the parts' outputs
with ``merge``. ``iter_prepare`` / ``prepare`` run the expert alone over one video (tests, one-off use).
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator

from data_manifest.schema import VideoRecord
from extractors.weights import WeightsFile, weights_sha256
from pipeline.config import Config, FloatTriple
from pipeline.errors import ConfigError, MediaError, NoAudioError
from pipeline.features.fingerprint import fingerprint as _fingerprint
from pipeline.features.shards import STATUS_EMPTY, STATUS_FAILED, STATUS_OK
from pipeline.media.decode import FrameBatch, FrameRequest, FrameSpec, MediaRequest
from pipeline.media.glitches import recording

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=torch.nn.Module)

INPUT_KINDS = ("frames", "clips", "audio", "speech")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_AUDIO = "no audio track"


def infra(default: Any) -> Any:
    """A config field that does not change the features (e.g. batch size): left out of ``config_dict()``."""
    return Field(default, exclude=True)


class ExpertConfig(Config):
    """Options shared by all experts (frozen). ``batch_size``: rows (frames, clips, windows) per model call."""

    model_config = ConfigDict(frozen=True)

    batch_size: int = infra(16)


PRECISIONS = ("float32", "float16", "bfloat16")


class TorchConfig(ExpertConfig):
    """Options of experts whose model is a torch CNN/ViT. ``precision``: "float32", or "float16" / "bfloat16" to
    run the model under CUDA autocast (CUDA only: a ConfigError on CPU). It changes the features, so it is part of
    the fingerprint, except at its default "float32" (features from before the option keep their folder)."""

    precision: str = "float32"

    @model_validator(mode="after")
    def _check_precision(self) -> Self:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        return self


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    """A host array as a tensor on ``device``: on CUDA through pinned memory with a non-blocking copy (the copy
    overlaps the work already queued on the GPU), on CPU the array itself."""
    x = torch.from_numpy(np.ascontiguousarray(array))
    if str(device).startswith("cuda"):
        return x.pin_memory().to(device, non_blocking=True)
    return x


@dataclass
class Prepared:
    """Decoded, preprocessed input of one video (or one part of it), ready for ``forward``.

    ``data``: expert-specific arrays (e.g. uint8 (R,3,S,S) frames, float32 waveform); ``timestamps``: float32 (R,2)
    [start, end) seconds of the rows the expert will output (token-level experts may output other rows).
    """

    data: Any
    timestamps: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(len(self.timestamps))


@dataclass
class ExpertOutput:
    """Features of one video: ``features`` float32 (R, dim), ``timestamps`` float32 (R, 2) [start, end) seconds,
    ``status`` 0 ok / 1 empty / 2 failed, one-line ``error``, ``tokens`` (R,) words for token-level experts."""

    features: np.ndarray
    timestamps: np.ndarray
    status: int = STATUS_OK
    error: str = ""
    tokens: list[str] | None = None

    @classmethod
    def empty(cls, dim: int, reason: str, token_level: bool = False) -> ExpertOutput:
        """No rows, status empty (no audio track, no speech, no text on screen)."""
        return cls(_no_rows(dim), _no_rows(2), STATUS_EMPTY, reason, [] if token_level else None)

    @classmethod
    def failed(cls, dim: int, reason: str, token_level: bool = False) -> ExpertOutput:
        """No rows, status failed, with the one-line reason."""
        return cls(_no_rows(dim), _no_rows(2), STATUS_FAILED, one_line(reason), [] if token_level else None)

    @classmethod
    def from_media_error(cls, dim: int, err: MediaError, token_level: bool = False) -> ExpertOutput:
        """NoAudioError -> empty ("no audio track"); any other MediaError -> failed with its message."""
        if isinstance(err, NoAudioError):
            return cls.empty(dim, NO_AUDIO, token_level)
        return cls.failed(dim, str(err), token_level)


class Preparer(Protocol):
    """Turns one video's decoded media (batches of frames or clips, or audio chunks), pushed in time order, into
    prepared parts; raises MediaError / NoAudioError when the media can't be used."""

    def push(self, piece: Any) -> Iterable[Prepared]: ...

    def finish(self) -> Iterable[Prepared]: ...


class PerBatch:
    """A ``Preparer`` that prepares each decoded batch on its own (frame and clip experts)."""

    def __init__(self, prepare: Callable[[Any], Prepared]):
        self._prepare = prepare

    def push(self, piece: Any) -> Iterable[Prepared]:
        return (self._prepare(piece),)

    def finish(self) -> Iterable[Prepared]:
        return ()


def with_warning(out: ExpertOutput, warning: str) -> ExpertOutput:
    """``out`` with a decoding ``warning`` as its ``error`` when it is ok (a failure keeps its own reason)."""
    if warning and out.status == STATUS_OK:
        out.error = warning
    return out


def _marking_loaded(load: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(load)
    def wrapper(
        self: Expert, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        self.loaded = False
        load(self, device, weights_dir, random_init=random_init)
        precision = getattr(self.config, "precision", "float32")
        if precision != "float32" and not str(self.device).startswith("cuda"):
            raise ConfigError(
                f"expert {self.name}: precision {precision!r} needs a CUDA device, got {self.device!r}"
            )
        self.loaded = True

    wrapper._marks_loaded = True  # type: ignore[attr-defined]
    return wrapper


def _no_rows(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)


def one_line(text: str) -> str:
    """Collapse whitespace/newlines so a reason fits one line of a table."""
    return " ".join(str(text).split())


class Expert(ABC):
    """Base class of all experts (see the module docstring for the contract)."""

    name: ClassVar[str]
    version: ClassVar[str]
    input_kind: ClassVar[str]
    dim: ClassVar[int]
    token_level: ClassVar[bool] = False
    weights: ClassVar[tuple[WeightsFile, ...]] = ()
    Config: ClassVar[type[ExpertConfig]] = ExpertConfig
    # cheaper options, same architecture (smaller input): contract tests, quick checks
    smoke_config: ClassVar[dict[str, Any]] = {}
    config: ExpertConfig  # an instance of ``Config``; subclasses narrow the type to their own config class

    def __init__(self, config: Mapping[str, Any] | ExpertConfig | None = None) -> None:
        self.config = type(self).Config.parse(config or {}, f"expert {self.name}")
        self.device = "cpu"
        self.loaded = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each subclass's ``load`` so that ``self.loaded`` turns True once it returned."""
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__ and not getattr(cls.__dict__["load"], "_marks_loaded", False):
            setattr(cls, "load", _marking_loaded(cls.__dict__["load"]))  # noqa: B010  (mypy forbids assigning a method)

    def config_dict(self) -> dict[str, Any]:
        """The options that determine the features (canonical-JSON-able), without ``infra`` fields, and without
        ``precision`` at its default (see ``TorchConfig``)."""
        options = self.config.model_dump()
        if options.get("precision") == "float32":
            del options["precision"]
        return options

    def autocast(self) -> AbstractContextManager[Any]:
        """The model's precision context: CUDA autocast to ``config.precision``, or nothing at float32."""
        precision = getattr(self.config, "precision", "float32")
        if precision == "float32":
            return nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, precision))

    def weights_sha256(self, weights_dir: str | Path | None = None) -> str:
        """sha256 of the weights files ('+'-joined; '' without weights); WeightsError if missing or wrong."""
        return weights_sha256(self, weights_dir)

    def fingerprint(self, weights_dir: str | Path | None = None) -> str:
        """12-hex fingerprint of (name, version, config_dict, weights sha256): the feature folder name."""
        return _fingerprint(self.name, self.version, self.config_dict(), self.weights_sha256(weights_dir))

    @abstractmethod
    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        """Build the model on ``device`` and load its weights (verified first: WeightsError before any decoding).

        ``random_init=True`` builds the same architecture with seeded random weights and reads no file (tests).
        """

    @abstractmethod
    def media_request(self) -> MediaRequest:
        """What this expert reads of a video: frames at its sampling and size (``FrameRequest``) or the audio
        track at its rate (``AudioRequest``)."""

    def preparer(self, path: Path, record: VideoRecord) -> Preparer:
        """The preparer of one video's decoded media; by default ``prepare_batch`` on each decoded batch."""
        return PerBatch(self.prepare_batch)

    def prepare_batch(self, batch: Any) -> Prepared:
        """One decoded ``FrameBatch`` / ``ClipBatch`` as a prepared part (CPU, thread-safe)."""
        raise TypeError(f"expert {self.name}: defines neither preparer() nor prepare_batch()")

    def iter_prepare(self, path: Path, record: VideoRecord) -> Iterator[Prepared]:
        """This expert alone in a decoding pass over one video: its prepared parts. Raises MediaError."""
        from extractors.shared_pass import prepare_pass

        for _, part in prepare_pass([self], path, record):
            if isinstance(part, MediaError):
                raise part
            yield part

    def prepare(self, path: Path, record: VideoRecord) -> Prepared:
        """All of one video as one prepared item (its parts' rows concatenated). Raises MediaError."""
        parts = list(self.iter_prepare(path, record))
        return Prepared(
            np.concatenate([p.data for p in parts]), np.concatenate([p.timestamps for p in parts])
        )

    @abstractmethod
    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        """Run the model on prepared items (possibly of several videos); one output per item, in order."""

    def merge(self, parts: list[ExpertOutput]) -> ExpertOutput:
        """One video's output from its parts' outputs (in time order): rows concatenated.

        Failed if any part failed; empty if no part has rows; otherwise ok.
        """
        if len(parts) == 1:
            return parts[0]
        failed = [p for p in parts if p.status == STATUS_FAILED]
        if failed:
            return ExpertOutput.failed(self.dim, failed[0].error, self.token_level)
        full = [p for p in parts if len(p.features)]
        if not full:
            return ExpertOutput.empty(self.dim, parts[0].error if parts else "no rows", self.token_level)
        tokens = [t for p in full for t in (p.tokens or [])] if self.token_level else None
        return ExpertOutput(
            np.concatenate([p.features for p in full]),
            np.concatenate([p.timestamps for p in full]),
            tokens=tokens,
        )

    def extract(self, path: Path, record: VideoRecord) -> ExpertOutput:
        """All of one video, without the engine (tests, one-off use); media errors become statuses, decoding
        glitches a warning in ``error``."""
        try:
            with recording() as glitches:
                parts = list(self.iter_prepare(path, record))
        except MediaError as err:
            return ExpertOutput.from_media_error(self.dim, err, self.token_level)
        return with_warning(self.merge(self.forward(parts)), glitches.warning(self.media_request().stream))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; other values unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_seeded(make: Callable[[], _M], seed: int = 0) -> _M:
    """``make()`` under a fixed torch seed (random-init models are then identical run to run), global RNG kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def resize_crop(
    frames: np.ndarray, crop: int, resize: int, squash: bool = False, antialias: bool = True
) -> np.ndarray:
    """uint8 (n,H,W,3) RGB -> uint8 (n,3,crop,crop): resize (short side to ``resize``, or to ``resize``x``resize``
    when ``squash``) bilinearly, then centre crop. Rounds back to uint8 like a PIL pipeline."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if squash:
        size = (resize, resize)
    else:
        scale = resize / min(h, w)
        size = (max(resize, round(h * scale)), max(resize, round(w * scale)))
    if (h, w) != size:
        x = torch.nn.functional.interpolate(
            x.float(), size=size, mode="bilinear", antialias=antialias, align_corners=False
        )
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return x[:, :, top : top + crop, left : left + crop].contiguous().numpy()


class FrameConfig(TorchConfig):
    """Per-frame image experts. Sampling: ``fps`` frames per second, or ``num_frames`` uniform frames when set.
    Preprocessing: resize the short side (or both sides when ``squash``) to ``resize`` px, centre crop
    ``image_size`` px, normalise with ``mean``/``std`` (0-1 RGB). ``part_rows``: frames per prepared part
    (bounds memory: 150 KB per 224 px frame)."""

    fps: float = 1.0
    num_frames: int | None = None
    image_size: int = 224
    resize: int = 256
    squash: bool = False
    mean: FloatTriple = IMAGENET_MEAN
    std: FloatTriple = IMAGENET_STD
    part_rows: int = infra(16)

    @model_validator(mode="after")
    def _check_frames(self) -> Self:
        if self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be >= image_size ({self.image_size})")
        if self.fps <= 0 or (self.num_frames is not None and self.num_frames < 1):
            raise ValueError(f"need fps > 0 and num_frames >= 1 or None, got {self.fps}, {self.num_frames}")
        return self


class FrameExpert(Expert):
    """An expert that embeds sampled frames one by one: subclasses set ``self.model`` in ``load`` and implement
    ``embed(x)`` for a normalised float tensor (n,3,S,S) on the device, returning (n, dim)."""

    input_kind: ClassVar[str] = "frames"
    Config: ClassVar[type[ExpertConfig]] = FrameConfig
    config: FrameConfig

    def frame_spec(self) -> FrameSpec:
        """The decode spec: 1 row per sampled frame, decoded with the short side already near ``resize``."""
        c = self.config
        if c.num_frames is not None:
            return FrameSpec("uniform", num_frames=c.num_frames, short_side=c.resize)
        return FrameSpec("fps", fps=c.fps, short_side=c.resize)

    def media_request(self) -> FrameRequest:
        return FrameRequest(self.frame_spec(), self.config.part_rows)

    def prepare_batch(self, batch: FrameBatch) -> Prepared:
        c = self.config
        return Prepared(resize_crop(batch.frames, c.image_size, c.resize, c.squash), batch.timestamps)

    @abstractmethod
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(n,3,S,S) normalised float -> (n, dim) features."""

    def normalise(self, chunk: np.ndarray) -> torch.Tensor:
        """uint8 (n,3,S,S) -> float32 normalised tensor on the device."""
        x = to_device(chunk, self.device).float().div_(255)
        mean = torch.tensor(self.config.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        frames = np.concatenate([it.data for it in items])
        feats = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(frames), self.config.batch_size):
                out = self.embed(self.normalise(frames[i : i + self.config.batch_size]))
                feats.append(out.float().cpu().numpy())
        split = np.split(np.concatenate(feats), np.cumsum([it.rows for it in items])[:-1])
        return [ExpertOutput(f, it.timestamps.astype(np.float32)) for f, it in zip(split, items, strict=True)]
