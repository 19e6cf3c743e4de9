"""``pann``: PANN CNN14 (AudioSet) embeddings, 2048-d per ~1 s window of 32 kHz mono audio.

The model is panns-inference's own ``Cnn14`` definition (sample rate 32 kHz, 1024-point STFT every 320 samples,
64 mel bands 50-14000 Hz, 527 classes, as ``panns_inference.AudioTagging`` builds it). Importing the
``panns_inference`` package runs its ``config.py``, which ``wget``s a labels CSV into ``~/panns_data``; its
``AudioTagging`` also downloads the checkpoint. We never import the package: ``panns_models()`` executes only the
package's ``models.py`` (and the ``pytorch_utils.py`` it imports) under a private package name, and the checkpoint
is read from the weights folder. Row = the ``embedding`` output (ReLU(fc1), before the AudioSet classifier) of one
window; windows of ``window_s`` every ``hop_s`` seconds, the last one zero-padded (``pipeline.media.audio.audio_windows``),
times ``[start, min(start + window_s, duration))``. Videos without audio (or with an empty track): status empty.

Weights: ``Cnn14_mAP=0.431.pth`` from Zenodo record 3987831, a dict whose ``model`` entry is the state dict. No
sha256 is published for it, so it is verified by presence and by loading (every key and shape must fit).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import types
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from pydantic import model_validator

from data_manifest.schema import VideoRecord
from extractors.audio_frontend import AudioBlockPreparer, load_checkpoint
from extractors.base import (
    Expert,
    ExpertConfig,
    ExpertOutput,
    Prepared,
    build_seeded,
    infra,
    resolve_device,
    to_device,
)
from extractors.registry import register_expert
from extractors.weights import WeightsFile, load_state_dict_checked, require_weights
from pipeline.errors import ConfigError, WeightsError
from pipeline.media.audio import AudioRequest, audio_windows

log = logging.getLogger(__name__)

SAMPLE_RATE = 32000
CNN14_ARGS = {
    "sample_rate": SAMPLE_RATE,
    "window_size": 1024,
    "hop_size": 320,
    "mel_bins": 64,
    "fmin": 50,
    "fmax": 14000,
    "classes_num": 527,
}
EMBEDDING_SIZE = 2048
_PRIVATE_PACKAGE = "_t2v_panns_inference"
_import_lock = threading.Lock()

CNN14_WEIGHTS = WeightsFile(
    filename="Cnn14_mAP=0.431.pth",
    sha256="",
    source="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
    note="PANNs CNN14 (AudioSet, mAP 0.431); no sha256 published: checked by presence and loadability only",
)


def panns_models() -> types.ModuleType:
    """panns-inference's ``models`` module, executed without running the package's ``__init__``/``config.py``.

    The package folder is found with ``importlib.util.find_spec`` (which does not import it) and registered under a
    private name whose ``__path__`` is that folder, so ``models.py``'s relative import of ``pytorch_utils`` works
    and nothing downloads. ConfigError when panns-inference is not installed.
    """
    name = f"{_PRIVATE_PACKAGE}.models"
    with _import_lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.find_spec("panns_inference")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("pann: package panns-inference is not installed (pip install panns-inference)")
        folder = Path(list(spec.submodule_search_locations)[0])
        package = types.ModuleType(_PRIVATE_PACKAGE)
        package.__path__ = [str(folder)]
        package.__package__ = _PRIVATE_PACKAGE
        sys.modules[_PRIVATE_PACKAGE] = package
        module_spec = importlib.util.spec_from_file_location(name, folder / "models.py")
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"pann: cannot load {folder / 'models.py'}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except ImportError:
            del sys.modules[name]
            raise
        return module


def build_cnn14() -> torch.nn.Module:
    """panns-inference's ``Cnn14`` with the arguments ``AudioTagging`` uses (random init)."""
    return panns_models().Cnn14(**CNN14_ARGS)


def cnn14_state_dict(checkpoint: dict, path: Path) -> dict:
    """The state dict inside an official PANN checkpoint (``{'model': state_dict, ...}``), or a bare state dict."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a PANN checkpoint: expected a dict with a 'model' state dict")
    return state


class PANNConfig(ExpertConfig):
    """Windows of ``window_s`` seconds every ``hop_s`` seconds (``hop_s <= window_s``) at 32 kHz. ``batch_size``:
    windows per model call; ``part_windows``: hops per prepared part (bounds memory on long tracks)."""

    window_s: float = 1.0
    hop_s: float = 1.0
    batch_size: int = infra(32)
    part_windows: int = infra(300)

    @model_validator(mode="after")
    def _check_pann(self) -> Self:
        if not 0 < self.hop_s <= self.window_s:
            raise ValueError(f"need 0 < hop_s <= window_s, got hop_s={self.hop_s}, window_s={self.window_s}")
        if self.window_s < 0.32:
            raise ValueError(f"window_s must be >= 0.32 s (CNN14's pooling), got {self.window_s}")
        if self.batch_size < 1 or self.part_windows < 1:
            raise ValueError("batch_size and part_windows must be >= 1")
        return self


@register_expert
class PANNExpert(Expert):
    """CNN14 ``embedding`` (2048-d) of ~1 s windows of the 32 kHz mono audio track."""

    name: ClassVar[str] = "pann"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "audio"
    dim: ClassVar[int] = EMBEDDING_SIZE
    weights: ClassVar[tuple[WeightsFile, ...]] = (CNN14_WEIGHTS,)
    Config: ClassVar[type[ExpertConfig]] = PANNConfig
    config: PANNConfig

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        state = None
        if not random_init:
            path = require_weights(self, weights_dir)[CNN14_WEIGHTS.filename]
            state = cnn14_state_dict(load_checkpoint(path), path)
        model = build_seeded(build_cnn14)
        if state is not None:
            load_state_dict_checked(model, state, path)
            log.info("pann: loaded %s", path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    def media_request(self) -> AudioRequest:
        return AudioRequest(SAMPLE_RATE)

    def preparer(self, path: Path, record: VideoRecord) -> AudioBlockPreparer:
        """Windows (n, window samples) float32 of the track, in parts; NoAudioError for an empty track."""
        c = self.config
        win = round(c.window_s * SAMPLE_RATE)
        hop = round(c.hop_s * SAMPLE_RATE)

        def windows_part(offset: int, samples: np.ndarray, last: bool) -> Prepared | None:
            if offset > 0 and len(samples) <= win - hop:
                return None
            windows, times = audio_windows(samples, SAMPLE_RATE, c.window_s, c.hop_s)
            return Prepared(windows, times + np.float32(offset / SAMPLE_RATE))

        return AudioBlockPreparer(path, c.part_windows * hop, win - hop, windows_part)

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> np.ndarray:
        """float32 (N, samples) 32 kHz windows -> float32 (N, 2048) embeddings."""
        out = []
        for i in range(0, len(windows), self.config.batch_size):
            x = to_device(windows[i : i + self.config.batch_size], self.device)
            out.append(self.model(x)["embedding"].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        feats = self.embed(np.concatenate([it.data for it in items]))
        split = np.split(feats, np.cumsum([it.rows for it in items])[:-1])
        return [ExpertOutput(f, it.timestamps.astype(np.float32)) for f, it in zip(split, items, strict=True)]
