"""The run folder record: config.json round trip in the head's expert order, and one-line RunErrors naming the
file for a missing folder, a missing or garbled config.json, a missing or truncated checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError, RunError
from pipeline.runs.record import BEST, LAST, RunFolder, SavedRun, metrics_name
from pipeline.runs.trained import load_trained_run
from pipeline.training.config import TrainConfig
from workflows.cli import main

EXPERTS = ["speech", "appearance"]  # not alphabetical: the head's order must survive sorted JSON keys


def _saved(tmp_path: Path) -> SavedRun:
    return SavedRun(
        config=TrainConfig(head="t2vlad", experts=EXPERTS, device="cpu"),
        manifest=tmp_path / "manifest.jsonl",
        features_root=tmp_path / "features",
        feature_dirs={e: tmp_path / "features" / e / "0123456789ab" for e in EXPERTS},
        expert_dims={"speech": 7, "appearance": 5},
        text_dim=384,
        text_model_digest="abc",
        selection="val",
        run_hash="h",
    )


def test_round_trip_keeps_the_head_expert_order(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    saved = _saved(tmp_path)
    folder.write(saved)
    on_disk = json.loads(folder.config_path.read_text(encoding="utf-8"))
    assert list(on_disk["expert_dims"]) == ["appearance", "speech"]  # sorted keys on disk
    back = folder.read()
    assert back == saved
    assert list(back.expert_dims) == list(back.feature_dirs) == EXPERTS


def test_checkpoint_round_trip_and_names(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.save_checkpoint({"epoch": 3, "head": {"w": torch.ones(2)}, "text": None}, LAST)
    state = folder.load_checkpoint(LAST)
    assert state["epoch"] == 3 and torch.equal(state["head"]["w"], torch.ones(2))
    assert folder.last == tmp_path / "last.pt" and folder.best == tmp_path / BEST
    assert folder.metrics(metrics_name("test")) == tmp_path / "metrics-test.json"
    assert metrics_name("test", "other-1234abcd") == "metrics-test-other-1234abcd.json"


def _broken(tmp_path: Path, case: str) -> tuple[RunFolder, str]:
    """A run folder broken as ``case`` says, and the file its error must name."""
    folder = RunFolder(tmp_path / "run")
    if case == "no folder":
        return folder, f"{folder.path}: run folder not found"
    folder.write(_saved(tmp_path))
    if case == "no config":
        folder.config_path.unlink()
        return folder, f"{folder.config_path}: missing"
    if case == "garbled config":
        folder.config_path.write_text('{"config": {', encoding="utf-8")
        return folder, f"{folder.config_path}: not valid JSON"
    if case == "config without key":
        data = json.loads(folder.config_path.read_text(encoding="utf-8"))
        del data["text_dim"]
        folder.config_path.write_text(json.dumps(data), encoding="utf-8")
        return folder, f"{folder.config_path}: missing key 'text_dim'"
    if case == "invalid train config":
        data = json.loads(folder.config_path.read_text(encoding="utf-8"))
        data["config"]["epochs"] = "many"
        folder.config_path.write_text(json.dumps(data), encoding="utf-8")
        return folder, f"{folder.config_path}: invalid run config"
    if case == "no checkpoint":
        return folder, f"{folder.best}: checkpoint missing"
    folder.save_checkpoint({"epoch": 1, "head": {"w": torch.zeros(1000)}, "text": None}, BEST)
    data = folder.best.read_bytes()
    folder.best.write_bytes(data[: len(data) // 2])
    return folder, f"{folder.best}: unreadable checkpoint"


CASES = [
    "no folder",
    "no config",
    "garbled config",
    "config without key",
    "invalid train config",
    "no checkpoint",
    "truncated checkpoint",
]


@pytest.mark.parametrize("case", CASES)
def test_broken_folder_is_one_run_error_naming_the_file(tmp_path: Path, case: str) -> None:
    folder, expected = _broken(tmp_path, case)
    with pytest.raises(RunError) as info:
        folder.read()
        folder.load_checkpoint(BEST)
    assert isinstance(info.value, ConfigError)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    with pytest.raises(RunError, match="^" + expected.replace("(", r"\(")):
        load_trained_run(folder.path)


@pytest.mark.parametrize("case", ["no folder", "garbled config", "truncated checkpoint"])
def test_cli_prints_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder, expected = _broken(tmp_path, case)
    assert main(["encode", str(folder.path), "--out", str(tmp_path / "store"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("t2v encode: error:") and expected in err and "\n" not in err
