"""``cait``: CaiT-S/24 (timm ``cait_s24_224``) patch-token features, 384-d per token, for CRET.

Sampling: ``num_frames`` = 4 frames, one from the centre of each of 4 equal intervals of the video (``uniform``
spec), each frame's row time = its interval. Preprocessing as timm's ``cait_s24_224.fb_dist_in1k`` config (crop_pct
1.0): short side 224 (resized by the decoder, bilinear instead of bicubic), centre crop 224, ImageNet mean/std.

Tokens: ``forward_features`` output without the class token, i.e. the 196 (14x14) patch tokens after the 24
self-attention blocks and the final LayerNorm (the class-attention blocks only update the class token, so these are
the patch tokens the class-attention head reads). To keep shards small they are average-pooled to a
``grid`` x ``grid`` grid (default 7x7 = 49 tokens per frame; ``grid=14`` keeps all 196). Rows: frames x tokens,
frame-major, tokens in row-major grid order, each with its frame's timestamps. The rows are not text tokens, so the
expert is not ``token_level`` (no ``tokens`` strings in the shard).

Weights: Facebook's official DeiT/CaiT release ``S24_224.pth`` (``{'model': state_dict}``), mapped with timm's
``checkpoint_filter_fn`` for CaiT (drops a ``module.`` prefix). No sha256 is published for it: verified by presence
and loading (every key and shape must fit). ``arch`` may name the smaller ``cait_xxs24_224`` (192-d, file
``XXS24_224.pth``) for quick runs and tests.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from pydantic import model_validator

from extractors.base import (
    ExpertConfig,
    ExpertOutput,
    FrameConfig,
    FrameExpert,
    Prepared,
    build_seeded,
    infra,
    resolve_device,
)
from extractors.registry import register_expert
from extractors.weights import (
    WeightsFile,
    load_state_dict_checked,
    load_torch_file,
    one_line_error,
    require_weights,
)
from pipeline.errors import WeightsError

log = logging.getLogger(__name__)

_NO_SHA = "no sha256 published: checked by presence and loadability only"
CAIT_ARCHS: dict[str, tuple[WeightsFile, int]] = {
    "cait_s24_224": (
        WeightsFile("S24_224.pth", "", "https://dl.fbaipublicfiles.com/deit/S24_224.pth", _NO_SHA),
        384,
    ),
    "cait_xxs24_224": (
        WeightsFile("XXS24_224.pth", "", "https://dl.fbaipublicfiles.com/deit/XXS24_224.pth", _NO_SHA),
        192,
    ),
}
PATCH_GRID = 14  # 224 / 16
PREFIX_TOKENS = 1  # the class token forward_features prepends


class CaitConfig(FrameConfig):
    """``num_frames`` uniform frames (``None``: ``fps`` frames per second), short side ``resize`` px, centre crop
    224, ImageNet mean/std; ``arch``: a key of ``CAIT_ARCHS``; ``grid``: pooled token grid side (1..14)."""

    num_frames: int | None = 4
    resize: int = 224
    arch: str = "cait_s24_224"
    grid: int = 7
    batch_size: int = infra(4)

    @model_validator(mode="after")
    def _check_cait(self) -> Self:
        if self.arch not in CAIT_ARCHS:
            raise ValueError(f"arch must be one of {sorted(CAIT_ARCHS)}, got {self.arch!r}")
        if not 1 <= self.grid <= PATCH_GRID:
            raise ValueError(f"grid must be between 1 and {PATCH_GRID}, got {self.grid}")
        if self.image_size != 224:
            raise ValueError(f"the 224 models need image_size 224, got {self.image_size}")
        return self


def pool_patch_tokens(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, 196, D) patch tokens in row-major 14x14 order -> (n, grid*grid, D) average-pooled tokens."""
    n, count, dim = tokens.shape
    side = int(round(count**0.5))
    if grid == side:
        return tokens
    fmap = tokens.transpose(1, 2).reshape(n, dim, side, side)
    return torch.nn.functional.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)


@register_expert
class CaitExpert(FrameExpert):
    """CaiT patch tokens (384-d for S/24), ``grid``² rows per frame for 4 uniformly sampled frames."""

    name: ClassVar[str] = "cait"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 384
    weights: ClassVar[tuple[WeightsFile, ...]] = (CAIT_ARCHS["cait_s24_224"][0],)
    Config: ClassVar[type[ExpertConfig]] = CaitConfig
    smoke_config: ClassVar[dict[str, Any]] = {"num_frames": 1}

    def __init__(self, config: dict | CaitConfig | None = None) -> None:
        super().__init__(config)
        weights_file, self.dim = CAIT_ARCHS[self.config.arch]
        self.weights = (weights_file,)

    @property
    def tokens_per_frame(self) -> int:
        return self.config.grid**2

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        import timm
        from timm.models.cait import checkpoint_filter_fn

        state = None
        if not random_init:
            path = require_weights(self, weights_dir)[self.weights[0].filename]
            try:
                state = checkpoint_filter_fn(load_torch_file(path))
            except pickle.UnpicklingError as err:
                raise WeightsError(f"{path}: not a torch checkpoint: {one_line_error(err)}") from err
        model = build_seeded(lambda: timm.create_model(self.config.arch, pretrained=False))
        if state is not None:
            load_state_dict_checked(model, state, path)
            log.info("cait: loaded %s", path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, 224, 224) normalised frames -> (n, grid*grid, dim) pooled patch tokens."""
        tokens = self.model.forward_features(x)[:, PREFIX_TOKENS:]
        return pool_patch_tokens(tokens, self.config.grid)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        frames = np.concatenate([it.data for it in items])
        feats = []
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(frames), self.config.batch_size):
                feats.append(
                    self.embed(self.normalise(frames[i : i + self.config.batch_size])).float().cpu().numpy()
                )
        per_frame = (
            np.concatenate(feats) if feats else np.zeros((0, self.tokens_per_frame, self.dim), np.float32)
        )
        outputs = []
        for chunk, it in zip(
            np.split(per_frame, np.cumsum([it.rows for it in items])[:-1]), items, strict=True
        ):
            times = np.repeat(it.timestamps.astype(np.float32), self.tokens_per_frame, axis=0)
            outputs.append(ExpertOutput(chunk.reshape(-1, self.dim), times))
        return outputs
