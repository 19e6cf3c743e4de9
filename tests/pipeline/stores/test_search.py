"""`t2v encode` / `t2v search` end to end with the real text encoder: JSON output, T2VLAD explanations, many queries
from stdin with one encoder load, and one-line errors."""

from __future__ import annotations

import io
import json

import h5py
import pytest

import pipeline  # noqa: F401
import pipeline.stores.search as search_module
from data_manifest.schema import MAX_LINE_BYTES
from pipeline.stores.search import Hit, SearchResult
from pipeline.stores.store import EmbeddingStore
from tests.store_fixtures import make_tree, save_run
from workflows.cli import main
from workflows.commands.store import _print_result


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    manifest, features, _ = make_tree(tmp)
    run = save_run(tmp / "run", "t2vlad", manifest, features)
    assert main(["encode", str(run), "--out", str(tmp / "store"), "--quiet"]) == 0
    return tmp / "store"


def test_search_json_with_explanations(store, capsys):
    capsys.readouterr()
    assert main(["search", str(store), "a red circle", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "a red circle" and len(result["hits"]) == 3
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(result["expert_weights"].values()) - 1) < 1e-5
    for hit in result["hits"]:
        assert hit["captions"] and hit["explanation"]["top_centers"]
        parts = sum(e["contribution"] for e in hit["explanation"]["experts"].values())
        assert parts <= hit["score"] + 1.0  # contributions are finite numbers
    assert result["timings"]["encode_s"] > 0
    assert result["index"] == {"kind": "flat", "exact": True, "recall_at_10": 1.0}  # 15 videos: flat by size


def _stdin(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def test_search_many_queries_from_stdin_loads_encoder_once(store, capsys, monkeypatch):
    loads = []
    original = search_module.QueryEncoder.__init__

    def counting(self, *args, **kwargs):
        loads.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(search_module.QueryEncoder, "__init__", counting)
    monkeypatch.setattr("sys.stdin", _stdin(b"a red circle\n\nthe star is blue\na green square\n"))
    capsys.readouterr()
    assert main(["search", str(store), "-", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("query: ") == 3 and len(loads) == 1
    assert " 1. " in out and "centers #" in out and "; index flat)" in out


def test_search_errors_are_one_line(store, tmp_path, capsys):
    capsys.readouterr()
    assert main(["search", str(store), "   "]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "t2v search: error: empty query"
    assert main(["search", str(tmp_path / "nope"), "a query"]) == 1
    assert "no embedding store" in capsys.readouterr().err
    with h5py.File(EmbeddingStore(store).h5_path, "a") as f:
        digest = f.attrs["text_model_digest"]
        f.attrs["text_model_digest"] = "0" * 64
    try:
        assert main(["search", str(store), "a query"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("t2v search: error: ") and "text model 000000000000" in err
        assert len(err.splitlines()) == 1  # checked before the encoder is loaded
    finally:
        with h5py.File(EmbeddingStore(store).h5_path, "a") as f:
            f.attrs["text_model_digest"] = digest


def test_bad_stdin_lines_are_reported_and_the_session_goes_on(store, capsys, monkeypatch):
    too_long = b"word " * (MAX_LINE_BYTES // 5 + 1)
    data = b"a red circle\n\xff\xfe bad bytes\n" + too_long + b"\nthe star is blue\n"
    monkeypatch.setattr("sys.stdin", _stdin(data))
    capsys.readouterr()
    assert main(["search", str(store), "-", "-k", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("query: ") == 2 and 'query: "the star is blue"' in captured.out
    assert "Traceback" not in captured.err
    assert [line for line in captured.err.splitlines() if line.startswith("stdin:")] == [
        "stdin:2: query is not valid UTF-8 (byte 0xff at column 1); skipped",
        f"stdin:3: query longer than {MAX_LINE_BYTES} bytes; skipped",
    ]


def _hostile_result() -> SearchResult:
    caption = "a red\x1b]0;owned\x07 circle\rgone\x9b2J\u202e"
    hit = Hit(1, "vid\x1b[31m", 0.5, 0, "test", [caption], "videos/a.mp4")
    return SearchResult("red\x1b[2J", [hit], None, {"total_s": 0.01})


def test_search_output_shows_terminal_controls_as_escapes(capsys):
    capsys.readouterr()
    _print_result(_hostile_result(), as_json=False)
    out = capsys.readouterr().out
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in out)
    assert 'query: "red\\x1b[2J"' in out
    assert "vid\\x1b[31m  [test]  a red\\x1b]0;owned\\x07 circle\\x0dgone\\x9b2J\\u202e" in out


def test_search_json_output_is_exact_and_safe(capsys):
    result = _hostile_result()
    capsys.readouterr()
    _print_result(result, as_json=True)
    out = capsys.readouterr().out
    assert json.loads(out) == json.loads(json.dumps(result.to_dict()))
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in out)
