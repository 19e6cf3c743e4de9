"""``t2v run``: the whole DAG from videos to metrics, stores, searches and the report, in one Luigi build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi

from workflows.extraction import feature_sets
from workflows.luigi_runner import run_tasks
from workflows.progress import RunProgress
from workflows.run_config import RunConfig
from workflows.tasks_extract import FeatureSet


def _head_task_params(cfg: RunConfig, head: str) -> dict:
    """Parameters of a head's Luigi tasks. With the ablation on, T2VLAD's main run *is* the ablation's "full" run,
    so it is trained once."""
    return {
        "head": head,
        "variant": "full" if head == "t2vlad" and cfg.ablation else "",
        "manifest": cfg.manifest.absolute(),
        "features_root": cfg.features.absolute(),
        "out_root": cfg.runs.absolute(),
        "config_path": cfg.heads[head].absolute() if cfg.heads[head] else None,
        "expert_configs": cfg.expert_options,
        "shard_size": cfg.shard_size,
        "device": cfg.device,
        "weights_dir": cfg.weights_dir.absolute() if cfg.weights_dir else None,
    }


def pipeline_tasks(cfg: RunConfig) -> dict[str, luigi.Task]:
    """Every final task of the run, by name: features, each head's evaluation, ablation, store and report."""
    from workflows.tasks_store import EncodeStore, Report
    from workflows.tasks_train import AblationTable, EvaluateHead

    tasks: dict[str, luigi.Task] = {}
    for fs in feature_sets(
        cfg.manifest,
        cfg.experts,
        cfg.features,
        shard_size=cfg.shard_size,
        device=cfg.device,
        weights_dir=cfg.weights_dir,
        expert_configs=cfg.expert_options,
    ):
        tasks[f"features:{fs.expert}"] = fs
    for head in cfg.heads:
        tasks[f"evaluate:{head}"] = EvaluateHead(**_head_task_params(cfg, head), split=cfg.split)
    if cfg.ablation and "t2vlad" in cfg.heads:
        p = _head_task_params(cfg, "t2vlad")
        tasks["ablation"] = AblationTable(
            manifest=p["manifest"],
            features_root=p["features_root"],
            out_dir=cfg.out.absolute(),
            config_path=p["config_path"],
            split=cfg.split,
            expert_configs=p["expert_configs"],
            shard_size=cfg.shard_size,
            device=cfg.device,
        )
    if cfg.store_head:
        params = {
            **_head_task_params(cfg, cfg.store_head),
            "split": cfg.split,
            "store_root": cfg.stores.absolute(),
        }
        tasks["store"] = EncodeStore(**params)
        ablation_dir = cfg.out.absolute() if "ablation" in tasks else None  # the report waits for the table
        tasks["report"] = Report(**params, report_dir=cfg.report.absolute(), ablation_dir=ablation_dir)
    return tasks


def run_pipeline(cfg: RunConfig, *, scheduler_url: str | None = None) -> dict[str, luigi.Task]:
    """Generate the sample data if configured, then build every task; returns the tasks (all complete)."""
    start = time.perf_counter()
    if cfg.sample is not None:
        from data_manifest.sample.generate import generate_sample_dataset

        generate_sample_dataset(
            cfg.out / "sample",
            n=int(cfg.sample.get("n", 300)),
            seed=int(cfg.sample.get("seed", 0)),
            workers=int(cfg.sample.get("workers", 2)),
        )
    tasks = pipeline_tasks(cfg)
    with RunProgress([t for t in tasks.values() if isinstance(t, FeatureSet)]):
        run_tasks(list(tasks.values()), workers=cfg.workers, scheduler_url=scheduler_url)
    print(f"pipeline complete in {time.perf_counter() - start:.0f} s; outputs under {cfg.out}/")
    return tasks


def print_results(cfg: RunConfig, tasks: dict[str, luigi.Task]) -> None:
    """Metrics of every head on the evaluated split, the ablation table, and the configured searches."""
    from pipeline.runs.evaluate import format_metrics_table

    for name, task in tasks.items():
        if name.startswith("features:"):
            s = json.loads(Path(task.output().path).read_text())
            print(
                f"{task.expert:12s} ok {s['ok']:4d}  empty {s['empty']:4d}  failed {s['failed']:4d}  rows {s['rows']}"
            )
    for name, task in tasks.items():
        if name.startswith("evaluate:"):
            result = json.loads(Path(task.output().path).read_text())
            print(
                format_metrics_table(
                    result["metrics"], title=f"{task.head} on {cfg.split} ({task.run_dir()})"
                )
            )
    if "ablation" in tasks:
        print(Path(tasks["ablation"].output().path).read_text())
    if "store" in tasks and cfg.queries:
        from pipeline.stores.search import Searcher

        searcher = Searcher.open(tasks["store"].store_dir(), device="cpu")
        for query in cfg.queries:
            result = searcher.search(query, k=cfg.k)
            top = result.hits[0]
            print(
                f"search {query!r}: top {top.video_id} score {top.score:.3f}"
                f" ({top.captions[0] if top.captions else 'no caption'})"
            )
    if "report" in tasks:
        print(f"report: {tasks['report'].output().path}")
