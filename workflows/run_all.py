"""``t2v run``: the whole DAG from videos to metrics, stores, searches and the report, in one Luigi build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi

from pipeline.errors import ConfigError
from workflows.extraction import feature_sets
from workflows.luigi_runner import run_tasks
from workflows.progress import RunProgress
from workflows.run_config import RunConfig
from workflows.tasks_extract import FeatureSet


def ablation_head(cfg: RunConfig) -> str | None:
    """The head whose ablation variants ``ablation = true`` trains: the one of ``[train] heads`` whose class offers
    variants (T2VLAD); None when the ablation is off or no head offers any; ConfigError when several do."""
    if not cfg.train.ablation:
        return None
    from pipeline.heads import head_class

    offering = [h for h in cfg.train.heads if head_class(h).ablation_variants]
    if len(offering) > 1:
        raise ConfigError(
            f"[train] ablation: heads {offering} all offer ablation variants; keep one of them in this run "
            "and use `t2v ablation --head` for the others"
        )
    return offering[0] if offering else None


def _head_task_params(cfg: RunConfig, head: str) -> dict:
    """Parameters of a head's Luigi tasks. With the ablation on, the ablation head's main run *is* the
    ablation's first variant's run (e.g. T2VLAD's "full"), so it is trained once."""
    variant = ""
    if head == ablation_head(cfg):
        from pipeline.heads import head_class

        variant = next(iter(head_class(head).ablation_variants))
    return {
        "head": head,
        "variant": variant,
        "manifest": cfg.manifest_path.absolute(),
        "features_root": cfg.features.absolute(),
        "out_root": cfg.runs.absolute(),
        "config_path": cfg.head_config_path(head).absolute() if cfg.head_config_path(head) else None,
        "expert_configs": cfg.extract.options,
        "shard_size": cfg.extract.shard_size,
        "device": cfg.extract.device,
        "weights_dir": cfg.weights_dir.absolute() if cfg.weights_dir else None,
    }


def pipeline_tasks(cfg: RunConfig) -> dict[str, luigi.Task]:
    """Every final task of the run, by name: features, each head's evaluation, ablation, store and report."""
    from workflows.tasks_store import EncodeStore, Report
    from workflows.tasks_train import AblationTable, EvaluateHead

    tasks: dict[str, luigi.Task] = {}
    for fs in feature_sets(
        cfg.manifest_path,
        cfg.extract.experts,
        cfg.features,
        shard_size=cfg.extract.shard_size,
        device=cfg.extract.device,
        weights_dir=cfg.weights_dir,
        expert_configs=cfg.extract.options,
        parallel=cfg.extract.workers,
    ):
        tasks[f"features:{fs.expert}"] = fs
    for head in cfg.train.heads:
        tasks[f"evaluate:{head}"] = EvaluateHead(**_head_task_params(cfg, head), split=cfg.train.split)
    ablated = ablation_head(cfg)
    if ablated is not None:
        p = _head_task_params(cfg, ablated)
        tasks["ablation"] = AblationTable(
            head=ablated,
            manifest=p["manifest"],
            features_root=p["features_root"],
            out_dir=cfg.out_dir.absolute(),
            config_path=p["config_path"],
            split=cfg.train.split,
            expert_configs=p["expert_configs"],
            shard_size=cfg.extract.shard_size,
            device=cfg.extract.device,
        )
    if cfg.store.head:
        params = {
            **_head_task_params(cfg, cfg.store.head),
            "split": cfg.store_split,
            "store_root": cfg.stores.absolute(),
        }
        tasks["store"] = EncodeStore(**params)
        # the report of the ablated head waits for its table
        ablation_dir = cfg.out_dir.absolute() if ablated == cfg.store.head else None
        tasks["report"] = Report(**params, report_dir=cfg.report.absolute(), ablation_dir=ablation_dir)
    return tasks


def run_pipeline(cfg: RunConfig, *, scheduler_url: str | None = None) -> dict[str, luigi.Task]:
    """Generate the sample data if configured, then build every task; returns the tasks (all complete)."""
    start = time.perf_counter()
    if cfg.sample is not None:
        from data_manifest.sample.generate import generate_sample_dataset

        generate_sample_dataset(
            cfg.out_dir / "sample", n=cfg.sample.n, seed=cfg.sample.seed, workers=cfg.sample.workers
        )
    tasks = pipeline_tasks(cfg)
    with RunProgress([t for t in tasks.values() if isinstance(t, FeatureSet)]):
        run_tasks(list(tasks.values()), workers=cfg.extract.workers, scheduler_url=scheduler_url)
    print(f"pipeline complete in {time.perf_counter() - start:.0f} s; outputs under {cfg.out_dir}/")
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
                    result["metrics"], title=f"{task.head} on {cfg.train.split} ({task.run_dir()})"
                )
            )
    if "ablation" in tasks:
        print(Path(tasks["ablation"].output().path).read_text())
    if "store" in tasks and cfg.search.queries:
        from pipeline.stores.search import Searcher

        searcher = Searcher.open(tasks["store"].store_dir(), device="cpu")
        for query in cfg.search.queries:
            result = searcher.search(query, k=cfg.search.k)
            top = result.hits[0]
            print(
                f"search {query!r}: top {top.video_id} score {top.score:.3f}"
                f" ({top.captions[0] if top.captions else 'no caption'})"
            )
    if "report" in tasks:
        print(f"report: {tasks['report'].output().path}")
