"""One decoding pass feeding several experts: each expert's prepared parts of one video from a single decode.

``prepare_pass`` asks every expert for its media request (frames at its sampling and size, or audio at its rate)
and its per-video preparer, decodes the video once for all of them (``pipeline.media.decode.decode_pass``: each
needed frame decoded once, converted once per output size; the audio track decoded once, resampled per rate) and
hands each decoded batch to the preparer of the expert that asked for it. A stream that fails ends the video for
the experts reading that stream only; a MediaError raised by one preparer ends that expert's video only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from data_manifest.schema import VideoRecord
from pipeline.errors import MediaError
from pipeline.media.decode import StreamFailed, decode_pass

if TYPE_CHECKING:
    from extractors.base import Expert, Prepared, Preparer


def prepare_pass(
    experts: Sequence[Expert], path: Path, record: VideoRecord
) -> Iterator[tuple[int, Prepared | MediaError]]:
    """Decode ``path`` once for all ``experts``: ``(expert index, prepared part)`` in decoding order, or
    ``(expert index, MediaError)`` once when that expert's video ends in an error (NoAudioError: no audio)."""
    preparers: dict[int, Preparer] = {}
    for i, expert in enumerate(experts):
        try:
            preparers[i] = expert.preparer(path, record)
        except MediaError as err:
            yield i, err
    alive = set(preparers)
    if not alive:
        return

    def parts_of(
        i: int, step: Callable[[], Iterable[Prepared]]
    ) -> Iterator[tuple[int, Prepared | MediaError]]:
        try:
            parts = list(step())
        except MediaError as err:
            alive.discard(i)
            yield i, err
            return
        for part in parts:
            yield i, part

    ids = sorted(alive)
    for piece in decode_pass(path, [experts[i].media_request() for i in ids]):
        if isinstance(piece, StreamFailed):
            for k in piece.requests:
                if ids[k] in alive:
                    alive.discard(ids[k])
                    yield ids[k], piece.error
            continue
        k, data = piece
        if ids[k] in alive:
            yield from parts_of(ids[k], functools.partial(preparers[ids[k]].push, data))
    for i in sorted(alive):
        yield from parts_of(i, preparers[i].finish)
