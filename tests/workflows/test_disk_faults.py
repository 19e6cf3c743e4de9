"""Full and read-only disks end in one line naming the path and the reason; no traceback, no temp files left."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_dataset, tmpfs
from workflows.extraction import run_extraction

TINY_TRAIN = (
    'experts = ["audio_stats"]\nepochs = 1\nbatch_size = 4\ndevice = "cpu"\n'
    '[head_options]\ndim = 16\nnum_clusters = 2\nff_dim = 32\n[optim]\nname = "adam"\n'
)


def _t2v(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args], capture_output=True, text=True, timeout=600
    )


def _one_line_error(proc: subprocess.CompletedProcess, command: str, path: Path, reason: str) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"t2v {command}: error:")]
    assert len(errors) == 1 and str(path) in errors[0] and reason in errors[0], proc.stderr[-2000:]


def test_extract_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 6)
    with tmpfs(tmp_path / "full", "40k") as root:
        proc = _t2v(
            "extract",
            "--manifest",
            str(manifest),
            "--experts",
            "rgb",
            "--out",
            str(root),
            "--shard-size",
            "2",
        )
        _one_line_error(proc, "extract", root, "No space left on device")
        [line] = [line for line in proc.stderr.splitlines() if line.startswith("t2v extract: error:")]
        shard = re.escape(str(root / "rgb")) + r"/[0-9a-f]+/shard-\d{5}\.h5"  # the shard, not its temp file
        assert re.fullmatch(rf"t2v extract: error: ExtractShards: {shard}: No space left on device", line), (
            line
        )
        assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_read_only_features_train_and_extract(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAIN)
    with tmpfs(tmp_path / "ro", "8m") as root:
        run_extraction(manifest, ["audio_stats"], root, shard_size=4)
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        run = tmp_path / "run"
        proc = _t2v(
            "train", "--head", "t2vlad", "--manifest", str(manifest), "--config", str(config),
            "--features", str(root), "--out", str(run), "--quiet",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert list((run / "text-cache").glob("text-*.h5"))  # the text cache lives under the run folder
        other = make_dataset(tmp_path / "other", 2, start=10)
        proc = _t2v("extract", "--manifest", str(other), "--experts", "audio_stats", "--out", str(root))
        _one_line_error(proc, "extract", root, "Read-only file system")


def test_train_on_a_full_disk_is_one_line(tmp_path: Path) -> None:
    manifest = make_dataset(tmp_path / "data", 4)
    run_extraction(manifest, ["audio_stats"], tmp_path / "features", shard_size=4)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAIN)
    with tmpfs(tmp_path / "full", "60k") as root:
        proc = _t2v(
            "train", "--head", "t2vlad", "--manifest", str(manifest), "--config", str(config),
            "--features", str(tmp_path / "features"), "--out", str(root / "run"), "--quiet",
        )  # fmt: skip
        _one_line_error(proc, "train", root / "run", "No space left on device")
        assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
