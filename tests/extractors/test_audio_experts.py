"""VGGish and PANN CNN14 experts: official log-mel front-end, checkpoints fabricated in the official formats,
shapes, dtypes, timestamps, determinism, streaming parts, and "no audio" -> status empty."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401  (torchvision compat first)
from extractors import get_expert
from extractors.audio_frontend import vggish_examples
from extractors.base import build_seeded
from extractors.experts.pann import CNN14_WEIGHTS, build_cnn14, panns_models
from extractors.experts.vggish import VGG, VGGISH_PCA, VGGISH_WEIGHTS, load_pca_params
from pipeline.errors import WeightsError
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK
from pipeline.media.decode import load_audio
from tests.media import corrupt_packets, make_video

OFFICIAL_VGGISH_KEYS = [
    f"{block}.{i}.{kind}"
    for block, idx in (("features", (0, 3, 6, 8, 11, 13)), ("embeddings", (0, 2, 4)))
    for i in idx
    for kind in ("weight", "bias")
]


def official_waveform_to_examples(data: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Loop transcription of VGGish's ``vggish_input.waveform_to_examples`` / ``mel_features`` (float64)."""
    data = data.astype(np.float64)
    window = int(round(sample_rate * 0.025))
    hop = int(round(sample_rate * 0.010))
    fft_length = 2 ** int(np.ceil(np.log(window) / np.log(2.0)))
    num_frames = 1 + int(np.floor((len(data) - window) / hop))
    frames = np.stack([data[i * hop : i * hop + window] for i in range(num_frames)])
    periodic_hann = 0.5 - (0.5 * np.cos(2 * np.pi / window * np.arange(window)))
    spectrogram = np.abs(np.fft.rfft(frames * periodic_hann, int(fft_length)))

    def hertz_to_mel(f):
        return 1127.0 * np.log(1.0 + (f / 700.0))

    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, spectrogram.shape[1]))
    edges = np.linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), 64 + 2)
    weights = np.empty((spectrogram.shape[1], 64))
    for i in range(64):
        lower, centre, upper = edges[i : i + 3]
        lower_slope = (bins_mel - lower) / (centre - lower)
        upper_slope = (upper - bins_mel) / (upper - centre)
        weights[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    weights[0, :] = 0.0
    log_mel = np.log(np.dot(spectrogram, weights) + 0.01)
    n_examples = 1 + int(np.floor((len(log_mel) - 96) / 96))
    return np.stack([log_mel[i * 96 : (i + 1) * 96] for i in range(n_examples)]).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio_media")
    return {
        "audio": make_video(root / "with audio.mp4", duration=2.0),
        "silent": make_video(root / "no_audio.mp4", duration=2.0, audio=False),
    }


def test_vggish_log_mel_matches_official_formula_on_sine():
    t = np.arange(int(2.5 * 16000)) / 16000
    wave = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 3000.0 * t)).astype(np.float32)
    examples, times = vggish_examples(wave)
    official = official_waveform_to_examples(wave)
    assert examples.shape == official.shape == (2, 96, 64)
    assert examples.dtype == np.float32
    np.testing.assert_allclose(examples, official, rtol=0, atol=2e-5)
    np.testing.assert_allclose(times, [[0.0, 0.96], [0.96, 1.92]], atol=1e-6)


def test_vggish_short_and_empty_audio():
    examples, times = vggish_examples(np.full(8000, 0.1, np.float32))
    assert examples.shape == (1, 96, 64)
    np.testing.assert_allclose(times, [[0.0, 0.5]], atol=1e-6)
    examples, times = vggish_examples(np.zeros(0, np.float32))
    assert examples.shape == (0, 96, 64) and times.shape == (0, 2)


def test_vggish_architecture_has_torchvggish_keys():
    state = VGG().state_dict()
    assert list(state) == OFFICIAL_VGGISH_KEYS
    assert state["embeddings.0.weight"].shape == (4096, 512 * 4 * 6)
    assert state["embeddings.4.weight"].shape == (128, 4096)


@pytest.fixture(scope="module")
def vggish_files(tmp_path_factory) -> tuple[Path, VGG, dict]:
    """A weights folder with torchvggish-format files: state dict + PCA params as numpy arrays (seeded)."""
    wdir = tmp_path_factory.mktemp("vggish_weights")
    model = build_seeded(VGG, seed=1).eval()
    torch.save(model.state_dict(), wdir / VGGISH_WEIGHTS.filename)
    rng = np.random.default_rng(0)
    pca = {"pca_eigen_vectors": rng.normal(0, 0.3, (128, 128)), "pca_means": rng.normal(0, 0.1, 128)}
    torch.save(pca, wdir / VGGISH_PCA.filename)
    return wdir, model, pca


def _unchecked(expert):
    """The expert with its files' sha256 blanked: fabricated files can't carry the published digests."""
    expert.weights = tuple(dataclasses.replace(w, sha256="") for w in expert.weights)
    return expert


def test_vggish_published_prefix_rejects_fabricated_file(vggish_files):
    wdir, _, _ = vggish_files
    with pytest.raises(WeightsError, match="sha256 mismatch.*expected 10086976"):
        get_expert("vggish").load(weights_dir=wdir)


def test_vggish_loads_fabricated_checkpoint(vggish_files, media):
    wdir, model, _ = vggish_files
    expert = _unchecked(get_expert("vggish"))
    expert.load(weights_dir=wdir)
    out = expert.extract(media["audio"], None)
    assert out.status == STATUS_OK and out.features.dtype == np.float32 and out.features.shape == (2, 128)
    np.testing.assert_allclose(out.timestamps, [[0.0, 0.96], [0.96, 1.92]], atol=1e-5)
    examples, _ = vggish_examples(load_audio(media["audio"], 16000))
    with torch.no_grad():
        direct = model(torch.from_numpy(examples).unsqueeze(1)).numpy()
    np.testing.assert_allclose(out.features, direct, rtol=1e-4, atol=1e-5)
    again = expert.extract(media["audio"], None)
    np.testing.assert_array_equal(out.features, again.features)
    silent = expert.extract(media["silent"], None)
    assert (
        silent.status == STATUS_EMPTY
        and silent.features.shape == (0, 128)
        and silent.timestamps.shape == (0, 2)
    )


def test_vggish_pca_postprocess(vggish_files, media):
    wdir, model, pca = vggish_files
    expert = _unchecked(get_expert("vggish", {"postprocess": True}))
    assert [w.filename for w in expert.weights] == [VGGISH_WEIGHTS.filename, VGGISH_PCA.filename]
    expert.load(weights_dir=wdir)
    out = expert.extract(media["audio"], None)
    examples, _ = vggish_examples(load_audio(media["audio"], 16000))
    with torch.no_grad():
        raw = model(torch.from_numpy(examples).unsqueeze(1)).double().numpy()
    applied = (pca["pca_eigen_vectors"] @ (raw.T - pca["pca_means"].reshape(-1, 1))).T
    expected = np.round((np.clip(applied, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    np.testing.assert_allclose(out.features, expected, atol=1.0)
    assert np.mean(out.features == expected) > 0.99
    assert out.features.min() >= 0 and out.features.max() <= 255


def test_pca_params_as_tensors_or_numpy1_pickles(tmp_path):
    vectors, means = np.eye(128) * 2.0, np.arange(128.0)
    torch.save(
        {"pca_eigen_vectors": torch.tensor(vectors), "pca_means": torch.tensor(means)}, tmp_path / "t.pth"
    )
    legacy = io.BytesIO()
    torch.save(
        {"pca_eigen_vectors": vectors, "pca_means": means}, legacy, _use_new_zipfile_serialization=False
    )
    (tmp_path / "n.pth").write_bytes(legacy.getvalue().replace(b"numpy._core", b"numpy.core"))
    for name in ("t.pth", "n.pth"):
        params = load_pca_params(tmp_path / name)
        assert params["pca_means"].shape == (128, 1) and params["pca_eigen_vectors"].dtype == torch.float32
        np.testing.assert_array_equal(params["pca_eigen_vectors"].numpy(), vectors)
    torch.save({"pca_eigen_vectors": torch.zeros(3, 3), "pca_means": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="PCA shapes"):
        load_pca_params(tmp_path / "bad.pth")


def test_vggish_rejects_checkpoint_with_wrong_shapes(tmp_path):
    torch.save({"embeddings.4.weight": torch.zeros(64, 4096)}, tmp_path / VGGISH_WEIGHTS.filename)
    with pytest.raises(WeightsError, match="does not fit"):
        _unchecked(get_expert("vggish")).load(weights_dir=tmp_path)
    with pytest.raises(WeightsError, match="missing"):
        _unchecked(get_expert("vggish")).load(weights_dir=tmp_path / "empty")


def test_vggish_parts_equal_whole(media):
    whole = get_expert("vggish")
    whole.load(random_init=True)
    parted = get_expert("vggish", {"part_examples": 1})
    parted.model, parted.post, parted.device = whole.model, whole.post, whole.device
    a, b = whole.extract(media["audio"], None), parted.extract(media["audio"], None)
    assert len(list(parted.iter_prepare(media["audio"], None))) == 2
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_panns_models_import_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    module = panns_models()
    assert hasattr(module, "Cnn14")
    assert "panns_inference" not in sys.modules
    assert not (tmp_path / "panns_data").exists()


@pytest.fixture(scope="module")
def pann_files(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A weights folder holding ``Cnn14_mAP=0.431.pth`` in the official layout ``{'model': state, ...}``."""
    wdir = tmp_path_factory.mktemp("pann_weights")
    model = build_seeded(build_cnn14, seed=1).eval()
    torch.save({"model": model.state_dict(), "iteration": 0}, wdir / CNN14_WEIGHTS.filename)
    return wdir, model


def test_pann_loads_fabricated_checkpoint(pann_files, media):
    wdir, model = pann_files
    expert = get_expert("pann")
    expert.load(weights_dir=wdir)
    out = expert.extract(media["audio"], None)
    wave = load_audio(media["audio"], 32000)
    rows = int(np.ceil(len(wave) / 32000))
    assert out.status == STATUS_OK and out.features.shape == (rows, 2048) and out.features.dtype == np.float32
    ends = np.minimum(np.arange(1, rows + 1), len(wave) / 32000)
    np.testing.assert_allclose(out.timestamps, np.stack([np.arange(rows), ends], 1), atol=1e-4)
    padded = np.zeros(rows * 32000, np.float32)
    padded[: len(wave)] = wave
    with torch.no_grad():
        direct = model(torch.from_numpy(padded.reshape(rows, 32000)))["embedding"].numpy()
    np.testing.assert_allclose(out.features, direct, rtol=1e-4, atol=1e-4)
    again = expert.extract(media["audio"], None)
    np.testing.assert_array_equal(out.features, again.features)
    silent = expert.extract(media["silent"], None)
    assert silent.status == STATUS_EMPTY and silent.features.shape == (0, 2048)
    parted = get_expert("pann", {"part_windows": 1})
    parted.model, parted.device = expert.model, expert.device
    split = parted.extract(media["audio"], None)
    np.testing.assert_allclose(split.features, out.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split.timestamps, out.timestamps)


def test_pann_rejects_checkpoint_that_does_not_fit(tmp_path):
    torch.save({"model": {"fc1.weight": torch.zeros(3, 3)}}, tmp_path / CNN14_WEIGHTS.filename)
    with pytest.raises(WeightsError, match="does not fit"):
        get_expert("pann").load(weights_dir=tmp_path)
    (tmp_path / CNN14_WEIGHTS.filename).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        get_expert("pann").load(weights_dir=tmp_path)


def test_a_corrupt_audio_packet_is_a_warning_not_a_failure(tmp_path):
    clean = make_video(tmp_path / "clean.avi", codec="mpeg4", audio_codec="ac3")
    bad = corrupt_packets(clean, tmp_path / "bad.avi", "audio", count=1)
    expert = get_expert("vggish")
    expert.load(random_init=True)
    good, out = expert.extract(clean, None), expert.extract(bad, None)
    assert out.status == STATUS_OK and out.error.startswith("warning: audio: 1 undecodable packet(s) skipped")
    assert good.error == ""
    np.testing.assert_array_equal(out.timestamps, good.timestamps)
