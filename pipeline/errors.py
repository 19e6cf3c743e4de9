"""Error types of t2v. Every message names the file or video and the problem; the CLI prints it on one line."""

from __future__ import annotations

from data_manifest.errors import T2VError


class MediaError(T2VError):
    """A video or audio file could not be decoded (missing, corrupt, truncated, no stream)."""


class NoAudioError(MediaError):
    """The media file has no audio track: audio experts record status "empty", not a failure."""


class WeightsError(T2VError):
    """A weights file is missing, has the wrong sha256, or does not fit the model."""


class ShardError(T2VError):
    """A feature shard is unreadable, or does not match its manifest or fingerprint."""


class ConfigError(T2VError):
    """A configuration file or option is invalid."""


class RunError(ConfigError):
    """A training run folder is missing, or its ``config.json`` or a checkpoint is missing or unreadable."""


class StoreError(T2VError):
    """An embedding store is missing or incompatible with the query side."""


__all__ = [
    "T2VError",
    "MediaError",
    "NoAudioError",
    "WeightsError",
    "ShardError",
    "ConfigError",
    "RunError",
    "StoreError",
]
