"""Showing untrusted text (captions, video ids, paths, errors read from files) on a terminal.

Text from manifests, shards and stores may hold terminal controls: ESC sequences change colours or the window
title, CR overwrites the line, BEL rings, C1 controls (U+0080..U+009F) act as ESC sequences in some terminals,
bidirectional overrides reorder what is shown, and lone surrogates cannot even be encoded for output. Every place
that prints such text passes it through :func:`printable` (or :func:`json_text` for JSON output), which writes
those characters as visible escapes (``\\x1b``, ``\\u202e``) and leaves all other text, backslashes included,
unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 and C1 controls and DEL; line/paragraph separators; bidi marks, embeddings, overrides and isolates;
# lone surrogates.
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
# json.dumps escapes C0 inside strings; outside them C0 is only its own indent whitespace, which must stay.
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``str(text)`` with terminal controls, bidi controls and lone surrogates written as visible escapes."""
    return _UNSAFE.sub(_escape, str(text))


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kwargs)`` that is still exact JSON but safe on a terminal.

    JSON escapes C0 controls itself; the other unsafe characters can only occur inside strings, where
    ``\\uXXXX`` is their exact JSON spelling, so parsing the output gives back ``obj`` unchanged.
    """
    return _UNSAFE_IN_JSON.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False, **kwargs)
    )
