"""Atomic file writes: every output is written to a temp file in its own folder, fsynced, then renamed.

The temp file of ``<folder>/<name>`` is ``<folder>/.<name>.<pid>.<random>.tmp`` (``tempfile.mkstemp``), so two
writers, in one process or in several, never share one, and readers that list ``<name>`` patterns never see it.
The pid in the name lets ``remove_stale_temps`` delete temps whose writer died (SIGKILL leaves them behind).
Lives in data_manifest because it is the bottom package and writes manifests itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp makes 0600 files, published files get the usual 0666 & ~umask


def temp_path(path: str | Path) -> Path:
    """Create (empty) and return a fresh temp file beside ``path``, unique to this writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def publish(tmp: Path, path: str | Path) -> None:
    """fsync ``tmp`` and rename it onto ``path`` (atomic on one filesystem); ``tmp`` is removed if that fails."""
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s content into (h5py, torch.save, faiss); published on a clean exit,
    deleted on any exception, leaving the old ``path`` untouched."""
    tmp = temp_path(path)
    try:
        yield tmp
    except BaseException as err:
        failed = disk_error(err, Path(path))  # before the temp file's blocks are freed
        tmp.unlink(missing_ok=True)
        if failed is not None:
            raise failed from err
        raise
    publish(tmp, path)


def disk_error(err: BaseException, path: Path) -> OSError | None:
    """The OSError naming ``path`` (the file a temp file is written for) for a write that failed on the disk, else
    None: the user sees the file they asked for, never a temp name. h5py's OSErrors carry HDF5's message (which
    names the temp file), so the reason is the errno's own text. Writers that hide the OS error (h5py and torch
    raise RuntimeError) are recognised by a full filesystem."""
    if isinstance(err, OSError) and err.errno is not None and err.filename is None:
        return OSError(err.errno, os.strerror(err.errno), str(path))
    if not isinstance(err, OSError) and isinstance(err, Exception):
        try:
            full = os.statvfs(path.parent).f_bavail == 0
        except OSError:
            return None
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def temps_of(path: str | Path) -> list[Path]:
    """Temp files of writers of ``path`` (live or dead), sorted."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temps of ``path`` whose writer process is gone; returns them. Temps of live writers stay."""
    removed = []
    prefix = f".{Path(path).name}."
    for tmp in temps_of(path):
        pid_text = tmp.name[len(prefix) :].split(".", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if pid != os.getpid() and not _pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def exclusive_lock(path: str | Path, busy: Exception | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block. With ``busy``, raise it at once
    when another process holds the lock; without, wait for it. The kernel drops the lock when its process ends,
    however it ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            if busy is None:
                raise
            raise busy from None
        yield
    finally:
        os.close(fd)
