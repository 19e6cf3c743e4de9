"""Training and `t2v extract` ask for the same extraction tasks, so a `t2v run` extracts each shard group once, with
every expert together."""

from __future__ import annotations

from pathlib import Path

from workflows.extraction import feature_sets
from workflows.tasks_train import TrainHead

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"rgb": {"fps": 2.0}}


def test_training_requires_the_extract_commands_feature_sets(tmp_path: Path) -> None:
    config = ROOT / "configs" / "sample" / "t2vlad.toml"
    train = TrainHead(
        head="t2vlad",
        manifest=tmp_path / "manifest.jsonl",
        features_root=tmp_path / "features",
        out_root=tmp_path / "runs",
        config_path=config,
        expert_configs=OPTIONS,
        device="cpu",
    )
    wanted = train.feature_sets()
    experts = [t.expert for t in wanted]
    extracted = feature_sets(
        tmp_path / "manifest.jsonl", experts, tmp_path / "features", expert_configs=OPTIONS, device="cpu"
    )
    assert [t.task_id for t in wanted] == [t.task_id for t in extracted]
    assert all(dict(t.together) == dict(wanted[0].together) for t in wanted + extracted)
    assert set(wanted[0].together) == set(experts) == {"rgb", "audio_stats", "ocr", "speech"}
