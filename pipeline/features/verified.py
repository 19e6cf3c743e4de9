"""Which shard files had their data verified, so ``t2v extract`` trusts a shard without reading all of it each run.

A shard's data is known sound when ``ShardWriter`` has just written it, or when it was read back in full
(``pipeline.features.shards.verify_shard``: fletcher32 checksums, offsets, status codes). Its stat at that moment,
``[size, mtime_ns, ctime_ns]``, is then recorded in the sidecar ``.<shard name>.verified`` (JSON) beside it.
``pipeline.features.plan.shard_is_current`` reads a shard's data again only when its stat differs from the record
(the file was written to, replaced or copied: any of these changes its mtime or ctime) or there is no record
(shards written before sidecars existed are verified once). A sidecar per shard, written atomically, needs no lock
when several extract processes write shards of one folder. Corruption that leaves the stat alone (bit rot) is what
``t2v features check`` reads every byte for.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_manifest.atomic import write_text


def verified_record_path(shard: Path) -> Path:
    """The sidecar of ``shard`` (hidden, and outside ``SHARD_GLOB``)."""
    return shard.with_name(f".{shard.name}.verified")


def _stat(shard: Path) -> list[int]:
    st = shard.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def record_verified(shard: Path) -> None:
    """Record ``shard``'s current stat as verified (call right after writing it or reading it back in full)."""
    write_text(verified_record_path(shard), json.dumps(_stat(shard)))


def is_verified(shard: Path) -> bool:
    """True when ``shard``'s stat equals the one recorded when its data was last verified."""
    try:
        return bool(json.loads(verified_record_path(shard).read_text(encoding="utf-8")) == _stat(shard))
    except (OSError, ValueError):
        return False
