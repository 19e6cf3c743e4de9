"""Embedding stores under faults: kill -9 during a first or an incremental encode, a full disk, a flipped byte in
the index, a search or a second encode while an encode runs. The store always holds one complete version."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.stores.store as store_module
from pipeline.errors import StoreError
from pipeline.heads import TextBatch
from pipeline.stores.search import Searcher
from pipeline.stores.store import EmbeddingStore, encode_store, load_trained_run
from tests.conftest import tmpfs
from tests.store_fixtures import TEXT_DIM, make_tree, save_run

ROOT = Path(__file__).resolve().parents[3]

# Runs encode_store in a child process whose second row write announces itself on stdout and then waits until the
# file argv[3] exists (never, for a kill).
_SLOW_ENCODE = """
import os, sys, time
import pipeline.stores.store as s
write, calls = s._write_rows, [0]
def slow(*args, **kwargs):
    write(*args, **kwargs)
    calls[0] += 1
    if calls[0] == 2:
        print("writing", flush=True)
        while not os.path.exists(sys.argv[3]):
            time.sleep(0.05)
s._write_rows = slow
s.encode_store(sys.argv[1], sys.argv[2], batch_size=2, progress=False)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    manifest, features, records = make_tree(tmp)
    run_dir = save_run(tmp / "run", "t2vlad", manifest, features, seed=3)
    return tmp, run_dir, records


def _start_slow_encode(run_dir: Path, out: Path, go: Path) -> subprocess.Popen:
    """A child encode of every video into ``out``, returned once it is writing rows (and waiting for ``go``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_ENCODE, str(run_dir), str(out), str(go)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    return child


def _kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


def _search(run_dir: Path, out: Path) -> list[np.ndarray]:
    """Top-3 rows of two random queries over the store's current version (opened anew)."""
    run = load_trained_run(run_dir)
    g = torch.Generator().manual_seed(0)
    queries = TextBatch(
        tokens=torch.randn(2, 5, TEXT_DIM, generator=g), mask=torch.ones(2, 5, dtype=torch.bool)
    )
    text_emb = run.head.encode_text(queries).detach()
    return [rows for rows, _ in Searcher(EmbeddingStore(out), run).rank(text_emb, k=3)]


def test_kill_during_first_encode_then_rerun_completes(tree):
    tmp, run_dir, records = tree
    out = tmp / "first"
    _kill(_start_slow_encode(run_dir, out, tmp / "never"))
    assert _temps(out)  # the killed writer's temps, nothing published
    with pytest.raises(StoreError, match="no embedding store here"):
        EmbeddingStore(out)
    summary = encode_store(run_dir, out, progress=False)
    assert summary.added == len(records) and _temps(out) == []
    assert [len(rows) for rows in _search(run_dir, out)] == [3, 3]


def test_kill_during_incremental_encode_keeps_previous_version(tree):
    tmp, run_dir, records = tree
    out = tmp / "incremental"
    encode_store(run_dir, out, split="test", progress=False)
    before = _search(run_dir, out)
    _kill(_start_slow_encode(run_dir, out, tmp / "never"))
    assert _temps(out) and len(EmbeddingStore(out)) == 9
    for got, expected in zip(_search(run_dir, out), before, strict=True):
        np.testing.assert_array_equal(got, expected)
    summary = encode_store(run_dir, out, progress=False)
    assert (summary.added, summary.num_videos) == (len(records) - 9, len(records)) and _temps(out) == []
    assert EmbeddingStore(out).index().ntotal == int(EmbeddingStore(out).complete.sum())


def test_search_works_while_an_encode_runs(tree):
    tmp, run_dir, records = tree
    out, go = tmp / "concurrent", tmp / "go"
    encode_store(run_dir, out, split="test", progress=False)
    opened = Searcher(EmbeddingStore(out), load_trained_run(run_dir))
    child = _start_slow_encode(run_dir, out, go)
    try:
        during = _search(run_dir, out)  # a reader opening the store now gets the previous version, unlocked
        assert len(EmbeddingStore(out)) == 9 and [len(rows) for rows in during] == [3, 3]
        with pytest.raises(StoreError, match="another t2v encode is writing this store"):
            encode_store(run_dir, out, progress=False)  # encodes of one store take turns
    finally:
        go.touch()
        assert child.stdout is not None and child.stdout.read().strip() == "done"
        assert child.wait() == 0
    assert len(EmbeddingStore(out)) == len(records)
    assert len(opened.store.embeddings(slice(0, 9)).centers) == 9  # the opened version stays readable
    with pytest.raises(StoreError, match="another encode published version 2 after this one read version 1"):
        with store_module._new_version(out, opened.store.version):  # an encode that read version 1 first
            pass
    encode_store(run_dir, out, progress=False)
    versions = sorted(p.name for p in out.iterdir() if p.suffix in (".h5", ".faiss"))
    assert versions == ["embeddings-2.h5", "embeddings-3.h5", "index-2.faiss", "index-3.faiss"]
    assert (out / "CURRENT").read_text() == "3\n"


# h5py raises OSError from a failed write, RuntimeError from a failed flush or close (the errno in its message)
_HDF5_FLUSH_FAILED = (
    "Unable to synchronously flush file (file write failed: time = Wed Dec  2 00:21:42 2026\n, filename = "
    "'x.tmp', file descriptor = 4, errno = 28, error message = 'No space left on device', buf = 0x1, "
    "total write size = 2848, bytes this sub-write = 2848, offset = 4096)"
)


# faiss raises RuntimeError from a failed write_index, the OS reason at the end of its message
_FAISS_WRITE_FAILED = (
    "Error in void faiss::write_index(const Index*, IOWriter*, int) at /project/faiss/impl/index_write.cpp:499: "
    "Error: 'ret == (size * 4)' failed: write error in /x/.index.faiss.1.a.tmp: 65491 != 512000 "
    "(No space left on device)"
)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        RuntimeError(_HDF5_FLUSH_FAILED),
        RuntimeError(_FAISS_WRITE_FAILED),
    ],
)
def test_full_disk_during_incremental_encode_keeps_previous_version(tree, tmp_path, monkeypatch, failure):
    _, run_dir, _ = tree
    out = tmp_path / "store"
    encode_store(run_dir, out, split="test", progress=False)
    before = sorted(p.name for p in out.iterdir())
    write = store_module._write_rows

    def full_disk(*args, **kwargs):
        write(*args, **kwargs)
        raise failure

    monkeypatch.setattr(store_module, "_write_rows", full_disk)
    with pytest.raises(StoreError) as caught:
        encode_store(run_dir, out, progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"{out}: could not write a new store version ([Errno 28] "
    )
    assert message.endswith("the store keeps version 1")
    assert sorted(p.name for p in out.iterdir()) == before  # temps removed, nothing published
    assert len(EmbeddingStore(out)) == 9 and [len(rows) for rows in _search(run_dir, out)] == [3, 3]


def test_flipped_index_byte_is_one_line_error_and_encode_rebuilds(tree):
    tmp, run_dir, _ = tree
    out = tmp / "flipped"
    encode_store(run_dir, out, progress=False)
    store = EmbeddingStore(out)
    expected = store.index().ntotal
    data = bytearray(store.index_path.read_bytes())
    data[-5] ^= 0xFF
    store.index_path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as caught:
        EmbeddingStore(out).index()
    message = str(caught.value)
    assert (
        message.startswith(f"{store.index_path}: index does not match its recorded sha256")
        and "\n" not in message
    )
    summary = encode_store(run_dir, out, progress=False)
    assert summary.added == 0 and EmbeddingStore(out).index().ntotal == expected


@pytest.mark.parametrize(
    ("case", "spare"),
    [
        ("first", None),  # a first encode on a disk far too small
        ("copy", 12 << 10),  # the previous version's copy fits, new rows do not
        (
            "rows",
            store_module.HDF5_CACHES + (32 << 10),
        ),  # the copy fits and leaves the caches' room, rows do not
    ],
)
def test_encode_command_on_a_full_disk_exits_with_one_line(tree, tmp_path, case, spare):
    _, run_dir, _ = tree
    with tmpfs(tmp_path / "disk", "80m") as disk:
        out = disk / "store"
        if case == "first":
            (disk / "filler").write_bytes(bytes(shutil.disk_usage(disk).free - (100 << 10)))
        else:
            encode_store(run_dir, out, split="test", progress=False)
            room = (out / "embeddings-1.h5").stat().st_size + (out / "index-1.faiss").stat().st_size + spare
            (disk / "filler").write_bytes(bytes(shutil.disk_usage(disk).free - room))
        before = sorted(p.name for p in out.iterdir()) if case != "first" else []
        proc = subprocess.run(
            [sys.executable, "-m", "workflows.cli", "encode", str(run_dir), "--out", str(out), "--quiet"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]  # the CLI's error exit, not a crash at exit (rc 139)
        kept = "no store was written" if case == "first" else "the store keeps version 1"
        [line] = proc.stderr.splitlines()
        assert re.fullmatch(
            rf"t2v encode: error: {re.escape(str(out))}: could not write a new store version \(\[Errno 28\] "
            rf"No space left on device \(\d+ MiB free, writing needs \d+ MiB\)\); {kept}",
            line,
        ), line
        if case == "first":
            assert [p.name for p in out.iterdir()] == ["encode.lock"]
        else:
            assert sorted(p.name for p in out.iterdir()) == before
            assert len(EmbeddingStore(out)) == 9 and [len(rows) for rows in _search(run_dir, out)] == [3, 3]


def test_other_errors_during_an_encode_are_not_reported_as_write_failures(tree, monkeypatch):
    tmp, run_dir, _ = tree
    out = tmp / "bug"
    monkeypatch.setattr(store_module, "_write_rows", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        encode_store(run_dir, out, progress=False)
    assert [p.name for p in out.iterdir()] == ["encode.lock"]


def test_store_written_before_versions_opens_and_moves_to_versions(tree):
    tmp, run_dir, records = tree
    out = tmp / "legacy"
    encode_store(run_dir, out, split="test", progress=False)
    (out / "embeddings-1.h5").rename(out / "embeddings.h5")  # the layout of stores written before versions
    (out / "index-1.faiss").rename(out / "index.faiss")
    (out / "CURRENT").unlink()
    assert EmbeddingStore(out).version == 0 and [len(rows) for rows in _search(run_dir, out)] == [3, 3]
    encode_store(run_dir, out, progress=False)
    assert len(EmbeddingStore(out)) == len(records) and (out / "embeddings.h5").is_file()  # kept one encode
    encode_store(run_dir, out, split="test", progress=False)
    names = sorted(p.name for p in out.iterdir() if p.suffix in (".h5", ".faiss"))
    assert names == ["embeddings-1.h5", "embeddings-2.h5", "index-1.faiss", "index-2.faiss"]
    assert [len(rows) for rows in _search(run_dir, out)] == [3, 3]
