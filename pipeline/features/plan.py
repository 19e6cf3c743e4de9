"""The shard plan: a stable, append-only assignment of videos to shards (DESIGN.md §3.3), stored as JSON.

- Existing shards never change membership. New videos always start new shards (a partly filled last shard is
  never refilled), so appending to a manifest only adds shards.
- Each shard has ``members_digest`` = sha256 of the canonical JSON of its ``[[video_id, content_hash], ...]``;
  a video whose content hash changes changes only its own shard's digest. Captions are not part of it.
- Videos removed from the manifest stay in the plan (their rows are simply unused).
- A shard file is current for a plan entry when its ``members_digest`` attribute equals the entry's and its data
  is verified (``shard_is_current``).

File format (``version`` 1)::

    {"version": 1, "shard_size": 64,
     "shards": [{"index": 0, "members": [["vid0", "hash0"], ...], "members_digest": "..."}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_manifest.atomic import write_text
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError, ShardError
from pipeline.features.fingerprint import canonical_json
from pipeline.features.shards import CORRUPT_HINT, move_aside, shard_attr, verify_shard
from pipeline.features.verified import is_verified, record_verified

PLAN_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its index (file ``shard-<index:05d>.h5``), member ids in order, and their digest."""

    index: int
    video_ids: tuple[str, ...]
    members_digest: str


def members_digest(members: Iterable[tuple[str, str]]) -> str:
    """sha256 hex of the canonical JSON of ``[[video_id, content_hash], ...]`` (order matters)."""
    return hashlib.sha256(canonical_json([list(m) for m in members]).encode("utf-8")).hexdigest()


def default_plan_path(features_root: str | Path, shard_size: int) -> Path:
    """Conventional plan location: ``<features_root>/plan-<shard_size>.json``."""
    return Path(features_root) / f"plan-{shard_size}.json"


class ShardPlan:
    """Append-only plan. ``load`` (missing file = empty plan) → ``update(records, shard_size)`` → ``save``."""

    def __init__(self, shard_size: int | None = None, shards: list[list[list[str]]] | None = None):
        self.shard_size = shard_size
        self._shards: list[list[list[str]]] = shards or []
        self.changed = False  # whether ``update`` added videos or changed a content hash since ``load``

    @classmethod
    def load(cls, path: str | Path) -> ShardPlan:
        """Read a plan (a missing file = empty plan). Raises ShardError for an unreadable/invalid file."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != PLAN_VERSION:
                raise ShardError(f"{path}: unsupported shard plan version {data.get('version')!r}")
            shards = []
            for i, entry in enumerate(data["shards"]):
                if entry["index"] != i:
                    raise ShardError(f"{path}: shard entry {i} has index {entry['index']}")
                shards.append([[str(vid), str(h)] for vid, h in entry["members"]])
            return cls(int(data["shard_size"]), shards)
        except (ValueError, KeyError, TypeError) as err:
            raise ShardError(f"{path}: invalid shard plan: {err}") from err

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file in the same folder, then rename)."""
        data = {
            "version": PLAN_VERSION,
            "shard_size": self.shard_size,
            "shards": [
                {
                    "index": i,
                    "members": members,
                    "members_digest": members_digest((m[0], m[1]) for m in members),
                }
                for i, members in enumerate(self._shards)
            ],
        }
        write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    def update(self, records: Iterable[VideoRecord], shard_size: int) -> list[ShardSpec]:
        """Record new videos (in new shards) and changed content hashes; return every shard's spec.

        Sets ``changed`` when anything was recorded (so callers save only then).

        A record's content hash is ``content_hash`` or "" when unprobed. Raises ConfigError for a shard size
        that differs from the plan's, or duplicate video ids.
        """
        if shard_size < 1:
            raise ConfigError(f"shard plan: shard_size must be >= 1, got {shard_size}")
        if self.shard_size is not None and self.shard_size != shard_size:
            raise ConfigError(f"shard plan: made with shard_size {self.shard_size}, asked for {shard_size}")
        self.shard_size = shard_size
        where = {m[0]: (s, j) for s, members in enumerate(self._shards) for j, m in enumerate(members)}
        new: list[list[str]] = []
        seen: set[str] = set()
        for rec in records:
            if rec.video_id in seen:
                raise ConfigError(f"shard plan: duplicate video_id {rec.video_id!r}")
            seen.add(rec.video_id)
            content = rec.content_hash or ""
            if rec.video_id in where:
                s, j = where[rec.video_id]
                self.changed |= self._shards[s][j][1] != content
                self._shards[s][j][1] = content
            else:
                new.append([rec.video_id, content])
        self.changed |= bool(new)
        for i in range(0, len(new), shard_size):
            self._shards.append(new[i : i + shard_size])
        return self.specs()

    def specs(self) -> list[ShardSpec]:
        """Every shard of the plan, in index order."""
        return [
            ShardSpec(i, tuple(m[0] for m in members), members_digest((m[0], m[1]) for m in members))
            for i, members in enumerate(self._shards)
        ]


def shard_is_current(path: str | Path, spec: ShardSpec) -> bool:
    """True when the shard file exists, opens, its ``members_digest`` attribute equals the plan's, and its data is
    sound. The data is read in full (``verify_shard``) only when the file changed since it was last verified
    (``pipeline.features.verified``); a shard that fails is moved aside (``<name>.corrupt``, as ``t2v features
    check --repair`` does) with a warning, so it is not current and extract rebuilds it."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if shard_attr(path, "members_digest") != spec.members_digest:
            return False
    except ShardError:
        return False
    if is_verified(path):
        return True
    problems = verify_shard(path)
    if problems:
        try:
            aside = move_aside(path)
        except FileNotFoundError:  # another extract sharing the features root moved it aside first
            return False
        found = "; ".join(problem.removesuffix(f"; {CORRUPT_HINT}") for problem in problems)
        log.warning("%s; moved aside to %s, t2v extract rebuilds it", found, aside.name)
        return False
    record_verified(path)
    return True
