"""Shared fixtures: a real ``luigid`` on 127.0.0.1, a small tmpfs disk and a tiny generated video dataset with a
manifest."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from tests.media import make_video

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LUIGID_CONFIG = """[scheduler]
stable_done_cooldown_secs = 0
record_task_history = false
worker_disconnect_delay = 3
prune_on_get_work = true
[resources]
gpu = 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_luigid(folder: Path) -> Iterator[tuple[str, int]]:
    """Start ``luigid`` bound to 127.0.0.1 on a free port (state and logs in ``folder``); yield (URL, PID); stop it
    by its own PID."""
    port = _free_port()
    logdir = folder / "luigid-logs"
    logdir.mkdir(parents=True)
    cfg = folder / "luigid.cfg"
    cfg.write_text(LUIGID_CONFIG)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg)}
    luigid_bin = Path(sys.executable).with_name("luigid")
    proc = subprocess.Popen(
        [
            str(luigid_bin),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--logdir",
            str(logdir),
            "--state-path",
            str(folder / "luigid-state.pickle"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/api/graph", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"luigid did not start on {url}") from None
            time.sleep(0.2)
    try:
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``, a small real disk for full-disk faults (root only: the test is
    skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def flip_stored_bit(path: Path, dataset: str, chunk: int = 0, at: int = 0) -> None:
    """Flip one bit of the stored bytes of an HDF5 ``dataset`` (chunk ``chunk``, byte ``at`` of it): damaged data
    whose file still opens and whose attributes still read."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
        assert at < info.size
        offset = info.byte_offset + at
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x10]))


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[str]:
    """A real ``luigid`` on 127.0.0.1 for one test; yields its URL."""
    with running_luigid(tmp_path) as (url, _pid):
        yield url


def make_dataset(root: Path, n: int, *, start: int = 0, duration: float = 2.0) -> Path:
    """``n`` tiny captioned videos (every third without audio) and their manifest ``root/manifest.jsonl``."""
    records = []
    for i in range(start, start + n):
        vid = f"clip{i:03d}"
        make_video(
            root / "videos" / f"{vid}.mp4",
            duration=duration,
            fps=8,
            audio=i % 3 != 2,
            source=("testsrc2", "smptebars", "rgbtestsrc")[i % 3],
        )
        records.append(VideoRecord(vid, f"videos/{vid}.mp4", [f"test pattern number {i}"], "train"))
    manifest = root / "manifest.jsonl"
    if start and manifest.exists():
        records = load_manifest(manifest) + records
    write_manifest(manifest, records)
    return manifest


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Six 2 s videos with captions; returns the manifest path."""
    return make_dataset(tmp_path / "data", 6)


@pytest.fixture
def av_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``av.open`` is called with during the test (PyAV still opens them): counts how often decoding
    opens a media file."""
    import av

    opened: list[str] = []
    real = av.open

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting)
    return opened
