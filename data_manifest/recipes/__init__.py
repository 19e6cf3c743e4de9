"""Dataset importers ("recipes"), one module per dataset, all with the same contract (lhotse style):

``prepare_<dataset>(annotations: Path, videos_dir: Path | None, split: str | None = None,
keep_missing: bool = False) -> list[VideoRecord]``

``annotations`` is one annotation file or the folder holding the dataset's files under their published names;
``videos_dir`` is searched recursively (missing videos are logged with a count and the first ids, then left out
unless ``keep_missing``; without it paths are the expected names, unchecked). ``split`` is the benchmark
protocol for MSR-VTT (``1k-A``, ``1k-B``, ``full``), the split to assign for ``generic``, and otherwise keeps only
that split. Malformed annotations raise :class:`~data_manifest.errors.ManifestError` naming file and line.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from data_manifest.errors import ManifestError
from data_manifest.schema import VideoRecord

Recipe = Callable[[Path, Path | None, str | None, bool], list[VideoRecord]]


def recipe_names() -> list[str]:
    """Datasets with an importer: the modules of this package (``<name>.py`` defining ``prepare_<name>``), found
    without importing them, so a new importer is one new module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_recipe(name: str) -> Recipe:
    """The prepare function of a dataset; unknown names raise ManifestError listing the known ones."""
    known = recipe_names()
    if name not in known:
        raise ManifestError([f"unknown dataset {name!r} (known: {', '.join(known)})"])
    module = importlib.import_module(f"{__name__}.{name}")
    prepare: Recipe | None = getattr(module, f"prepare_{name}", None)
    if prepare is None:
        raise ManifestError([f"{module.__file__}: defines no prepare_{name}()"])
    return prepare


__all__ = ["Recipe", "get_recipe", "recipe_names"]
