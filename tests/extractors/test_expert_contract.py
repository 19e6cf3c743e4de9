"""Contract test over the whole registry: declared attributes, config handling, and declared dim == real output dim
on a tiny generated video with random-init weights (same architecture, no weights files)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from data_manifest.schema import VideoRecord
from extractors.base import INPUT_KINDS, Expert, ExpertConfig, ExpertOutput
from extractors.registry import BUILTIN_EXPERTS, expert_class, expert_names, get_expert, register_expert
from extractors.weights import WeightsFile
from pipeline.errors import ConfigError
from pipeline.features.fingerprint import canonical_json, fingerprint
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK
from tests.media import make_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("contract") / "clip.mp4", duration=1.5, size=(96, 64), fps=10)


@pytest.mark.parametrize("name", expert_names())
def test_declared_attributes(name: str) -> None:
    cls = expert_class(name)
    assert cls.name == name
    assert isinstance(cls.version, str) and cls.version
    assert cls.input_kind in INPUT_KINDS
    assert isinstance(cls.dim, int) and cls.dim > 0
    assert isinstance(cls.token_level, bool)
    assert issubclass(cls.Config, ExpertConfig)
    for wf in cls.weights:
        assert isinstance(wf, WeightsFile) and wf.filename
        assert re.fullmatch(r"[0-9a-f]*", wf.sha256), (
            f"{wf.filename}: sha256 must be hex (full or prefix) or ''"
        )
        assert wf.source.startswith(("http://", "https://")) or wf.package, (
            f"{wf.filename}: no official source"
        )


@pytest.mark.parametrize("name", expert_names())
def test_config_keys_and_fingerprint_inputs(name: str) -> None:
    expert = get_expert(name)
    canonical_json(expert.config_dict())
    assert "batch_size" not in expert.config_dict()  # infrastructure, not significant
    with pytest.raises(
        ConfigError, match=f"expert {name}: no_such_option: unknown key \\(known: .*batch_size"
    ):
        get_expert(name, {"no_such_option": 1})
    with pytest.raises(ConfigError, match="batch_size"):
        get_expert(name, {"batch_size": "sixteen"})


@pytest.mark.parametrize("name", expert_names())
def test_random_init_output_matches_declaration(name: str, video: Path) -> None:
    expert = get_expert(name, expert_class(name).smoke_config)
    expert.load("cpu", None, random_init=True)
    assert expert.loaded
    record = VideoRecord("clip", str(video), ["a caption"], "test", duration=1.5, has_audio=True)
    out = expert.extract(video, record)
    assert isinstance(out, ExpertOutput)
    assert out.status in (STATUS_OK, STATUS_EMPTY), out.error
    rows = len(out.features)
    assert out.features.dtype == np.float32 and out.features.shape == (rows, expert.dim)
    assert out.timestamps.dtype == np.float32 and out.timestamps.shape == (rows, 2)
    if out.status == STATUS_OK:
        assert rows >= 1
        assert np.isfinite(out.features).all()
        assert (out.timestamps[:, 0] < out.timestamps[:, 1]).all()
        assert out.timestamps.min() >= 0 and out.timestamps.max() <= 2.0
    if expert.token_level:
        assert out.tokens is not None and len(out.tokens) == rows
    else:
        assert out.tokens is None


def test_registry_rejects_duplicates_and_unknown_names() -> None:
    with pytest.raises(ConfigError, match="already registered"):

        @register_expert
        class Impostor(expert_class("rgb")):  # type: ignore[misc, valid-type]
            pass

    with pytest.raises(ConfigError, match=r"unknown expert 'nope'; known experts: .*rgb"):
        get_expert("nope")


def test_registry_is_lazy_and_lists_builtins() -> None:
    assert {"rgb", "audio_stats", "s3d", "scene"} <= set(expert_names()) <= set(BUILTIN_EXPERTS)
    code = (
        "import sys, extractors.registry as r; r.expert_names(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'transformers', 'timm') "
        "or m.startswith('extractors.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert (
        out.strip()
        == "['extractors.base', 'extractors.experts', 'extractors.registry', 'extractors.weights']"
    )


# canonical JSON and fingerprint (no weights) of default configs, computed before configs moved to pydantic:
# existing feature folders stay valid only while these stay byte-identical
PINNED_DEFAULTS = {
    "rgb": (
        '{"fps":1.0,"image_size":224,"mean":[0.485,0.456,0.406],"num_frames":null,"resize":256,"squash":false,'
        '"std":[0.229,0.224,0.225]}',
        "34dbe0a70753",
    ),
    "audio_stats": (
        '{"fmax":7500.0,"fmin":125.0,"frame_s":0.025,"hop_s":0.01,"log_offset":0.01,"sample_rate":16000,'
        '"window_s":0.96}',
        "d55e3fed2f29",
    ),
    "ocr": (
        '{"box_thresh":0.5,"det_limit_side_len":960,"fps":1.0,"latin_only":true,"max_side":960,'
        '"merge_gap_frames":1,"min_chars":2,"min_score":0.8,"min_side":240,"reuse_diff":1.0,'
        '"text_model":"all-MiniLM-L6-v2"}',
        "b1f8a558ef16",
    ),
    "s3d": (
        '{"clip_len":16,"fps":16.0,"image_size":224,"mean":[0.43216,0.394666,0.37645],"resize":256,'
        '"std":[0.22803,0.22145,0.216989],"stride_s":1.0}',
        "d884d2f1501a",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED_DEFAULTS))
def test_default_config_fingerprint_is_unchanged(name: str) -> None:
    expert = get_expert(name)
    text, pinned = PINNED_DEFAULTS[name]
    assert canonical_json(expert.config_dict()) == text
    assert fingerprint(expert.name, expert.version, expert.config_dict(), "") == pinned
    # a shard stores the config as canonical JSON; reading it back gives the same fingerprint
    again = get_expert(name, json.loads(text))
    assert fingerprint(again.name, again.version, again.config_dict(), "") == pinned


def test_expert_configs_are_frozen_and_keep_infra_options_out_of_the_fingerprint() -> None:
    expert = get_expert("rgb", {"batch_size": 4})
    assert expert.config.batch_size == 4 and "batch_size" not in expert.config_dict()
    with pytest.raises(ValidationError):
        expert.config.fps = 2.0  # type: ignore[misc]


def test_config_types_are_checked() -> None:
    assert get_expert("s3d", {"fps": 8, "mean": [0.5, 0.5, 0.5]}).config.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="expert s3d: fps: Input should be a valid number, got 'fast'"):
        get_expert("s3d", {"fps": "fast"})
    with pytest.raises(ConfigError) as err:
        get_expert("rgb", {"num_frames": "3", "squash": 1, "mean": [0.5, 0.5]})
    assert len(str(err.value).splitlines()) == 3
    with pytest.raises(ConfigError, match="resize"):
        get_expert("rgb", {"resize": 100, "image_size": 224})


def test_expert_is_abstract() -> None:
    with pytest.raises(TypeError):
        Expert()  # type: ignore[abstract]
