"""Manifest validation: one test per problem kind, all problems in one run, the CLI's exit code and output."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from data_manifest.errors import ManifestError
from data_manifest.schema import MAX_CAPTION_CHARS, MAX_LINE_BYTES
from data_manifest.validate import load_manifest
from tests.manifests import manifest_problems
from workflows.cli import main


def _good(vid: str = "v1", **overrides) -> dict:
    rec = {"video_id": vid, "path": "videos/a.mp4", "captions": ["a red circle moves"], "split": "train"}
    rec.update(overrides)
    return rec


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"\0")
    return tmp_path


def _write(mdir: Path, lines: list[dict | str | bytes], name: str = "m.jsonl") -> Path:
    chunks = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        chunks.append((line if isinstance(line, bytes) else line.encode()) + b"\n")
    path = mdir / name
    path.write_bytes(b"".join(chunks))
    return path


def _delete(key: str) -> dict:
    rec = _good()
    del rec[key]
    return rec


CASES = {
    "malformed json": ('{"video_id": "v1", "path": ', "json: malformed JSON"),
    "not an object": ("[1, 2]", "json: expected a JSON object, got array"),
    "non-utf8": (b'{"video_id": "v\xff1"}', "encoding: not valid UTF-8 (byte 0xff"),
    "missing field": (_delete("split"), "split: missing required field"),
    "wrong type": (_good(captions="a caption"), "captions: expected an array of strings, got string"),
    "bad id chars": (
        _good("a b/c"),
        "video_id: 'a b/c' must be non-empty and use only letters, digits and ._-",
    ),
    "empty caption": (_good(captions=["ok", "  "]), "captions[1]: empty caption"),
    "non-string caption": (_good(captions=[3]), "captions[0]: expected a string, got number"),
    "unknown split": (
        _good(split="dev"),
        "split: unknown split 'dev' (allowed: train, val, test, unlabelled)",
    ),
    "missing path": (_good(path="videos/nope.mp4"), "path: file does not exist:"),
    "bad duration": (_good(duration="10s"), "duration: expected a number >= 0 (seconds), got '10s'"),
    "bad has_audio": (_good(has_audio=1), "has_audio: expected true or false, got 1"),
    "bad width": (_good(width=64.5), "width: expected an integer > 0 (pixels), got 64.5"),
    "bad hash": (_good(content_hash="XYZ"), "content_hash: expected a lowercase hex string, got 'XYZ'"),
    "bad meta": (_good(meta=[1]), "meta: expected an object, got [1]"),
    "id ending in a newline": (_good("v1\n"), "video_id: 'v1\\n' must be non-empty"),
    "NUL in a caption": (
        '{"video_id": "v1", "path": "videos/a.mp4", "captions": ["a\\u0000b"], "split": "train"}',
        "captions[0]: contains NUL (U+0000) at character 2",
    ),
    "lone surrogate in a caption": (
        '{"video_id": "v1", "path": "videos/a.mp4", "captions": ["ok", "x\\ud800"], "split": "train"}',
        "captions[1]: contains a lone surrogate U+D800 at character 2",
    ),
    "lone surrogate in a path": (
        '{"video_id": "v1", "path": "videos/\\udcff.mp4", "captions": [], "split": "train"}',
        "path: contains a lone surrogate U+DCFF at character 8",
    ),
    "NUL in a nested meta value": (_good(meta={"words": ["a", "b\0"]}), "meta.words[1]: contains NUL"),
    "lone surrogate in a key": (
        '{"video_id": "v1", "path": "videos/a.mp4", "captions": [], "split": "train", "\\udfff": 1}',
        "json: key contains a lone surrogate U+DFFF",
    ),
    "caption over the limit": (
        _good(captions=["a" * (MAX_CAPTION_CHARS + 1)]),
        f"captions[0]: {MAX_CAPTION_CHARS + 1} characters, over the limit of {MAX_CAPTION_CHARS}",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_kind(mdir: Path, case: str) -> None:
    line, expected = CASES[case]
    path = _write(mdir, [_good("v0"), line])
    problems = manifest_problems(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:2: ")
    assert expected in problems[0]


def test_caption_at_the_limit_and_escaped_text_are_valid(mdir: Path) -> None:
    path = _write(mdir, [_good(captions=["a" * MAX_CAPTION_CHARS, "caf\u00e9 \U0001f600 \\u0000 is text"])])
    assert manifest_problems(path) == []
    assert load_manifest(path)[0].captions[1] == "caf\u00e9 \U0001f600 \\u0000 is text"


def test_over_long_line_is_reported_without_reading_it_whole(mdir: Path) -> None:
    """A 20 MB line: one problem naming its line, later lines still checked, memory bounded by the limit."""
    path = mdir / "m.jsonl"
    with open(path, "wb") as fh:
        fh.write(json.dumps(_good("v0")).encode() + b"\n")
        fh.write(b'{"video_id": "big", "captions": ["' + b"x" * (20 << 20) + b'"]}\n')
        fh.write(json.dumps(_good("v2", split="dev")).encode() + b"\n")
    tracemalloc.start()
    try:
        problems = manifest_problems(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems == [
        f"{path}:2: line: longer than the limit of {MAX_LINE_BYTES} bytes (not read)",
        f"{path}:3: split: unknown split 'dev' (allowed: train, val, test, unlabelled)",
    ]
    assert peak < 4 * MAX_LINE_BYTES


@pytest.mark.parametrize("extra", [b"", b"\n"])
def test_line_limit_is_exact(mdir: Path, extra: bytes) -> None:
    line = json.dumps(_good("v0")).encode()
    path = mdir / "m.jsonl"
    path.write_bytes(line + extra)
    assert manifest_problems(path, max_line_bytes=len(line)) == []
    assert manifest_problems(path, max_line_bytes=len(line) - 1) == [
        f"{path}:1: line: longer than the limit of {len(line) - 1} bytes (not read)"
    ]


def test_manifest_must_be_a_regular_file(mdir: Path) -> None:
    fifo = mdir / "fifo.jsonl"
    os.mkfifo(fifo)
    assert manifest_problems(fifo) == [f"{fifo}:0: file: cannot read manifest: not a regular file: {fifo}"]
    assert "not a regular file" in manifest_problems(Path("/dev/zero"))[0]


def test_duplicate_id_names_first_line(mdir: Path) -> None:
    path = _write(mdir, [_good("v0"), _good("v1"), _good("v0")])
    assert manifest_problems(path) == [f"{path}:3: video_id: duplicate 'v0' (first on line 1)"]


def test_all_problems_in_one_run(mdir: Path) -> None:
    lines = [
        _good("v0"),
        "{oops",
        _good("v0", split="dev"),
        b"\xfe\xff",
        _delete("path"),
        _good("x y", captions=[""]),
    ]
    path = _write(mdir, lines)
    problems = manifest_problems(path)
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in problems] == ["2", "3", "3", "4", "5", "6", "6"]
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.problems == problems
    assert "(+6 more problems)" in str(err.value)


def test_empty_manifest_and_unreadable_file(mdir: Path) -> None:
    assert manifest_problems(_write(mdir, [])) == [f"{mdir / 'm.jsonl'}:1: file: empty manifest (no videos)"]
    assert "cannot read manifest" in manifest_problems(mdir / "absent.jsonl")[0]


def test_load_valid_manifest(mdir: Path) -> None:
    rec = _good("v0", duration=2.5, fps=10, num_frames=25, width=64, height=48, has_audio=False, codec="h264")
    path = _write(mdir, [rec, "", _good("v1", path=str(mdir / "videos" / "a.mp4"), meta=None, extra_key=1)])
    records = load_manifest(path)
    assert [r.video_id for r in records] == ["v0", "v1"]
    assert records[0].duration == 2.5 and records[0].has_audio is False
    assert records[0].resolve(mdir).is_file() and records[1].resolve(mdir).is_file()
    assert records[1].meta == {"extra": {"extra_key": 1}}


def test_check_paths_off(mdir: Path) -> None:
    path = _write(mdir, [_good(path="videos/nope.mp4")])
    assert manifest_problems(path, check_paths=False) == []


def test_load_grows_linearly(mdir: Path) -> None:
    """A growth guard, not a timing: loading 4x the lines costs well under 16x (quadratic) the time."""
    captions = [f"caption number {i} of a video" for i in range(20)]

    def seconds(n: int) -> float:
        lines = [
            _good(f"video{i}", captions=captions, duration=10.0, fps=25.0, codec="h264") for i in range(n)
        ]
        path = _write(mdir, lines)
        best = float("inf")
        for _ in range(2):  # the better of two: the machine may be busy
            start = time.perf_counter()
            assert len(load_manifest(path)) == n
            best = min(best, time.perf_counter() - start)
        return best

    assert seconds(8_000) / seconds(2_000) < 8.0


def test_cli_reports_problems_without_traceback(mdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(mdir, [_good("v0"), "{", _good("v0", split="x")])
    assert main(["manifest", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[:3] == [
        f"{path}:2: json: malformed JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:3: split: unknown split 'x' (allowed: train, val, test, unlabelled)",
        f"{path}:3: video_id: duplicate 'v0' (first on line 1)",
    ]
    assert lines[3] == "t2v manifest validate: 3 problems"


def test_cli_success_summary(mdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        mdir, [_good("v0"), _good("v1", split="test", captions=["a", "b"]), _good("v2", captions=[])]
    )
    assert main(["manifest", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid: 3 videos (train 2, test 1), 3 captions"


def test_cli_shows_terminal_controls_in_problems_as_escapes(
    mdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = _good("v0", path="videos/\x1b]0;owned\x07.mp4", meta={"\x1b[2J": "a\0b"})
    path = _write(mdir, [hostile])
    assert main(["manifest", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1: meta.\\x1b[2J: contains NUL (U+0000) at character 2" in err
    assert not any(ord(c) < 0x20 and c != "\n" for c in err)
