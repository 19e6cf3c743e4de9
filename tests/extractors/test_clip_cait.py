"""CLIP image and CaiT patch-token experts: the real loading paths on a tiny CLIP folder
saved with ``save_pretrained`` and on a CaiT checkpoint fabricated in Facebook's official format; shapes, dtypes,
timestamps, pooling, determinism and clear WeightsErrors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision compat first)
from extractors import get_expert
from extractors.base import build_seeded
from extractors.experts.cait import CAIT_ARCHS, pool_patch_tokens
from extractors.experts.clip import CLIP_DIR
from pipeline.errors import WeightsError
from pipeline.features.shards import STATUS_OK
from tests.media import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(
        tmp_path_factory.mktemp("clip_media") / "clip.mp4", duration=2.0, size=(80, 60), audio=False
    )


def _tiny_clip_folder(folder: Path, hidden: int = 32) -> None:
    """A CLIP folder in the Hugging Face layout (config, safetensors, processor) with tiny towers."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    text.update(vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }
    vision.update(image_size=224, patch_size=32)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    build_seeded(lambda: CLIPModel(config), seed=1).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    wdir = tmp_path_factory.mktemp("clip_weights")
    _tiny_clip_folder(wdir / CLIP_DIR)
    return wdir


def test_clip_expert_loads_folder_and_embeds_frames(clip_weights, video):
    from transformers import CLIPModel

    expert = get_expert("clip")
    expert.load(weights_dir=clip_weights)
    out = expert.extract(video, None)
    assert out.status == STATUS_OK and out.features.shape == (2, 512) and out.features.dtype == np.float32
    np.testing.assert_allclose(out.timestamps, [[0.0, 1.0], [1.0, 2.0]], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.features, expert.extract(video, None).features)

    reference = CLIPModel.from_pretrained(str(clip_weights / CLIP_DIR)).eval()
    prepared = expert.prepare(video, None)
    with torch.no_grad():
        direct = reference.get_image_features(pixel_values=expert.normalise(prepared.data)).pooler_output
    np.testing.assert_allclose(out.features, torch.nn.functional.normalize(direct, dim=-1).numpy(), atol=1e-5)

    uniform = get_expert("clip", {"num_frames": 3, "normalize": False})
    uniform.load(weights_dir=clip_weights)
    rows = uniform.extract(video, None)
    assert rows.features.shape == (3, 512)
    np.testing.assert_allclose(rows.timestamps[:, 1] - rows.timestamps[:, 0], 2.0 / 3, atol=1e-4)


def test_clip_expert_weights_errors(clip_weights, tmp_path):
    with pytest.raises(WeightsError, match="missing"):
        get_expert("clip").load(weights_dir=tmp_path)
    bad = tmp_path / "bad"
    _tiny_clip_folder(bad / CLIP_DIR, hidden=32)
    config_path = bad / CLIP_DIR / "config.json"
    config = json.loads(config_path.read_text())
    config["vision_config"]["hidden_size"] = 48
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="CLIP"):
        get_expert("clip").load(weights_dir=bad)


def test_pool_patch_tokens_averages_2x2_blocks():
    tokens = torch.arange(2 * 196 * 3, dtype=torch.float32).reshape(2, 196, 3)
    pooled = pool_patch_tokens(tokens, 7)
    grid = tokens.reshape(2, 14, 14, 3)
    expected = grid.reshape(2, 7, 2, 7, 2, 3).mean(dim=(2, 4)).reshape(2, 49, 3)
    torch.testing.assert_close(pooled, expected)
    assert pool_patch_tokens(tokens, 14) is tokens


@pytest.fixture(scope="module")
def cait_weights(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """``XXS24_224.pth`` as Facebook publishes CaiT checkpoints: ``{'model': state}`` (here with DDP's prefix)."""
    import timm

    wdir = tmp_path_factory.mktemp("cait_weights")
    model = build_seeded(lambda: timm.create_model("cait_xxs24_224", pretrained=False), seed=1).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state}, wdir / CAIT_ARCHS["cait_xxs24_224"][0].filename)
    return wdir, model


def test_cait_loads_official_checkpoint_and_emits_patch_tokens(cait_weights, video):
    wdir, model = cait_weights
    expert = get_expert("cait", {"arch": "cait_xxs24_224", "num_frames": 2})
    assert expert.dim == 192 and [w.filename for w in expert.weights] == ["XXS24_224.pth"]
    expert.load(weights_dir=wdir)
    prepared = expert.prepare(video, None)
    out = expert.forward([prepared])[0]
    assert (
        out.status == STATUS_OK and out.features.shape == (2 * 49, 192) and out.features.dtype == np.float32
    )
    np.testing.assert_allclose(out.timestamps, np.repeat([[0.0, 1.0], [1.0, 2.0]], 49, axis=0), atol=1e-5)
    with torch.no_grad():
        tokens = model.forward_features(expert.normalise(prepared.data))[:, 1:]
    expected = pool_patch_tokens(tokens, 7).reshape(-1, 192).numpy()
    np.testing.assert_allclose(out.features, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out.features, expert.forward([prepared])[0].features)


def test_cait_defaults_and_weights_errors(tmp_path):
    expert = get_expert("cait")
    assert expert.config.num_frames == 4 and expert.config.grid == 7 and expert.dim == 384
    assert [w.filename for w in expert.weights] == ["S24_224.pth"]
    with pytest.raises(WeightsError, match="S24_224.pth: missing"):
        expert.load(weights_dir=tmp_path)
    bad = {"model": {"module.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)}}
    torch.save(bad, tmp_path / "XXS24_224.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        get_expert("cait", {"arch": "cait_xxs24_224"}).load(weights_dir=tmp_path)
