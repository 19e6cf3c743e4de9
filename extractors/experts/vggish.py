"""``vggish``: VGGish audio embeddings, 128-d per 0.96 s window of 16 kHz mono audio (torchvggish weight format).

Architecture as torchvggish's ``VGG``: conv64-pool-conv128-pool-conv256x2-pool-conv512x2-pool (3x3 convs, ReLU,
2x2 max-pool) on a (1, 96, 64) log-mel patch, then fc4096-fc4096-fc128, each followed by ReLU; the (512, 6, 4)
feature map is flattened in (6, 4, 512) order like the TensorFlow original. Keys: ``features.{0,3,6,8,11,13}``,
``embeddings.{0,2,4}`` (weight, bias). Input front-end: ``extractors.audio_frontend`` (exactly
``vggish_input.waveform_to_examples``). Rows: one per 0.96 s example, times ``[0.96 i, 0.96 (i + 1))``.

``postprocess=True`` applies the official PCA (with whitening) + 8-bit quantisation of the released AudioSet
embeddings: ``pca_eigen_vectors @ (x - pca_means)``, clipped to [-2, 2], mapped to 255 levels and rounded, so rows
hold the integer values 0..255 as floats. Weights: torchvggish's ``vggish-10086976.pth`` and
``vggish_pca_params-970ea276.pth``; torchvggish publishes only the sha256 prefix in the file names (torch.hub
convention), so the files are verified by that 8-hex prefix. Videos without audio (or with an empty track): status
empty.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
from pydantic import model_validator
from torch import nn

from data_manifest.schema import VideoRecord
from extractors.audio_frontend import (
    EXAMPLE_HOP_SAMPLES,
    EXAMPLE_SPAN_SAMPLES,
    VGGISH_SAMPLE_RATE,
    AudioBlockPreparer,
    as_float_tensor,
    load_checkpoint,
    vggish_examples,
)
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
from pipeline.errors import WeightsError
from pipeline.media.audio import AudioRequest

log = logging.getLogger(__name__)

EMBEDDING_SIZE = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
PCA_EIGEN_VECTORS, PCA_MEANS = "pca_eigen_vectors", "pca_means"

VGGISH_WEIGHTS = WeightsFile(
    filename="vggish-10086976.pth",
    sha256="10086976",
    source="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    note="torchvggish port of Google's VGGish; only the sha256 prefix is published (in the file name)",
)
VGGISH_PCA = WeightsFile(
    filename="vggish_pca_params-970ea276.pth",
    sha256="970ea276",
    source="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth",
    note="PCA + quantisation parameters, only needed with postprocess=true; sha256 prefix from the file name",
)


class VGG(nn.Module):
    """VGGish network: (N, 1, 96, 64) log-mel -> (N, 128) embeddings (after the final ReLU, as torchvggish)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(True),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Linear(4096, EMBEDDING_SIZE),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).contiguous()  # (N, 6, 4, 512): TensorFlow's flattening order
        return self.embeddings(x.flatten(1))


class Postprocessor(nn.Module):
    """Official PCA (with whitening) + 8-bit quantisation: (N, 128) -> (N, 128) values in {0, ..., 255}."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer(PCA_EIGEN_VECTORS, torch.eye(EMBEDDING_SIZE))
        self.register_buffer(PCA_MEANS, torch.zeros(EMBEDDING_SIZE, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pca = (self.pca_eigen_vectors @ (x.T - self.pca_means)).T
        clipped = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def load_pca_params(path: Path) -> dict[str, torch.Tensor]:
    """Read torchvggish's PCA file (tensors or numpy arrays): eigen vectors (128, 128), means reshaped to (128, 1)."""
    params = load_checkpoint(path)
    missing = [k for k in (PCA_EIGEN_VECTORS, PCA_MEANS) if k not in params]
    if missing:
        raise WeightsError(f"{path}: not a VGGish PCA file: missing {missing}, has {sorted(params)[:5]}")
    vectors = as_float_tensor(params[PCA_EIGEN_VECTORS], path, PCA_EIGEN_VECTORS)
    means = as_float_tensor(params[PCA_MEANS], path, PCA_MEANS).reshape(-1, 1)
    if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE, 1):
        raise WeightsError(
            f"{path}: PCA shapes {tuple(vectors.shape)} / {tuple(means.shape)}, expected (128, 128) / (128, 1)"
        )
    return {PCA_EIGEN_VECTORS: vectors, PCA_MEANS: means}


def _examples_part(offset: int, samples: np.ndarray, last: bool) -> Prepared | None:
    """The log-mel examples of one block of 16 kHz samples starting at sample ``offset`` (None: no example)."""
    examples, times = vggish_examples(samples, pad_short=offset == 0)
    if not len(examples):
        return None
    return Prepared(examples, times + np.float32(offset / VGGISH_SAMPLE_RATE))


class VGGishConfig(ExpertConfig):
    """``postprocess``: official PCA + 8-bit quantisation. ``batch_size``: examples per model call;
    ``part_examples``: examples per prepared part (bounds memory on long tracks: 3.6 min by default)."""

    postprocess: bool = False
    batch_size: int = infra(64)
    part_examples: int = infra(225)

    @model_validator(mode="after")
    def _check_vggish(self) -> Self:
        if self.batch_size < 1 or self.part_examples < 1:
            raise ValueError(f"batch_size and part_examples must be >= 1, got {self}")
        return self


@register_expert
class VGGishExpert(Expert):
    """VGGish embeddings (128-d) of 0.96 s log-mel examples of the 16 kHz mono audio track."""

    name: ClassVar[str] = "vggish"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "audio"
    dim: ClassVar[int] = EMBEDDING_SIZE
    weights: ClassVar[tuple[WeightsFile, ...]] = (VGGISH_WEIGHTS, VGGISH_PCA)
    Config: ClassVar[type[ExpertConfig]] = VGGishConfig

    def __init__(self, config: dict | VGGishConfig | None = None) -> None:
        super().__init__(config)
        self.weights = (VGGISH_WEIGHTS, VGGISH_PCA) if self.config.postprocess else (VGGISH_WEIGHTS,)

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        paths = {} if random_init else require_weights(self, weights_dir)
        model = build_seeded(VGG)
        post = Postprocessor() if self.config.postprocess else None
        if not random_init:
            path = paths[VGGISH_WEIGHTS.filename]
            load_state_dict_checked(model, load_checkpoint(path), path)
            log.info("vggish: loaded %s", path)
        if post is not None and not random_init:
            pca_path = paths[VGGISH_PCA.filename]
            load_state_dict_checked(post, load_pca_params(pca_path), pca_path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.post = post.eval().to(self.device) if post is not None else None

    def media_request(self) -> AudioRequest:
        return AudioRequest(VGGISH_SAMPLE_RATE)

    def preparer(self, path: Path, record: VideoRecord) -> AudioBlockPreparer:
        """Log-mel examples of the track in parts of ``part_examples``; NoAudioError for an empty track."""
        block = self.config.part_examples * EXAMPLE_HOP_SAMPLES
        return AudioBlockPreparer(path, block, EXAMPLE_SPAN_SAMPLES - EXAMPLE_HOP_SAMPLES, _examples_part)

    @torch.inference_mode()
    def embed(self, examples: np.ndarray) -> np.ndarray:
        """float32 (N, 96, 64) log-mel examples -> float32 (N, 128) (post-processed when configured)."""
        out = []
        for i in range(0, len(examples), self.config.batch_size):
            x = to_device(examples[i : i + self.config.batch_size], self.device).unsqueeze(1)
            y = self.model(x)
            out.append((self.post(y) if self.post is not None else y).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        feats = self.embed(np.concatenate([it.data for it in items]))
        split = np.split(feats, np.cumsum([it.rows for it in items])[:-1])
        return [ExpertOutput(f, it.timestamps.astype(np.float32)) for f, it in zip(split, items, strict=True)]
