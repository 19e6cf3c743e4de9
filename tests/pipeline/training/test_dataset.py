"""RetrievalDataset / collate: row limits, padding masks, availability of missing experts, caption handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline  # noqa: F401
from data_manifest.errors import T2VError
from pipeline.errors import ConfigError
from pipeline.features.reader import FeatureReader, latest_feature_dir
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import RetrievalDataset, collate, make_loader, row_caps, uniform_rows
from tests.train_fixtures import DIMS, make_dataset_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    manifest, features, records = make_dataset_tree(tmp, {"train": 9, "val": 3})
    readers = {e: FeatureReader(latest_feature_dir(features, e)) for e in DIMS}
    return records, readers


def test_uniform_rows_is_deterministic_and_spread():
    assert uniform_rows(5, 30).tolist() == [0, 1, 2, 3, 4]
    idx = uniform_rows(100, 4)
    assert idx.tolist() == [0, 33, 66, 99]


def test_eval_dataset_limits_rows_and_flags_missing(tree):
    records, readers = tree
    ds = RetrievalDataset(records, readers, max_rows=5, split="train", train=False)
    assert len(ds) == 9 and ds.experts == list(DIMS)
    avail = ds.availability()
    # every 3rd video (0, 3, 6) has status "empty" for speech
    assert avail[:, 2].tolist() == [i % 3 != 0 for i in range(9)]
    assert avail[:, :2].all()
    batch = collate([ds[i] for i in range(4)], ds.experts, ds.dims)
    v = batch.video
    assert v.available.shape == (4, 3)
    assert v.available[0, 2].item() is False
    assert not v.masks["speech"][0].any()  # unavailable expert: no real row
    assert (v.features["speech"][0] == 0).all()
    for e, d in DIMS.items():
        assert v.features[e].shape[0] == 4 and v.features[e].shape[2] == d
        assert v.features[e].shape[1] <= 5
        assert v.masks[e].shape == v.features[e].shape[:2]
    # masks mark exactly the real rows: every real row is a stored row of that video
    full = readers["appearance"].get(ds.video_ids[1]).features
    n = int(v.masks["appearance"][1].sum())
    assert n == min(5, len(full))
    assert np.allclose(v.features["appearance"][1, :n].numpy(), full[uniform_rows(len(full), 5)])
    # evaluation gives the same rows every time
    again = collate([ds[1]], ds.experts, ds.dims)
    assert torch.equal(again.video.features["appearance"][0, :n], v.features["appearance"][1, :n])


def test_video_absent_from_reader_is_unavailable(tree):
    records, readers = tree
    extra = [*records[:2]]
    from dataclasses import replace

    extra.append(replace(records[0], video_id="not-extracted"))
    ds = RetrievalDataset(extra, readers, split=None)
    assert ds.availability()[2].tolist() == [False, False, False]
    batch = collate([ds[2]], ds.experts, ds.dims)
    assert not batch.video.available.any() and not any(m.any() for m in batch.video.masks.values())
    with pytest.raises(T2VError, match="3 videos have no 'appearance' features"):
        ds.require_extracted()
    RetrievalDataset(records, readers).require_extracted()  # failed / empty videos are extracted videos


def test_train_sampling_is_random_ordered_subset_seeded_per_epoch(tree):
    records, readers = tree
    ds = RetrievalDataset(records, readers, max_rows=3, split="train", train=True, seed=7)
    long_id = max(range(len(ds)), key=lambda i: len(ds.rows["appearance"][i]))
    full = ds.rows["appearance"][long_id]
    assert len(full) > 3
    ds.set_epoch(1)
    a = [ds[long_id] for _ in range(4)]
    ds.set_epoch(1)
    b = [ds[long_id] for _ in range(4)]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.rows["appearance"], y.rows["appearance"]) and x.caption == y.caption
    for s in a:
        rows = s.rows["appearance"]
        assert len(rows) == 3
        pos = [int(np.flatnonzero((full == r).all(1))[0]) for r in rows]
        assert pos == sorted(pos)  # temporal order kept
        assert s.caption in records[long_id].captions
    assert len({tuple(s.rows["appearance"][:, 0]) for s in a}) > 1  # not always the same rows


def test_queries_cover_every_caption(tree):
    records, readers = tree
    ds = RetrievalDataset(records, readers, split="val")
    texts, cols = ds.queries()
    assert len(texts) == sum(len(r.captions) for r in records if r.split == "val")
    assert cols.tolist() == [i for i in range(3) for _ in range(3)]
    assert texts[3] == ds.records[1].captions[0]


def test_loader_batches_and_uncaptioned_videos_are_dropped(tree):
    records, readers = tree
    from dataclasses import replace

    recs = [*records, replace(records[0], video_id="v000", captions=[], split="train")]
    ds = RetrievalDataset(recs[1:], readers, split="train", train=True)
    assert "v000" not in ds.video_ids
    batches = list(make_loader(ds, 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(b.video_ids) for b in batches) == len(ds)
    assert all(len(b.captions) == len(b.video_ids) for b in batches)


def test_row_caps_default_to_the_public_port_and_fall_back_to_max_rows():
    caps = row_caps(
        TrainConfig(), ["speech", "rgb", "s3d", "flow", "scene", "audio", "vggish", "ocr", "clip"]
    )
    assert caps == {
        "speech": 112,
        "rgb": 51,
        "s3d": 49,
        "flow": 49,
        "scene": 31,
        "audio": 31,
        "vggish": 31,
        "ocr": 30,
        "clip": 30,
    }
    config = TrainConfig.parse({"max_rows": 7, "expert_max_rows": {"ocr": 60}}, "run.toml")
    assert row_caps(config, ["ocr", "speech"]) == {"ocr": 60, "speech": 7}  # the table replaces the defaults
    with pytest.raises(
        ConfigError, match="run.toml: expert_max_rows.ocr: Input should be greater than or equal to 1"
    ):
        TrainConfig.parse({"expert_max_rows": {"ocr": 0}}, "run.toml")
    with pytest.raises(ConfigError, match="run.toml: expert_max_rows.ocr: Input should be a valid integer"):
        TrainConfig.parse({"expert_max_rows": {"ocr": "many"}}, "run.toml")


def test_each_expert_keeps_its_own_row_cap(tree):
    records, readers = tree
    caps = {"appearance": 2, "motion": 4, "speech": 1}
    longest = {e: max(len(readers[e].get(r.video_id).features) for r in records) for e in caps}
    assert all(n > caps[e] for e, n in longest.items())  # every cap bites on some video
    for train in (False, True):
        ds = RetrievalDataset(records, readers, max_rows=caps, split="train", train=train, seed=3)
        ds.set_epoch(1)
        for i in range(len(ds)):
            sample = ds[i]
            for e, cap in caps.items():
                stored = len(readers[e].get(ds.video_ids[i]).features)
                expected = min(cap, stored) if ds.availability()[i, ds.experts.index(e)] else 0
                assert len(sample.rows[e]) == expected, (train, e, i)
    with pytest.raises(T2VError, match="every expert a cap"):
        RetrievalDataset(records, readers, max_rows={"appearance": 2})
