"""Weights files of the experts: where they live, where they come from, and whether they are the right bytes.

Every expert declares its files as ``WeightsFile`` entries (file name, sha256, official source). They are looked up
in one weights folder (``T2V_WEIGHTS_DIR``, else ``./weights``); a file that ships inside a Python package names the
package and its path there, and is used when the weights folder has no copy.

``sha256`` is either the full 64-hex digest or, where the publisher only gives a prefix (torchvision puts the first 8
hex digits of the sha256 in its file names, e.g. ``s3d-d76dad2f.pth``), that prefix: the file is accepted when its
digest starts with it. An empty ``sha256`` means no checksum is published (Places365): the file is only checked for
presence and its actual digest still goes into the feature fingerprint.

Digests are cached by (size, mtime) in ``<weights_dir>/.sha256-cache.json`` so gigabyte files are hashed once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from data_manifest.atomic import write_text
from data_manifest.hashing import sha256_file
from pipeline.errors import WeightsError

WEIGHTS_ENV = "T2V_WEIGHTS_DIR"
CACHE_NAME = ".sha256-cache.json"
STATE_PRESENT, STATE_MISSING, STATE_MISMATCH = "present", "missing", "mismatch"

_cache_lock = threading.Lock()


@dataclass(frozen=True)
class WeightsFile:
    """One file an expert needs. ``package``/``package_path``: where it ships inside an installed package."""

    filename: str
    sha256: str
    source: str
    note: str = ""
    package: str = ""
    package_path: str = ""

    def matches(self, digest: str) -> bool:
        """True when ``digest`` (full hex sha256) fits the declared full digest or published prefix."""
        return digest.startswith(self.sha256.lower())

    @property
    def checksum_kind(self) -> str:
        """'full', 'prefix' or 'none' (no checksum published)."""
        if not self.sha256:
            return "none"
        return "full" if len(self.sha256) == 64 else "prefix"


@dataclass(frozen=True)
class WeightsStatus:
    """Outcome of checking one file: ``state`` is present / missing / mismatch; ``actual_sha256`` when read."""

    expert: str
    file: WeightsFile
    path: Path
    state: str
    actual_sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.state == STATE_PRESENT

    def problem(self) -> str:
        """One line saying what is wrong and what to do ('' when the file is fine)."""
        if self.state == STATE_MISSING:
            return f"{self.path}: missing — download {self.file.source} and place it there"
        if self.state == STATE_MISMATCH:
            return f"{self.path}: sha256 mismatch: expected {self.file.sha256} got {self.actual_sha256}"
        return ""


def default_weights_dir() -> Path:
    """The weights folder: ``$T2V_WEIGHTS_DIR`` if set, else ``./weights``."""
    return Path(os.environ.get(WEIGHTS_ENV) or "weights")


def package_file(wf: WeightsFile) -> Path | None:
    """Path of ``wf`` inside its installed package (without importing the package), or None."""
    if not wf.package:
        return None
    spec = importlib.util.find_spec(wf.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / wf.package_path
    return path if path.is_file() else None


def resolve_file(wf: WeightsFile, weights_dir: str | Path | None) -> Path:
    """Where ``wf`` is read from: the weights folder's copy if present, else the package's, else the expected path."""
    local = Path(weights_dir if weights_dir is not None else default_weights_dir()) / wf.filename
    if local.is_file():
        return local
    shipped = package_file(wf)
    return shipped if shipped is not None else local


def _load_cache(cache_path: Path) -> dict:
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """Hex sha256 of ``path``; cached by (size, mtime_ns) in ``cache_dir/.sha256-cache.json`` when writable."""
    stat = path.stat()
    key = str(path.resolve())
    cache_path = cache_dir / CACHE_NAME if cache_dir is not None else None
    if cache_path is not None:
        entry = _load_cache(cache_path).get(key)
        if (
            isinstance(entry, dict)
            and entry.get("size") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
        ):
            return str(entry["sha256"])
    hexdigest = sha256_file(path)
    if cache_path is not None and cache_path.parent.is_dir():
        with _cache_lock:
            cache = _load_cache(cache_path)
            cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hexdigest}
            with contextlib.suppress(OSError):  # a read-only weights folder just stays uncached
                write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True))
    return hexdigest


def verify_weights(expert: object, weights_dir: str | Path | None = None) -> list[WeightsStatus]:
    """Check every file ``expert`` (class or instance with ``name`` and ``weights``) declares; never raises."""
    wdir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    out = []
    for wf in expert.weights:
        path = resolve_file(wf, wdir)
        if not path.is_file():
            out.append(WeightsStatus(expert.name, wf, path, STATE_MISSING))
            continue
        digest = file_sha256(path, wdir)
        state = STATE_PRESENT if wf.matches(digest) else STATE_MISMATCH
        out.append(WeightsStatus(expert.name, wf, path, state, digest))
    return out


def _checked(expert: object, weights_dir: str | Path | None) -> list[WeightsStatus]:
    statuses = verify_weights(expert, weights_dir)
    problems = [s.problem() for s in statuses if not s.ok]
    if problems:
        raise WeightsError(f"expert {expert.name}: " + "; ".join(problems))
    return statuses


def require_weights(expert: object, weights_dir: str | Path | None = None) -> dict[str, Path]:
    """Paths of all of ``expert``'s files by file name; raises WeightsError naming every bad file and the fix."""
    return {s.file.filename: s.path for s in _checked(expert, weights_dir)}


def weights_sha256(expert: object, weights_dir: str | Path | None = None) -> str:
    """The digest that enters the fingerprint: the files' sha256s joined by '+' ('' for experts without weights).

    Raises WeightsError when a file is missing or mismatching.
    """
    return "+".join(s.actual_sha256 for s in _checked(expert, weights_dir))


def load_torch_file(path: Path) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU: tensors and plain containers only, no arbitrary unpickling.

    Legacy ``.pth.tar`` checkpoints are pickles too; ``weights_only`` refuses anything but tensors, numbers, strings
    and containers, so a file carrying code fails with WeightsError instead of running it.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it holds {found.group(1)}, not only tensors" if found else one_line_error(err)
        raise WeightsError(f"{path}: cannot read as a weights-only torch checkpoint: {what}") from err
    except (RuntimeError, OSError, ValueError, EOFError) as err:
        raise WeightsError(
            f"{path}: cannot read as a weights-only torch checkpoint: {one_line_error(err)}"
        ) from err
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def load_state_dict_checked(model: object, state_dict: dict, path: Path) -> None:
    """Load ``state_dict`` strictly into ``model``; WeightsError naming the file and the first missing/unexpected keys."""
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise WeightsError(f"{path}: does not fit the model: {one_line_error(err)}") from err
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsError(
            f"{path}: does not fit the model: {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )


def one_line_error(err: BaseException) -> str:
    """First line of an exception's message (torch errors are long)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
