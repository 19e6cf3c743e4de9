"""A central luigid that dies during `t2v extract --scheduler-url`, or never answers, ends in one line naming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.features.shards import SHARD_GLOB
from tests.conftest import make_dataset, running_luigid

ROOT = Path(__file__).resolve().parents[2]
# Luigi retries a scheduler call 3 times, 30 s apart, before giving up: 2 tries 1 s apart keep the test short
FAST_RETRIES = "[core]\nrpc-retry-attempts = 2\nrpc-retry-wait = 1\n"


@pytest.mark.parametrize("fault", ["killed mid-run", "unreachable"])
def test_lost_scheduler_is_one_line_naming_it(tmp_path: Path, fault: str) -> None:
    manifest = make_dataset(tmp_path / "data", 12)
    features = tmp_path / "features"
    config = tmp_path / "client.cfg"
    config.write_text(FAST_RETRIES)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LUIGI_CONFIG_PATH": str(config),
        "PYTHONWARNINGS": "ignore::UserWarning",  # Luigi warns that no task consumes [core] rpc-retry-*
    }
    with running_luigid(tmp_path / "luigid") as (url, pid):
        if fault == "unreachable":
            url = url.rsplit(":", 1)[0] + ":9"  # the discard port: nothing listens
        args = ["--manifest", str(manifest), "--experts", "rgb", "--out", str(features), "--shard-size", "1"]
        extract = subprocess.Popen(
            [sys.executable, "-m", "workflows.cli", "extract", *args, "--scheduler-url", url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if fault == "killed mid-run":
            deadline = time.monotonic() + 120
            while not list(features.rglob(SHARD_GLOB)) and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)
        _, stderr = extract.communicate(timeout=300)
    assert extract.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "This progress looks" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("t2v extract: error:")]
    assert errors == [
        f"t2v extract: error: {url}: the Luigi scheduler does not answer (luigid stopped or unreachable); "
        "outputs already written are kept: re-run once it answers"
    ], stderr[-2000:]
    assert stderr.splitlines()[-1] == errors[0]
    if fault == "killed mid-run":
        assert 0 < len(list(features.rglob(SHARD_GLOB))) < 12  # killed after the first shard, before the last
