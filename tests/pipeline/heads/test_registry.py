"""The head registry: names found without importing torch, duplicates and bad declarations refused, a head defined
anywhere usable by name once registered."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from pipeline.errors import ConfigError
from pipeline.heads import registry
from pipeline.heads.base import RetrievalHead
from pipeline.heads.cret import CRETConfig, CRETHead, CRETVideoEmbedding
from tests.pipeline.heads.conftest import TEXT_DIM, random_batches


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that the test may add to."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_head_names_import_no_torch_and_no_head():
    code = (
        "import sys; from pipeline.heads import head_names; print(head_names()); "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('pipeline.heads.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['cret', 'mgfi', 't2vlad']", "['pipeline.heads.registry']"]


def test_unknown_head_is_one_line():
    with pytest.raises(ConfigError) as err:
        registry.head_class("mmt")
    assert "\n" not in str(err.value) and "known heads: ['cret', 'mgfi', 't2vlad']" in str(err.value)


def test_a_head_registered_elsewhere_is_known_by_name(scratch_registry):
    @registry.register_head
    class SharperCRET(CRETHead):
        name: ClassVar[str] = "sharper_cret"

    assert "sharper_cret" in registry.head_names()
    head = registry.build_head("sharper_cret", {"dim": 8, "num_heads": 2, "ff_dim": 16}, {"rgb": 4}, TEXT_DIM)
    assert isinstance(head, SharperCRET) and head.build_args()["name"] == "sharper_cret"
    video, text = random_batches({"rgb": 4}, experts=["rgb"])
    assert head.similarity(head.encode_text(text), head.encode_video(video)).shape == (4, 4)


def test_duplicates_and_bad_declarations_are_refused(scratch_registry):
    with pytest.raises(ConfigError, match="already registered by pipeline.heads.cret"):

        @registry.register_head
        class OtherCRET(CRETHead):
            name: ClassVar[str] = "cret"

    with pytest.raises(ConfigError, match="non-empty class attribute 'name'"):
        registry.register_head(type("Nameless", (CRETHead,), {}))
    with pytest.raises(
        ConfigError, match=r"missing class attribute\(s\) \['config_class', 'video_embedding'\]"
    ):
        registry.register_head(type("Bare", (RetrievalHead,), {"name": "bare"}))
    with pytest.raises(ConfigError, match="not a RetrievalHead subclass"):
        registry.register_head(type("NotAHead", (), {"name": "plain"}))
    with pytest.raises(ConfigError, match="must live in pipeline.heads.misplaced"):
        registry.register_head(
            type("Misplaced", (CRETHead,), {"name": "misplaced", "__module__": "pipeline.heads.cret"})
        )


def test_config_class_and_embedding_come_from_the_class():
    assert registry.head_config_class("cret") is CRETConfig
    assert registry.head_class("cret").video_embedding is CRETVideoEmbedding
    with pytest.raises(ConfigError, match="cret: centres: unknown key"):
        registry.head_config_class("cret").parse({"centres": 3}, "cret")
