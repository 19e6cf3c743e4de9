"""Atomic writes: unique temp per writer, old file kept and no temp left on failure, stale temps removed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from data_manifest.atomic import atomic_path, remove_stale_temps, temp_path, temps_of, write_bytes, write_text


def test_concurrent_writers_never_share_a_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    barrier = threading.Barrier(8)
    seen: list[Path] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        with atomic_path(target) as tmp:
            with lock:
                seen.append(tmp)
            barrier.wait()  # all eight temps exist at once
            tmp.write_text(f"writer {i}", encoding="utf-8")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8
    assert all(p.parent == tmp_path and p.name.startswith(".out.json.") for p in seen)
    assert target.read_text(encoding="utf-8") in {f"writer {i}" for i in range(8)}
    assert temps_of(target) == []


def test_failing_writer_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_published_file_has_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    write_text(target, "héllo")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text(encoding="utf-8") == "héllo"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temps_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "shard-00000.h5"
    dead = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from data_manifest.atomic import temp_path; print(temp_path({str(target)!r}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()
    live = temp_path(target)
    assert temps_of(target) == sorted([Path(dead), live])
    assert remove_stale_temps(target) == [Path(dead)]
    assert temps_of(target) == [live]
