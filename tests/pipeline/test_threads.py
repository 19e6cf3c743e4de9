"""The thread budget: an equal share of the cores per concurrent process, applied to torch and the env."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.threads import apply_threads, threads_per_process


@pytest.mark.parametrize(
    ("workers", "cores", "expected"), [(1, 16, 16), (2, 16, 8), (3, 16, 5), (4, 2, 1), (0, 4, 4)]
)
def test_threads_per_process(workers: int, cores: int, expected: int) -> None:
    assert threads_per_process(workers, cores) == expected


def test_threads_per_process_defaults_to_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    assert threads_per_process(3) == 4


def test_apply_threads_sets_torch_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "99")  # restored by monkeypatch after the test
    before = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
        assert {os.environ[v] for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} == {
            "1"
        }
    finally:
        torch.set_num_threads(before)
