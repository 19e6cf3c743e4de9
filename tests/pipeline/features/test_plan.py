"""Shard plan: append-only membership, per-shard digests, current-shard check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError, ShardError
from pipeline.features.plan import ShardPlan, default_plan_path, shard_is_current
from pipeline.features.shards import ShardWriter


def _recs(ids: list[str], hashes: dict[str, str] | None = None) -> list[VideoRecord]:
    hashes = hashes or {}
    return [VideoRecord(v, f"{v}.mp4", [], "train", content_hash=hashes.get(v, f"h-{v}")) for v in ids]


def test_append_only_and_digests(tmp_path: Path) -> None:
    path = default_plan_path(tmp_path, 3)
    assert path.name == "plan-3.json"
    plan = ShardPlan.load(path)
    specs = plan.update(_recs(["a", "b", "c", "d"]), 3)
    assert [s.video_ids for s in specs] == [("a", "b", "c"), ("d",)] and plan.changed
    plan.save(path)
    unchanged = ShardPlan.load(path)
    unchanged.update(_recs(["a", "b", "c", "d"]), 3)
    assert not unchanged.changed
    first = {s.index: s.members_digest for s in specs}

    plan = ShardPlan.load(path)
    specs = plan.update(_recs(["x", "a", "b", "c", "d", "e", "f", "g", "h"]), 3)
    # the partly filled shard 1 is never refilled; new videos start new shards in manifest order
    assert [s.video_ids for s in specs] == [("a", "b", "c"), ("d",), ("x", "e", "f"), ("g", "h")]
    assert {s.index: s.members_digest for s in specs[:2]} == first
    plan.save(path)

    # content change of one video changes only its shard's digest; removed videos stay
    plan = ShardPlan.load(path)
    specs2 = plan.update(_recs(["a", "b", "c", "d", "e", "f", "g", "h"], {"f": "changed"}), 3)
    assert plan.changed
    assert [s.video_ids for s in specs2] == [s.video_ids for s in specs]
    changed = [s.index for s, t in zip(specs, specs2, strict=True) if s.members_digest != t.members_digest]
    assert changed == [2]
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["shards"][0]["members"][0] == ["a", "h-a"]


def test_plan_errors(tmp_path: Path) -> None:
    plan = ShardPlan()
    plan.update(_recs(["a"]), 2)
    with pytest.raises(ConfigError, match="shard_size 2"):
        plan.update(_recs(["a"]), 3)
    with pytest.raises(ConfigError, match="duplicate"):
        ShardPlan().update(_recs(["a", "a"]), 2)
    bad = tmp_path / "plan-2.json"
    bad.write_text("{not json")
    with pytest.raises(ShardError, match="plan-2.json"):
        ShardPlan.load(bad)


def test_shard_is_current(tmp_path: Path) -> None:
    plan = ShardPlan()
    (spec,) = plan.update(_recs(["a", "b"]), 2)
    path = tmp_path / "shard-00000.h5"
    assert not shard_is_current(path, spec)
    with ShardWriter(
        path,
        expert="e",
        fingerprint="f",
        config={},
        weights_sha256="",
        dim=2,
        members_digest=spec.members_digest,
    ) as w:
        for vid in spec.video_ids:
            w.add(vid, np.ones((1, 2)), np.zeros((1, 2)))
    assert shard_is_current(path, spec)
    (spec2,) = plan.update(_recs(["a", "b"], {"b": "new"}), 2)
    assert not shard_is_current(path, spec2)
    path.write_bytes(b"broken")
    assert not shard_is_current(path, spec)
