"""``scene``: DenseNet-161 trained on Places365, 2208-d pooled features per frame at 1 fps.

Weights: the official CSAILVision checkpoint ``densenet161_places365.pth.tar`` (a dict with ``state_dict`` saved
from ``nn.DataParallel``, so keys carry a ``module.`` prefix, and with the legacy DenseNet layer names
``norm.1`` / ``relu.1`` / ``conv.1`` that torchvision now spells ``norm1`` / ``relu1`` / ``conv1``).
``checkpoint_filter_fn`` maps it onto ``torchvision.models.densenet161(num_classes=365)``. The ``.pth.tar`` is a
pickle: it is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
Places365 publishes no checksum, so the file is checked for presence only (its digest still enters the
fingerprint). Preprocessing as the official ``run_placesCNN_basic.py``: resize to 256x256, centre crop 224,
ImageNet mean/std. Row = ReLU + global average pool of the last feature map (torchvision's own pooling).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from extractors.base import ExpertConfig, FrameConfig, FrameExpert, build_seeded, resolve_device
from extractors.registry import register_expert
from extractors.weights import WeightsFile, load_state_dict_checked, load_torch_file, require_weights
from pipeline.errors import WeightsError

PLACES365_DENSENET161 = WeightsFile(
    filename="densenet161_places365.pth.tar",
    sha256="",
    source="http://places2.csail.mit.edu/models_places365/densenet161_places365.pth.tar",
    note="official Places365 state-dict checkpoint (not the 'whole_' pickled model); no checksum is published",
)
NUM_CLASSES = 365
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Places365 DenseNet keys -> torchvision ``densenet161`` keys (pure; input left unchanged).

    ``module.features.denseblock1.denselayer1.norm.1.weight`` -> ``features.denseblock1.denselayer1.norm1.weight``.
    Accepts the whole checkpoint dict (uses its ``state_dict``) or the state dict itself.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        match = _LEGACY_KEY.match(key)
        if match:
            key = f"{match.group(1)}{match.group(2)}.{match.group(3)}"
        out[key] = value
    return out


class SceneConfig(FrameConfig):
    """FrameConfig with the Places365 preprocessing: squash to 256x256, centre crop 224."""

    squash: bool = True


@register_expert
class SceneExpert(FrameExpert):
    """Places365 DenseNet-161 features (2208-d) of frames sampled at ``fps``."""

    name: ClassVar[str] = "scene"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 2208
    weights: ClassVar[tuple[WeightsFile, ...]] = (PLACES365_DENSENET161,)
    smoke_config: ClassVar[dict[str, Any]] = {"image_size": 32, "resize": 36}
    Config: ClassVar[type[ExpertConfig]] = SceneConfig

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        from torchvision.models import densenet161

        paths = {} if random_init else require_weights(self, weights_dir)
        model = build_seeded(lambda: densenet161(weights=None, num_classes=NUM_CLASSES))
        if not random_init:
            path = paths[PLACES365_DENSENET161.filename]
            checkpoint = load_torch_file(path)
            if "state_dict" not in checkpoint:
                raise WeightsError(f"{path}: no 'state_dict' in checkpoint (keys {sorted(checkpoint)[:5]})")
            load_state_dict_checked(model, checkpoint_filter_fn(checkpoint), path)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        fmap = torch.nn.functional.relu(self.model.features(x))
        return torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Places365 class scores (n, 365)."""
        return self.model.classifier(self.embed(x))
