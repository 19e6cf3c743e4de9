"""Untrusted text on a terminal: controls become visible escapes, JSON stays exact."""

from __future__ import annotations

import json

import pytest

from data_manifest.display import json_text, printable

HOSTILE = "red\x1b[31m circle\x1b]0;owned\x07\rover\x9b2J\u202eevil\u2028\ud800 café ✓ \\x1b"


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[31m", "\\x1b[31m"),
        ("a\rb\x07\x00\x7f", "a\\x0db\\x07\\x00\\x7f"),
        ("\x85\x9b\x9f", "\\x85\\x9b\\x9f"),
        ("\u202e\u2066\u200f\u2028", "\\u202e\\u2066\\u200f\\u2028"),
        ("\udc80", "\\udc80"),
        ("a\tb\nc", "a\\x09b\\x0ac"),
        ("plain café ✓ 猫 \\n", "plain café ✓ 猫 \\n"),
    ],
)
def test_printable_escapes_controls_only(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_output_holds_no_control_and_encodes() -> None:
    out = printable(HOSTILE)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)
    out.encode("utf-8")  # a lone surrogate would raise here, as it would in print()


def test_json_text_is_exact_json_without_raw_controls() -> None:
    obj = {"video_id": "v\x1b1", "captions": [HOSTILE], "score": 0.5}
    out = json_text(obj, indent=1)
    assert json.loads(out) == obj
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in out)
    out.encode("utf-8")
