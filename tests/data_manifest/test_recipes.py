"""Dataset importers on small annotation files written here in each dataset's published format.

Split lists are scaled down (12 videos instead of 10,000); video files are empty placeholders, since importing
only looks files up. Some videos are deliberately absent to exercise missing-video handling.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from data_manifest.errors import ManifestError
from data_manifest.recipes import get_recipe, msvd, recipe_names
from data_manifest.recipes.activitynet import prepare_activitynet
from data_manifest.recipes.didemo import prepare_didemo
from data_manifest.recipes.generic import prepare_generic
from data_manifest.recipes.lsmdc import movie_of, prepare_lsmdc
from data_manifest.recipes.msrvtt import prepare_msrvtt
from data_manifest.recipes.msvd import prepare_msvd
from data_manifest.schema import VideoRecord, write_manifest
from tests.manifests import manifest_problems


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def _lines(path: Path, items: list[str]) -> None:
    path.write_text("".join(f"{x}\n" for x in items), encoding="utf-8")


def _splits(records: list[VideoRecord]) -> dict[str, int]:
    return dict(Counter(r.split for r in records))


def build_msrvtt(root: Path) -> tuple[Path, Path]:
    """videodatainfo.json (12 videos x 20 captions, sentences in reverse sen_id order) + all split lists."""
    ann, vids = root / "msrvtt", root / "msrvtt_videos"
    ann.mkdir()
    videos = [
        {"category": i % 20, "url": f"https://www.youtube.com/watch?v=id{i}", "video_id": f"video{i}",
         "start time": 137.72, "end time": 149.44, "split": "train" if i < 7 else "validate" if i < 9 else "test",
         "id": i}
        for i in range(12)
    ]  # fmt: skip
    sentences = [{"caption": f"video {i} caption {k}", "video_id": f"video{i}", "sen_id": k * 12 + i}
                 for k in range(20) for i in range(12)][::-1]  # fmt: skip
    info = {"contributor": "Microsoft MSM group", "year": "2016", "version": "1.0"}
    (ann / "videodatainfo.json").write_text(
        json.dumps({"info": info, "videos": videos, "sentences": sentences})
    )
    ids = [f"video{i}" for i in range(12)]
    _lines(ann / "train_list_full.txt", ids[:7])
    _lines(ann / "val_list_full.txt", ids[7:9])
    _lines(ann / "test_list_full.txt", ids[9:])
    _lines(ann / "train_list_jsfusion.txt", ids[:9])
    _lines(ann / "train_list_miech.txt", ids[:8])
    _lines(ann / "test_list_miech.txt", ids[8:])
    with open(ann / "MSRVTT_JSFUSION_test.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for n, i in enumerate(range(9, 12)):
            writer.writerow([f"ret{n}", f"msr{i}", f"video{i}", f"a man, in video {i}, is talking"])
    _touch(
        vids,
        *[f"TrainValVideo/video{i}.mp4" for i in range(9)],
        "TestVideo/video9.mp4",
        "TestVideo/video10.mp4",
    )
    return ann, vids


def build_msvd(root: Path) -> tuple[Path, Path]:
    """AllVideoDescriptions.txt (12 clips x 3 captions) + split lists 8 / 1 / 3; one clip file missing."""
    ann, vids = root / "msvd", root / "msvd_videos"
    ann.mkdir()
    ids = [f"-c{i:02d}xYz_{i}_{i + 7}" for i in range(12)]
    header = ["# Data: Microsoft Research Video Description Corpus", "# Language: English", "#"]
    _lines(
        ann / "AllVideoDescriptions.txt",
        header + [f"{v} someone does thing {k}" for v in ids for k in range(3)],
    )
    _lines(ann / "train_list.txt", ids[:8])
    _lines(ann / "val_list.txt", ids[8:9])
    _lines(ann / "test_list.txt", ids[9:])
    _touch(vids, *[f"YouTubeClips/{v}.avi" for v in ids[:11]])
    return ann, vids


def _didemo_item(name: str, text: str, times: list[list[int]]) -> dict:
    return {"annotation_id": len(text), "description": text, "video": name, "times": times,
            "download_link": f"https://www.flickr.com/video_download.gne?id={name}", "num_segments": 6}  # fmt: skip


def build_didemo(root: Path) -> tuple[Path, Path]:
    """train / val / test_data.json with 6 / 2 / 3 videos, 2 sentences each; one name has '@'."""
    ann, vids = root / "didemo", root / "didemo_videos"
    ann.mkdir()
    names = [f"1234{i}@N0{i}_567{i}_abc{i}.mov" for i in range(11)]
    for split, chosen in (("train", names[:6]), ("val", names[6:8]), ("test", names[8:])):
        items = [_didemo_item(n, f"{n[:6]} sentence {k}.", [[0, 0], [1, 1], [0, 1], [0, 0]]) for n in chosen
                 for k in range(2)]  # fmt: skip
        (ann / f"{split}_data.json").write_text(json.dumps(items, indent=1))
    _touch(vids, *[f"{n}.mp4" for n in names[:10]])
    return ann, vids


def build_activitynet(root: Path) -> tuple[Path, Path]:
    """train.json (5 videos), val_1.json and val_2.json (3 videos each); files with and without 'v_'."""
    ann, vids = root / "activitynet", root / "activitynet_videos"
    ann.mkdir()

    def anns(ids: list[str], tag: str) -> dict:
        return {v: {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81]],
                    "sentences": [f"{tag} {v} starts. ", " Then it ends."]} for v in ids}  # fmt: skip

    train, val = [f"v_tr{i}QOlSCBR" for i in range(5)], [f"v_va{i}Y-x_z" for i in range(3)]
    (ann / "train.json").write_text(json.dumps(anns(train, "train")))
    (ann / "val_1.json").write_text(json.dumps(anns(val, "first")))
    (ann / "val_2.json").write_text(json.dumps(anns(val, "second")))
    _touch(vids, *[f"{v}.mp4" for v in train[:4]], *[f"{v[2:]}.mkv" for v in val])
    return ann, vids


def build_lsmdc(root: Path) -> tuple[Path, Path]:
    """Training (5 clips, one with 2 sentences), val (2) and the 1000-clip public test file (3)."""
    ann, vids = root / "lsmdc", root / "lsmdc_videos"
    ann.mkdir()
    t = "00.00.{s:02d}.849-00.00.{e:02d}.336"

    def row(movie: str, i: int, text: str) -> str:
        clip = f"{movie}_{t.format(s=i, e=i + 5)}"
        return "\t".join(
            [clip, f"00.00.{i:02d}.849", f"00.00.{i + 5:02d}.336", "00.00.00.000", "00.00.05.000", text]
        )

    train = [row("1004_Juno", i, f"SOMEONE sits {i}.") for i in range(5)] + [
        row("1004_Juno", 0, "She smiles.")
    ]
    _lines(ann / "LSMDC16_annos_training.csv", train)
    _lines(
        ann / "LSMDC16_annos_val.csv", [row("0001_American_Beauty", i, f"He looks {i}.") for i in range(2)]
    )
    test = [row("3001_21_JUMP_STREET", i, f"They run {i}.") for i in range(3)]
    _lines(ann / "LSMDC16_challenge_1000_publictect.csv", test)
    clips = [line.split("\t")[0] for line in train[:4] + test]
    _touch(vids, *[f"{movie_of(c)}/{c}.avi" for c in clips])
    return ann, vids


def build_generic(root: Path) -> tuple[Path, Path]:
    """videos/ (5 files, 2 without captions, one name with a space) + captions.csv (one video missing)."""
    ann, vids = root / "generic", root / "generic" / "videos"
    _touch(vids, "a.mp4", "sub/b.mp4", "c d.mp4", "e.webm", "sub/e.mkv")
    rows = [("a", "a dog runs"), ("a.mp4", "a brown dog"), ("sub/b.mp4", "a cat sleeps"), ("c d", "rain, falling"),
            ("gone", "never downloaded")]  # fmt: skip
    with open(ann / "captions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("video_id", "caption"), *rows])
    return ann / "captions.csv", vids


BUILDERS = {
    "msrvtt": build_msrvtt,
    "msvd": build_msvd,
    "didemo": build_didemo,
    "activitynet": build_activitynet,
    "lsmdc": build_lsmdc,
    "generic": build_generic,
}
MISSING = {"lsmdc": 3}


@pytest.mark.parametrize("name", recipe_names())
def test_contract_every_recipe_writes_a_valid_manifest(tmp_path: Path, name: str) -> None:
    ann, vids = BUILDERS[name](tmp_path)
    records = get_recipe(name)(ann, vids, None, False)
    assert records and all(isinstance(r, VideoRecord) for r in records)
    assert len({r.video_id for r in records}) == len(records)
    write_manifest(tmp_path / "m.jsonl", records)
    assert manifest_problems(tmp_path / "m.jsonl") == []
    kept = get_recipe(name)(ann, vids, None, True)
    assert len(kept) == len(records) + MISSING.get(name, 1)  # files each fixture deliberately lacks
    without_videos = get_recipe(name)(ann, None, None, False) if name != "generic" else kept
    assert len(without_videos) == len(kept)


def test_msrvtt_full_from_lists(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ann, vids = build_msrvtt(tmp_path)
    with caplog.at_level(logging.WARNING):
        records = prepare_msrvtt(ann, vids, "full")
    assert _splits(records) == {"train": 7, "val": 2, "test": 2}
    assert "msrvtt: 1 of 12 videos not found" in caplog.text and "video11" in caplog.text
    assert all(len(r.captions) == 20 for r in records)
    assert records[0].captions[:2] == ["video 0 caption 0", "video 0 caption 1"]
    assert records[0].meta["benchmark"] == "msrvtt-full" and records[0].path.endswith(
        "TrainValVideo/video0.mp4"
    )


def test_msrvtt_full_from_split_field_and_single_file(tmp_path: Path) -> None:
    ann, vids = build_msrvtt(tmp_path)
    for name in ("train_list_full.txt", "val_list_full.txt", "test_list_full.txt"):
        (ann / name).unlink()
    (ann / "videodatainfo.json").rename(ann / "MSRVTT_data.json")
    records = prepare_msrvtt(ann / "MSRVTT_data.json", vids, None, keep_missing=True)
    assert _splits(records) == {"train": 7, "val": 2, "test": 3}
    assert records[-1].path.endswith("msrvtt_videos/video11.mp4")


def test_msrvtt_1k_a_uses_the_jsfusion_sentence(tmp_path: Path) -> None:
    ann, vids = build_msrvtt(tmp_path)
    records = prepare_msrvtt(ann, vids, "1k-A", keep_missing=True)
    assert _splits(records) == {"train": 9, "test": 3}
    test = [r for r in records if r.split == "test"]
    assert [r.captions for r in test] == [[f"a man, in video {i}, is talking"] for i in range(9, 12)]
    assert all(len(r.captions) == 20 for r in records if r.split == "train")


def test_msrvtt_1k_b_keeps_first_caption(tmp_path: Path) -> None:
    ann, vids = build_msrvtt(tmp_path)
    records = prepare_msrvtt(ann, vids, "1k-B", keep_missing=True)
    assert _splits(records) == {"train": 8, "test": 4}
    assert [r.captions for r in records if r.split == "test"] == [
        [f"video {i} caption 0"] for i in range(8, 12)
    ]


def test_msrvtt_errors_name_file_and_line(tmp_path: Path) -> None:
    ann, vids = build_msrvtt(tmp_path)
    with pytest.raises(ManifestError, match="unknown benchmark split '1k-C'"):
        prepare_msrvtt(ann, vids, "1k-C")
    _lines(ann / "val_list_full.txt", ["video7", "video99"])
    with pytest.raises(
        ManifestError, match=r"val_list_full.txt:2: video_id: 'video99' is not in the data file"
    ):
        prepare_msrvtt(ann, vids, "full")
    (ann / "videodatainfo.json").write_text('{"videos": [\n  {"video_id": "video0",}\n]}')
    with pytest.raises(ManifestError, match=r"videodatainfo.json:2: json: malformed JSON"):
        prepare_msrvtt(ann, vids, "full")


def test_msvd_split_lists_and_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ann, vids = build_msvd(tmp_path)
    with caplog.at_level(logging.WARNING):
        records = prepare_msvd(ann / "AllVideoDescriptions.txt", vids)
    assert _splits(records) == {"train": 8, "val": 1, "test": 2}
    assert "1 of 12 videos not found" in caplog.text
    assert all(len(r.captions) == 3 for r in records) and records[0].captions[0] == "someone does thing 0"
    assert [r.video_id for r in prepare_msvd(ann, vids, "val")] == ["-c08xYz_8_15"]


def test_msvd_published_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ann, vids = build_msvd(tmp_path)
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        (ann / name).unlink()
    monkeypatch.setattr(msvd, "SPLIT_SIZES", (("train", 8), ("val", 1), ("test", 3)))
    ids = [f"-c{i:02d}xYz_{i}_{i + 7}" for i in range(12)]
    _lines(ann / "youtube_mapping.txt", [f"{v} vid{12 - i}" for i, v in enumerate(ids)])  # reversed order
    records = prepare_msvd(ann, vids, keep_missing=True)
    assert [r.video_id for r in records if r.split == "test"] == ids[:3][::-1]


def test_msvd_json_captions_pickle_refused_and_bad_line(tmp_path: Path) -> None:
    ann, vids = build_msvd(tmp_path)
    (ann / "AllVideoDescriptions.txt").unlink()
    _touch(ann, "raw-captions.pkl")
    with pytest.raises(ManifestError, match="is a pickle and is not read"):
        prepare_msvd(ann, vids)
    ids = [f"-c{i:02d}xYz_{i}_{i + 7}" for i in range(12)]
    (ann / "raw-captions.json").write_text(
        json.dumps({v: [["a", "man", "cooks"], "a man is cooking"] for v in ids})
    )
    records = prepare_msvd(ann / "raw-captions.json", vids, keep_missing=True)
    assert records[0].captions == ["a man cooks", "a man is cooking"] and len(records) == 12
    _lines(ann / "AllVideoDescriptions.txt", ["# header", "-c00xYz_0_7 fine caption", "-c01xYz_1_8"])
    with pytest.raises(
        ManifestError, match=r"AllVideoDescriptions.txt:3: caption: expected 'VIDEOID caption'"
    ):
        prepare_msvd(ann, vids)


def test_didemo_paragraphs_spans_and_ids(tmp_path: Path) -> None:
    ann, vids = build_didemo(tmp_path)
    records = prepare_didemo(ann, vids, keep_missing=True)
    assert _splits(records) == {"train": 6, "val": 2, "test": 3}
    first = records[0]
    assert first.video_id == "12340_N00_5670_abc0.mov" and first.meta["name"] == "12340@N00_5670_abc0.mov"
    assert first.captions == ["12340@ sentence 0. 12340@ sentence 1."]
    assert first.meta["sentences"][0]["start"] == 1.25 and first.meta["sentences"][0]["end"] == 7.5
    assert first.path.endswith("12340@N00_5670_abc0.mov.mp4")
    assert len(prepare_didemo(ann, vids, "test")) == 2  # the last test video has no file


def test_activitynet_paragraphs_and_val_2(tmp_path: Path) -> None:
    ann, vids = build_activitynet(tmp_path)
    records = prepare_activitynet(ann, vids)
    assert _splits(records) == {"train": 4, "test": 3}
    test = [r for r in records if r.split == "test"]
    assert test[0].captions == ["first v_va0Y-x_z starts. Then it ends."] and test[0].path.endswith(
        "va0Y-x_z.mkv"
    )
    assert test[0].meta["sentences"][1] == {"text": "Then it ends.", "start": 17.37, "end": 60.81}
    assert test[0].meta["annotated_duration"] == 82.73
    second = prepare_activitynet(ann / "val_2.json", vids, "val_2")
    assert [r.captions[0].split()[0] for r in second if r.split == "test"] == ["second"] * 3
    assert _splits(prepare_activitynet(ann, vids, "test")) == {"test": 3}


def test_lsmdc_movies_and_splits(tmp_path: Path) -> None:
    ann, vids = build_lsmdc(tmp_path)
    assert movie_of("1004_Juno_00.00.32.849-00.00.38.336") == "1004_Juno"
    records = prepare_lsmdc(ann, vids, keep_missing=True)
    assert _splits(records) == {"train": 5, "val": 2, "test": 3}
    assert records[0].captions == ["SOMEONE sits 0.", "She smiles."]
    assert records[0].path.endswith(f"1004_Juno/{records[0].video_id}.avi")
    assert _splits(prepare_lsmdc(ann, vids)) == {"train": 4, "test": 3}  # 1 train clip + the val movie absent
    (ann / "LSMDC16_annos_val.csv").write_text(
        "0001_American_Beauty_00.00.01.000-00.00.02.000\t00.00.01.000\n"
    )
    with pytest.raises(
        ManifestError, match=r"LSMDC16_annos_val.csv:1: row: expected 6 tab-separated columns"
    ):
        prepare_lsmdc(ann, vids)


def test_generic_ids_splits_and_uncaptioned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ann, vids = build_generic(tmp_path)
    with caplog.at_level(logging.WARNING):
        records = {r.video_id: r for r in prepare_generic(ann, vids)}
    assert "generic: 1 of 6 videos not found" in caplog.text and "gone" in caplog.text
    assert sorted(records) == ["a", "c_d", "e", "sub_b", "sub_e"]
    assert records["a"].captions == ["a dog runs", "a brown dog"] and records["a"].split == "train"
    assert records["c_d"].meta == {"name": "c d.mp4"} and records["c_d"].captions == ["rain, falling"]
    assert records["e"].captions == [] and records["e"].split == "unlabelled"
    assert {r.split for r in prepare_generic(ann, vids, "test")} == {"test"}


def test_generic_json_split_column_and_collisions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vids = tmp_path / "v"
    _touch(vids, "x y.mp4", "x_y.mp4", "z.avi")
    rows = [{"video_id": "x y", "caption": "one", "split": "val"}, {"video_id": "z", "caption": "two"}]
    (tmp_path / "captions.json").write_text(json.dumps(rows))
    with caplog.at_level(logging.WARNING):
        records = {r.video_id: r for r in prepare_generic(tmp_path, vids)}
    assert "sanitise to id 'x_y'" in caplog.text
    suffixed = next(v for v in records if v.startswith("x_y-"))
    assert (
        records[suffixed].split == "val"
        and records["x_y"].split == "unlabelled"
        and records["z"].split == "train"
    )
    (tmp_path / "captions.json").unlink()
    _lines(tmp_path / "captions.csv", ["video,text", "z,two"])
    with pytest.raises(ManifestError, match=r"captions.csv:1: header: missing column\(s\) video_id, caption"):
        prepare_generic(tmp_path, vids)


def test_cli_import_writes_relative_valid_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workflows.cli import main

    ann, vids = build_msrvtt(tmp_path)
    out = tmp_path / "manifest.jsonl"
    args = [
        "manifest",
        "import",
        "msrvtt",
        "--annotations",
        str(ann),
        "--videos",
        str(vids),
        "--split",
        "1k-A",
    ]
    assert main([*args, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: wrote 11 videos (train 9, test 2), 182 captions"
    assert json.loads(out.read_text().splitlines()[0])["path"] == "msrvtt_videos/TrainValVideo/video0.mp4"
    assert manifest_problems(out) == []
    (ann / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key\nret0,msr9\n")
    assert main([*args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "MSRVTT_JSFUSION_test.csv:1: header: missing column(s) video_id, sentence" in err
    assert "Traceback" not in err
