"""``clip``: CLIP ViT-B/32 image embeddings, 512-d per frame, through transformers' ``CLIPModel`` from a local folder.

The folder ``<weights_dir>/clip-vit-base-patch32/`` has the layout of the Hugging Face repo
``openai/clip-vit-base-patch32`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json``, tokenizer
files). Row = ``visual_projection(vision_model(x).pooler_output)`` — ``CLIPModel``'s ``image_embeds`` — L2-normalised
when ``normalize`` (default, as ``CLIPModel.forward`` returns them). Sampling: 1 fps, or ``num_frames`` uniform frames.
Preprocessing as CLIP's (``preprocessor_config.json``): short side 224, centre crop 224, CLIP mean/std; the resize
is done by the decoder (bilinear) instead of PIL bicubic. ``load`` warns when the folder's processor config differs.

No sha256 is published for the folder's files (Hugging Face shows LFS digests per revision only); they are verified
by presence and by loading (every vision key must load, shapes must fit).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from extractors.base import ExpertConfig, FrameConfig, FrameExpert, build_seeded, resolve_device
from extractors.registry import register_expert
from extractors.weights import WeightsFile, default_weights_dir, one_line_error, require_weights
from pipeline.config import FloatTriple
from pipeline.errors import WeightsError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

CLIP_DIR = "clip-vit-base-patch32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROJECTION_DIM = 512
_SOURCE = "https://huggingface.co/openai/clip-vit-base-patch32/resolve/main/"
_NO_SHA = "no sha256 published: checked by presence and loadability only"

CLIP_FILES = tuple(
    WeightsFile(filename=f"{CLIP_DIR}/{name}", sha256="", source=_SOURCE + name, note=_NO_SHA)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json")
)


def clip_model_dir(weights_dir: str | Path | None = None) -> Path:
    """``<weights_dir>/clip-vit-base-patch32`` (weights folder default: ``$T2V_WEIGHTS_DIR`` or ``./weights``)."""
    return Path(weights_dir if weights_dir is not None else default_weights_dir()) / CLIP_DIR


def load_clip_model(model_dir: Path) -> torch.nn.Module:
    """``CLIPModel.from_pretrained(model_dir)`` offline, logging missing/unexpected keys.

    WeightsError naming the folder when it can't be read, shapes don't fit, or keys are missing.
    """
    from transformers import CLIPModel

    try:
        model, info = CLIPModel.from_pretrained(
            str(model_dir), local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{model_dir}: cannot load CLIP model: {one_line_error(err)}") from err
    missing, unexpected = sorted(info.get("missing_keys", ())), sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if unexpected:
        log.warning("%s: %d unexpected key(s) ignored: %s", model_dir, len(unexpected), unexpected[:5])
    if missing or mismatched:
        raise WeightsError(
            f"{model_dir}: does not fit CLIPModel: {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(mismatched)} mismatched {mismatched[:5]}"
        )
    return model


def _check_processor(model_dir: Path, config: FrameConfig) -> None:
    """Warn when the folder's preprocessing differs from the expert config (the config is what runs)."""
    path = model_dir / "preprocessor_config.json"
    try:
        proc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: unreadable preprocessor config: {one_line_error(err)}") from err
    crop = proc.get("crop_size", {})
    checks = {
        "image_mean": (proc.get("image_mean"), config.mean),
        "image_std": (proc.get("image_std"), config.std),
        "crop_size": (crop.get("height") if isinstance(crop, dict) else crop, config.image_size),
    }
    for key, (got, used) in checks.items():
        if got is None or not np.allclose(
            np.asarray(got, dtype=np.float64), np.asarray(used, dtype=np.float64)
        ):
            log.warning("%s: %s is %s, the clip expert uses %s", path, key, got, used)


class ClipConfig(FrameConfig):
    """Frames at ``fps`` (or ``num_frames`` uniform), short side ``resize`` px, centre crop ``image_size`` px, CLIP
    mean/std; ``normalize``: L2-normalise the embeddings."""

    resize: int = 224
    mean: FloatTriple = CLIP_MEAN
    std: FloatTriple = CLIP_STD
    normalize: bool = True


@register_expert
class ClipExpert(FrameExpert):
    """CLIP ViT-B/32 ``image_embeds`` (512-d) of frames sampled at 1 fps or uniformly."""

    name: ClassVar[str] = "clip"
    version: ClassVar[str] = "1"
    dim: ClassVar[int] = PROJECTION_DIM
    weights: ClassVar[tuple[WeightsFile, ...]] = CLIP_FILES
    Config: ClassVar[type[ExpertConfig]] = ClipConfig
    smoke_config: ClassVar[dict[str, Any]] = {"num_frames": 1}

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if random_init:
            vision_config = CLIPVisionConfig(projection_dim=PROJECTION_DIM)
            model = build_seeded(lambda: CLIPVisionModelWithProjection(vision_config))
        else:
            require_weights(self, weights_dir)
            model_dir = clip_model_dir(weights_dir)
            _check_processor(model_dir, self.config)
            model = load_clip_model(model_dir)
        vision_config = getattr(model.config, "vision_config", model.config)
        size, projection_dim = vision_config.image_size, model.visual_projection.out_features
        if projection_dim != self.dim or size != self.config.image_size:
            raise WeightsError(
                f"{clip_model_dir(weights_dir)}: CLIP projection_dim {projection_dim} / image_size {size}, "
                f"the clip expert expects {self.dim} / {self.config.image_size}"
            )
        self.device = resolve_device(device)
        self.vision = model.vision_model.eval().to(self.device)
        self.projection = model.visual_projection.eval().to(self.device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.vision(pixel_values=x).pooler_output
        emb = self.projection(pooled)
        return torch.nn.functional.normalize(emb, dim=-1) if self.config.normalize else emb
