"""s3d and scene load checkpoints fabricated in the official formats (torchvision S3D state dict; Places365
``.pth.tar`` with ``module.`` prefixes and legacy ``norm.1`` keys) and give the features of the checkpoint's net."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision CPU fix before torchvision)
from data_manifest.schema import VideoRecord
from extractors.experts.scene import checkpoint_filter_fn
from extractors.registry import expert_class, get_expert
from pipeline.errors import WeightsError
from tests.media import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("s3d_scene") / "v.mp4", duration=2.0, size=(80, 60), fps=8)


TINY = {"image_size": 32, "resize": 36}  # same nets, small inputs: the last feature map is 1x1


def _record(path: Path) -> VideoRecord:
    return VideoRecord("v", str(path), [], "test")


def _seeded(make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    torch.manual_seed(1)
    return make().eval()


def test_checkpoint_filter_fn_on_tiny_state_dict() -> None:
    t = {k: torch.full((1,), float(i)) for i, k in enumerate("abcdef")}
    checkpoint = {
        "epoch": 90,
        "arch": "densenet161",
        "state_dict": {
            "module.features.conv0.weight": t["a"],
            "module.features.denseblock1.denselayer1.norm.1.weight": t["b"],
            "module.features.denseblock1.denselayer1.conv.2.weight": t["c"],
            "module.features.denseblock4.denselayer24.norm.2.running_mean": t["d"],
            "module.features.transition1.norm.weight": t["e"],
            "module.classifier.bias": t["f"],
        },
    }
    before = dict(checkpoint["state_dict"])
    out = checkpoint_filter_fn(checkpoint)
    assert out == {
        "features.conv0.weight": t["a"],
        "features.denseblock1.denselayer1.norm1.weight": t["b"],
        "features.denseblock1.denselayer1.conv2.weight": t["c"],
        "features.denseblock4.denselayer24.norm2.running_mean": t["d"],
        "features.transition1.norm.weight": t["e"],
        "classifier.bias": t["f"],
    }
    assert checkpoint["state_dict"] == before  # pure
    assert checkpoint_filter_fn(out) == out  # already-new keys pass through


def _legacy_places365(state_dict: dict[str, torch.Tensor]) -> dict:
    """torchvision keys -> the official Places365 checkpoint format (DataParallel prefix, legacy layer names, and
    no BatchNorm ``num_batches_tracked``: the 2017 file predates it)."""
    legacy = {
        "module." + re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")
    }
    return {"epoch": 90, "arch": "densenet161", "state_dict": legacy, "best_prec1": 56.1}


def test_scene_loads_official_format_checkpoint(video: Path, tmp_path: Path) -> None:
    from torchvision.models import densenet161

    reference = _seeded(lambda: densenet161(weights=None, num_classes=365))
    path = tmp_path / "densenet161_places365.pth.tar"
    torch.save(_legacy_places365(reference.state_dict()), path)
    expert = get_expert("scene", TINY)
    expert.load("cpu", tmp_path)
    prepared = expert.prepare(video, _record(video))
    assert prepared.data.shape == (2, 3, 32, 32)
    with torch.inference_mode():
        x = expert.normalise(prepared.data)
        got = expert.embed(x)
        want = torch.nn.functional.adaptive_avg_pool2d(torch.relu(reference.features(x)), 1).flatten(1)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
        logits = expert.model.classifier(got)
        np.testing.assert_allclose(logits.numpy(), reference.classifier(want).numpy(), rtol=1e-4, atol=1e-4)
    out = expert.extract(video, _record(video))
    assert out.features.shape == (2, 2208) and out.features.dtype == np.float32
    np.testing.assert_allclose(out.timestamps, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(out.features, got.numpy())  # deterministic: same frames, same features
    assert expert.fingerprint(tmp_path) != get_expert("scene").fingerprint(tmp_path)  # config is significant
    assert expert.weights_sha256(tmp_path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_scene_rejects_wrong_checkpoints(tmp_path: Path) -> None:
    torch.save({"epoch": 1, "arch": "densenet161"}, tmp_path / "densenet161_places365.pth.tar")
    with pytest.raises(WeightsError, match="no 'state_dict'"):
        get_expert("scene").load("cpu", tmp_path)
    torch.save(
        {"state_dict": {"module.features.conv0.weight": torch.zeros(1)}},
        tmp_path / "densenet161_places365.pth.tar",
    )
    with pytest.raises(WeightsError, match="does not fit the model"):
        get_expert("scene").load("cpu", tmp_path)


def test_s3d_loads_torchvision_format_and_checks_prefix(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.models.video import s3d

    reference = _seeded(lambda: s3d(weights=None))
    path = tmp_path / "s3d-d76dad2f.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(WeightsError, match="sha256 mismatch: expected d76dad2f got"):
        get_expert("s3d").load("cpu", tmp_path)  # a fabricated file is not the published one
    cls = expert_class("s3d")
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(cls, "weights", (dataclasses.replace(cls.weights[0], sha256=prefix),))
    expert = get_expert("s3d", {**TINY, "clip_len": 8, "fps": 8.0})
    expert.load("cpu", tmp_path)
    prepared = expert.prepare(video, _record(video))
    assert prepared.data.shape == (2, 8, 3, 32, 32) and prepared.data.dtype == np.uint8
    with torch.inference_mode():
        x = torch.from_numpy(prepared.data).float() / 255
        mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 1, 3, 1, 1)
        std = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 1, 3, 1, 1)
        x = ((x - mean) / std).permute(0, 2, 1, 3, 4)
        want = reference.features(x).mean((2, 3, 4))
        got = expert.embed(prepared.data)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    out = expert.extract(video, _record(video))
    assert out.features.shape == (2, 1024) and out.features.dtype == np.float32
    np.testing.assert_allclose(out.timestamps, [[0, 1], [1, 2]])
    np.testing.assert_array_equal(out.features, got.numpy())  # deterministic: same clips, same features


def test_s3d_video_shorter_than_a_clip_gives_one_row(tmp_path: Path) -> None:
    short = make_video(tmp_path / "short.mp4", duration=0.4, size=(48, 32), fps=10, audio=False)
    expert = get_expert("s3d", {**TINY, "clip_len": 8, "fps": 8.0})
    expert.load("cpu", None, random_init=True)
    out = expert.extract(short, _record(short))
    assert out.status == 0 and out.features.shape == (1, 1024)
    assert out.timestamps[0, 0] == 0 and out.timestamps[0, 1] == pytest.approx(0.4, abs=0.11)
