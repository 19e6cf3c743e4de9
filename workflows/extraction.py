"""Library entry for ``t2v extract``: check inputs up front, build the FeatureSet tasks, summarise the run."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_manifest.errors import T2VError
from data_manifest.validate import load_manifest
from extractors.base import resolve_device
from extractors.registry import expert_names, expert_options_model, get_expert
from extractors.weights import require_weights
from pipeline.config import read_config_file
from pipeline.errors import ConfigError
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import SHARD_GLOB, shard_attrs
from pipeline.runs.record import RunFolder
from workflows.luigi_runner import run_tasks
from workflows.progress import RunProgress
from workflows.tasks_extract import SHARDS_PER_TASK, SKIPPED, FeatureSet, ProbedManifest, forget_completion


def load_expert_configs(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """``{expert: {option: value}}`` from a TOML or JSON file (``[rgb] fps = 2``), every table checked against its
    expert's config; empty without a file."""
    if path is None:
        return {}
    data = read_config_file(path)
    try:
        model = expert_options_model(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    model.parse(data, str(path))
    return data


@dataclass
class ExtractionReport:
    """What a run of the extraction DAG produced, per expert (counts summed over its shards)."""

    features_root: Path
    seconds: float
    experts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = []
        for name, s in self.experts.items():
            videos = s["ok"] + s["empty"] + s["failed"]
            skipped = s.get(SKIPPED, 0)
            out.append(
                f"{name:12s} {s['fingerprint']}  videos {videos}: ok {s['ok']}, empty {s['empty']}, "
                f"failed {s['failed']}; rows {s['rows']}"
                + (
                    f"; model {s['model_s']:.1f} s, waited for input {s['input_wait_s']:.1f} s"
                    if "model_s" in s
                    else ""
                )
                + (f", GPU busy {s['gpu_busy']:.0%}" if "gpu_busy" in s else "")
                + (f"; {skipped} shards skipped: members not in this manifest" if skipped else "")
            )
        total = sum(s["ok"] + s["empty"] + s["failed"] for s in self.experts.values())
        out.append(f"wall time {self.seconds:.1f} s ({total / max(self.seconds, 1e-9):.2f} expert-videos/s)")
        return out


def feature_sets(
    manifest: str | Path,
    experts: list[str],
    features_root: str | Path,
    *,
    shard_size: int = 64,
    device: str = "cpu",
    weights_dir: str | Path | None = None,
    expert_configs: dict[str, dict[str, Any]] | None = None,
    retry_token: str = "",
    shards_per_task: int = SHARDS_PER_TASK,
    parallel: int = 1,
) -> list[FeatureSet]:
    """The FeatureSet tasks for ``experts``, after checking names, configs and weights (before any decoding).

    The experts are extracted together (each video decoded once for all of them). ``shards_per_task``: shards
    extracted by one Luigi task (sets the scheduler's task count, README "Extraction at scale"), lowered so that
    there are at least ``parallel`` (the Luigi workers) tasks when the plan allows."""
    if shards_per_task < 1:
        raise ConfigError(f"shards per task must be >= 1, got {shards_per_task}")
    forget_completion()
    expert_configs = expert_configs or {}
    unknown = sorted(set(expert_configs) - set(experts))
    if unknown:
        raise ConfigError(f"expert config given for experts not requested: {unknown}")
    configs = {}
    for name in experts:
        if name not in expert_names():
            raise ConfigError(f"unknown expert {name!r}; known: {', '.join(expert_names())}")
        expert = get_expert(name, expert_configs.get(name))
        require_weights(expert, weights_dir)
        configs[name] = expert.config_dict()
    tasks = []
    for name, config in configs.items():
        tasks.append(
            FeatureSet(
                manifest=Path(manifest).absolute(),
                features_root=Path(features_root).absolute(),
                expert=name,
                expert_config=config,
                together=configs,
                parallel=parallel,
                shard_size=shard_size,
                shards_per_task=shards_per_task,
                weights_dir=Path(weights_dir).absolute() if weights_dir else None,
                device=resolve_device(device),
                retry_token=retry_token,
            )
        )
    return tasks


def run_extraction(
    manifest: str | Path,
    experts: list[str],
    features_root: str | Path,
    *,
    shard_size: int = 64,
    workers: int = 1,
    device: str = "cpu",
    weights_dir: str | Path | None = None,
    expert_configs: dict[str, dict[str, Any]] | None = None,
    retry_failed: bool = False,
    scheduler_url: str | None = None,
    shards_per_task: int = SHARDS_PER_TASK,
) -> ExtractionReport:
    """Validate the manifest, extract every expert's shards through Luigi, and report the counts.

    With ``workers`` > 1 Luigi forks a process per running shard: call this from a process that has not run torch
    operations yet (as ``t2v extract`` does), since a fork of a process whose OpenMP pool is running can hang.
    """
    start = time.perf_counter()
    tasks = feature_sets(
        manifest,
        experts,
        features_root,
        shard_size=shard_size,
        device=device,
        weights_dir=weights_dir,
        expert_configs=expert_configs,
        retry_token=uuid.uuid4().hex[:12] if retry_failed else "",
        shards_per_task=shards_per_task,
        parallel=workers,
    )
    if not ProbedManifest(
        manifest=Path(manifest).absolute(), features_root=Path(features_root).absolute()
    ).complete():
        load_manifest(manifest, check_paths=False)  # a new or edited manifest: every problem, before any work
    with RunProgress(tasks):
        run_tasks(list(tasks), workers=workers, scheduler_url=scheduler_url)
    report = ExtractionReport(Path(features_root), time.perf_counter() - start)
    for task in tasks:
        report.experts[task.expert] = json.loads(Path(task.output().path).read_text())
    return report


def _has_videos(folder: Path, ids: list[str]) -> bool:
    """Whether a feature folder exists and holds rows (any status) for every id."""
    if not folder.is_dir():
        return False
    reader = FeatureReader(folder)
    return all(v in reader for v in ids)


def extract_for_run(
    run_dir: str | Path,
    manifest: str | Path,
    *,
    features_root: str | Path | None = None,
    workers: int = 1,
    device: str = "auto",
    weights_dir: str | Path | None = None,
    split: str | None = None,
) -> Path:
    """Extract, through the DAG, the features a trained run reads for another manifest; returns the features root.

    Each expert runs with the options recorded in the run's feature shards, so the new videos land in the very
    fingerprint folders the run was trained on. Nothing runs when every video of ``split`` (all videos for None)
    already has rows there.
    """
    saved = RunFolder(run_dir).read()
    root = Path(features_root) if features_root else saved.features_root
    ids = [
        r.video_id for r in load_manifest(manifest, check_paths=False) if split is None or r.split == split
    ]
    folders = [root / e / d.name for e, d in saved.feature_dirs.items()]
    if all(_has_videos(f, ids) for f in folders):
        return root
    configs = {}
    for expert, folder in saved.feature_dirs.items():
        shard = next(folder.glob(SHARD_GLOB), None)
        if shard is None:
            raise T2VError(f"{folder}: no shard to read expert {expert!r}'s options from")
        configs[expert] = json.loads(shard_attrs(shard)["config"])
    tasks = feature_sets(
        manifest,
        list(configs),
        root,
        device=device,
        weights_dir=weights_dir,
        expert_configs=configs,
    )
    with RunProgress(tasks):
        run_tasks(list(tasks), workers=workers)
    return root
