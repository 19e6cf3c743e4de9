"""`t2v train`, `t2v evaluate`, `t2v ablation`: train a head on cached features, score a run, ablation table."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from data_manifest.errors import T2VError


def _default_features(manifest: str) -> Path:
    return Path(manifest).resolve().parent / "features"


def cmd_train(args: argparse.Namespace) -> int:
    """Train; prints per-epoch validation lines and the best epoch."""
    from pipeline.training.config import load_config
    from pipeline.training.loop import train

    config = load_config(args.config, head=args.head, device=args.device, epochs=args.epochs, seed=args.seed)
    if args.experts:
        config = replace(config, experts=[e.strip() for e in args.experts.split(",") if e.strip()])
    if not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    features = Path(args.features) if args.features else _default_features(args.manifest)
    result = train(config, args.manifest, features, args.out, progress=not args.quiet)
    print(
        f"{config.head}: {result.epochs_done} epochs in {args.out} (resumed after epoch {result.resumed_from}); "
        f"best epoch {result.best_epoch}, validation t2v GM(R@1,5,10) {result.best_score:.2f}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run's best checkpoint on a split; a table or JSON on stdout."""
    from pipeline.runs.evaluate import evaluate_run, format_metrics_table

    if not Path(args.run_dir).is_dir():
        raise T2VError(f"{args.run_dir}: run folder not found")
    if args.manifest is not None and not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    if args.manifest is not None:  # another manifest: extract what the run reads for its videos (DAG, cached)
        from workflows.extraction import extract_for_run

        extract_for_run(
            args.run_dir,
            args.manifest,
            features_root=args.features,
            device=args.device or "auto",
            split=args.split,
        )
    result = evaluate_run(
        args.run_dir,
        manifest_path=args.manifest,
        split=args.split,
        features_root=args.features,
        checkpoint=args.checkpoint,
        device=args.device,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        title = f"{args.run_dir} ({args.checkpoint}, epoch {result['epoch']}) on {args.split}: "
        title += f"{result['num_texts']} queries, {result['num_videos']} videos"
        print(format_metrics_table(result["metrics"], title=title))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    """Train + evaluate the T2VLAD variants through Luigi; print ablation.md."""
    import luigi

    from workflows.tasks_train import AblationTable

    if not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    task = AblationTable(
        manifest=args.manifest,
        features_root=args.features or str(_default_features(args.manifest)),
        out_dir=args.out,
        config_path=args.config,
        split=args.split,
        epochs=args.epochs,
        device=args.device or "auto",
    )
    result = luigi.build([task], local_scheduler=True, workers=1, detailed_summary=True)
    if not result.scheduling_succeeded or result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        raise T2VError(f"ablation failed: {result.summary_text.strip().splitlines()[-1]}")
    print(Path(task.output().path).read_text(encoding="utf-8"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``ablation``."""
    p = sub.add_parser("train", help="train an alignment head on cached features")
    p.add_argument(
        "--head", choices=("t2vlad", "cret", "mgfi"), default=None, help="head (default: config's)"
    )
    p.add_argument("--manifest", required=True, help="manifest JSONL (train split trains, val split selects)")
    p.add_argument(
        "--config",
        default=None,
        help="TOML or JSON training config (examples: configs/sample/; default: the paper's settings)",
    )
    p.add_argument("--features", default=None, help="features root (default: 'features' beside the manifest)")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a matching last.pt)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: the config's")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--experts", default=None, help="comma-separated experts (default: config's, else all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars / per-epoch lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="retrieval metrics of a trained run (R@1/5/10/50, MdR, MnR)")
    p.add_argument("run_dir", help="run folder written by t2v train")
    p.add_argument("--manifest", default=None, help="manifest to evaluate (default: the training manifest)")
    p.add_argument("--split", default="test", help="split of the manifest to score (default: test)")
    p.add_argument("--features", default=None, help="features root (default: the folders the run trained on)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in the run folder")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: the run's")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "ablation",
        help="train and score the T2VLAD variants (full / no global / no local / ...); print the table",
    )
    p.add_argument("--manifest", required=True, help="manifest JSONL (train, val and the scored split)")
    p.add_argument("--features", default=None, help="features root (default: 'features' beside the manifest)")
    p.add_argument("--out", required=True, help="folder for runs/, ablation.md and ablation.json")
    p.add_argument("--config", default=None, help="base training config (TOML/JSON)")
    p.add_argument("--split", default="test", help="split the variants are scored on (default: test)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: auto")
    p.set_defaults(func=cmd_ablation)
