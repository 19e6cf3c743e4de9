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

from collections.abc import Callable
from pathlib import Path

from data_manifest.errors import ManifestError
from data_manifest.recipes.activitynet import prepare_activitynet
from data_manifest.recipes.didemo import prepare_didemo
from data_manifest.recipes.generic import prepare_generic
from data_manifest.recipes.lsmdc import prepare_lsmdc
from data_manifest.recipes.msrvtt import prepare_msrvtt
from data_manifest.recipes.msvd import prepare_msvd
from data_manifest.schema import VideoRecord

Recipe = Callable[[Path, Path | None, str | None, bool], list[VideoRecord]]

RECIPES: dict[str, Recipe] = {
    "msrvtt": prepare_msrvtt,
    "msvd": prepare_msvd,
    "didemo": prepare_didemo,
    "activitynet": prepare_activitynet,
    "lsmdc": prepare_lsmdc,
    "generic": prepare_generic,
}


def get_recipe(name: str) -> Recipe:
    """The prepare function of a dataset; unknown names raise ManifestError listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ManifestError([f"unknown dataset {name!r} (known: {', '.join(RECIPES)})"]) from None


__all__ = ["RECIPES", "Recipe", "get_recipe"]
