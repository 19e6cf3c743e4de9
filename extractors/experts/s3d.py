"""``s3d``: S3D trained on Kinetics-400 (torchvision architecture and weights file), 1024-d per clip.

Sampling: clips of ``clip_len`` = 16 frames taken at 16 fps (1 s of video) every ``stride_s`` = 1 s, so about one
row per second as in the reference features; the last clip of a video (or the only one of a video shorter than a
clip) is padded by repeating its last frame (``pipeline.media.decode.iter_clips``). Preprocessing as torchvision's
``S3D_Weights.KINETICS400_V1`` transforms: resize to 256x256 (bilinear, no antialias), centre crop 224, Kinetics
mean/std. Row = global average of the last feature map (``features`` output), before the classifier.
Weights: torchvision's official ``s3d-d76dad2f.pth`` (torchvision publishes only the sha256 prefix in the name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from pydantic import model_validator

from extractors.base import (
    Expert,
    ExpertConfig,
    ExpertOutput,
    Prepared,
    TorchConfig,
    build_seeded,
    infra,
    resize_crop,
    resolve_device,
    to_device,
)
from extractors.registry import register_expert
from extractors.weights import WeightsFile, load_state_dict_checked, load_torch_file, require_weights
from pipeline.config import FloatTriple
from pipeline.media.decode import ClipBatch, FrameRequest, FrameSpec

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

S3D_KINETICS400 = WeightsFile(
    filename="s3d-d76dad2f.pth",
    sha256="d76dad2f",
    source="https://download.pytorch.org/models/s3d-d76dad2f.pth",
    note="torchvision S3D_Weights.KINETICS400_V1; only the sha256 prefix is published (in the file name)",
)


class S3DConfig(TorchConfig):
    """``clip_len`` frames per clip sampled at ``fps``, a clip every ``stride_s`` seconds; frames resized to
    ``resize``x``resize`` then centre-cropped to ``image_size``; Kinetics ``mean``/``std``. ``batch_size``: clips
    per model call; ``part_rows``: clips per prepared part (memory bound: 2.4 MB per 16x224x224 clip)."""

    clip_len: int = 16
    fps: float = 16.0
    stride_s: float = 1.0
    image_size: int = 224
    resize: int = 256
    mean: FloatTriple = KINETICS_MEAN
    std: FloatTriple = KINETICS_STD
    batch_size: int = infra(4)
    part_rows: int = infra(4)

    @model_validator(mode="after")
    def _check_s3d(self) -> Self:
        if self.resize < self.image_size or self.clip_len < 1 or self.fps <= 0 or self.stride_s <= 0:
            raise ValueError("need resize >= image_size, clip_len >= 1, fps > 0, stride_s > 0")
        return self


@register_expert
class S3DExpert(Expert):
    """Kinetics-400 S3D clip features (1024-d)."""

    name: ClassVar[str] = "s3d"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "clips"
    dim: ClassVar[int] = 1024
    weights: ClassVar[tuple[WeightsFile, ...]] = (S3D_KINETICS400,)
    smoke_config: ClassVar[dict[str, Any]] = {"clip_len": 8, "fps": 8.0, "image_size": 32, "resize": 36}
    Config: ClassVar[type[ExpertConfig]] = S3DConfig
    config: S3DConfig

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        from torchvision.models.video import s3d

        paths = {} if random_init else require_weights(self, weights_dir)
        model = build_seeded(lambda: s3d(weights=None))
        if not random_init:
            path = paths[S3D_KINETICS400.filename]
            load_state_dict_checked(model, load_torch_file(path), path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    def clip_spec(self) -> FrameSpec:
        c = self.config
        return FrameSpec(
            "clips", clip_len=c.clip_len, fps=c.fps, clip_stride_s=c.stride_s, short_side=c.resize
        )

    def media_request(self) -> FrameRequest:
        return FrameRequest(self.clip_spec(), self.config.part_rows)

    def prepare_batch(self, batch: ClipBatch) -> Prepared:
        c = self.config
        n, length, h, w, _ = batch.clips.shape
        frames = resize_crop(batch.clips.reshape(n * length, h, w, 3), c.image_size, c.resize, True, False)
        return Prepared(frames.reshape(n, length, 3, c.image_size, c.image_size), batch.timestamps)

    def embed(self, clips: np.ndarray) -> torch.Tensor:
        """uint8 (n,L,3,S,S) clips -> (n,1024) pooled features."""
        x = to_device(clips, self.device).float().div_(255)
        mean = torch.tensor(self.config.mean, device=self.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.config.std, device=self.device).view(1, 1, 3, 1, 1)
        x = ((x - mean) / std).permute(0, 2, 1, 3, 4)
        return torch.nn.functional.adaptive_avg_pool3d(self.model.features(x), 1).flatten(1)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        clips = np.concatenate([it.data for it in items])
        feats = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(clips), self.config.batch_size):
                feats.append(self.embed(clips[i : i + self.config.batch_size]).float().cpu().numpy())
        split = np.split(np.concatenate(feats), np.cumsum([it.rows for it in items])[:-1])
        return [ExpertOutput(f, it.timestamps.astype(np.float32)) for f, it in zip(split, items, strict=True)]
