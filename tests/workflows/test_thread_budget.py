"""`t2v run` and `t2v extract` give each task process its share of the cores (workers=2 on a fake 16-core box)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from data_manifest.schema import VideoRecord, write_manifest
from workflows import luigi_runner
from workflows.cli import main
from workflows.tasks_extract import FeatureSet


@pytest.fixture
def budget_seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace ``luigi.build``: record the worker count, the tasks and what a task process applies, then fail."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "")  # restored after the test
    seen: dict[str, Any] = {}

    def fake_build(tasks: list, **kwargs: Any) -> SimpleNamespace:
        before = torch.get_num_threads()
        try:
            seen["applied"] = luigi_runner.apply_thread_budget()  # what every task's run() calls first
            seen["torch"] = torch.get_num_threads()
        finally:
            torch.set_num_threads(before)
        seen.update(workers=kwargs["workers"], tasks=tasks)
        no_task_ran = SimpleNamespace(_add_task_history=[])
        return SimpleNamespace(
            scheduling_succeeded=False, one_line_summary="stopped by the test", worker=no_task_ran
        )

    monkeypatch.setattr(luigi_runner.luigi, "build", fake_build)
    yield seen
    luigi_runner.configure_luigi()  # back to one process on the whole machine


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.jsonl"
    write_manifest(path, [VideoRecord("v0", "v0.mp4", ["a caption"], "train")])
    return path


def test_extract_gives_each_task_process_its_share(tmp_path: Path, budget_seen: dict[str, Any]) -> None:
    argv = ["extract", "--manifest", str(_manifest(tmp_path)), "--experts", "audio_stats", "--workers", "2"]
    assert main(argv) == 1  # the fake build stops the pipeline
    assert budget_seen["workers"] == 2
    assert budget_seen["applied"] == budget_seen["torch"] == 8
    assert os.environ["OMP_NUM_THREADS"] == "8"


def test_run_gives_each_task_process_its_share(tmp_path: Path, budget_seen: dict[str, Any]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        f'out = "{tmp_path / "out"}"\nmanifest = "{_manifest(tmp_path)}"\n'
        '[extract]\nexperts = ["audio_stats"]\nworkers = 2\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    assert main(["run", "--config", str(config)]) == 1
    assert budget_seen["workers"] == 2
    assert budget_seen["applied"] == budget_seen["torch"] == 8
    assert [type(t) for t in budget_seen["tasks"]] == [FeatureSet]
