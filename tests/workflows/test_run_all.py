"""``t2v run`` task wiring: the ablation trains the variants of the head whose class offers them."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.heads.cret import CRETHead
from pipeline.heads.t2vlad import T2VLADHead
from workflows.run_all import pipeline_tasks
from workflows.run_config import RunConfig


def _config(tmp_path, store_head, ablation=True):
    return RunConfig.parse(
        {
            "out": str(tmp_path),
            "manifest": str(tmp_path / "manifest.jsonl"),
            "extract": {"experts": ["audio_stats"]},
            "train": {"heads": {"cret": "", "t2vlad": ""}, "ablation": ablation},
            "store": {"head": store_head},
        },
        "test run file",
    )


def test_ablation_follows_the_head_class(tmp_path):
    tasks = pipeline_tasks(_config(tmp_path, store_head="t2vlad"))
    assert tasks["ablation"].head == "t2vlad"
    assert tasks["evaluate:t2vlad"].variant == "full"  # the main run is the ablation's first variant
    assert tasks["evaluate:cret"].variant == ""
    assert tasks["report"].ablation_dir == tmp_path.absolute()
    other = pipeline_tasks(_config(tmp_path, store_head="cret"))
    assert other["report"].ablation_dir is None  # the CRET report does not wait for T2VLAD's table
    plain = pipeline_tasks(_config(tmp_path, store_head="t2vlad", ablation=False))
    assert "ablation" not in plain and plain["evaluate:t2vlad"].variant == ""


def test_two_heads_with_variants_are_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(CRETHead, "ablation_variants", T2VLADHead.ablation_variants)
    with pytest.raises(ConfigError, match=r"heads \['cret', 't2vlad'\] all offer ablation variants"):
        pipeline_tasks(_config(tmp_path, store_head="t2vlad"))
