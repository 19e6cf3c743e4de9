"""`t2v train`, `t2v evaluate`, `t2v ablation`: train a head on cached features, score a run, ablation table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_manifest.errors import T2VError
from pipeline.heads.registry import head_names
from pipeline.runs.record import BEST, RunFolder


def _default_features(manifest: str) -> Path:
    return Path(manifest).resolve().parent / "features"


def cmd_train(args: argparse.Namespace) -> int:
    """Train; prints per-epoch validation lines and the best epoch."""
    from pipeline.threads import apply_threads, threads_per_process
    from pipeline.training.config import load_config
    from pipeline.training.loop import train

    experts = [e.strip() for e in args.experts.split(",") if e.strip()] if args.experts else None
    config = load_config(
        args.config, head=args.head, device=args.device, epochs=args.epochs, seed=args.seed, experts=experts
    )
    if not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    features = Path(args.features) if args.features else _default_features(args.manifest)
    apply_threads(threads_per_process(1))
    result = train(config, args.manifest, features, args.out, progress=not args.quiet)
    print(
        f"{config.head}: {result.epochs_done} epochs in {args.out} (resumed after epoch {result.resumed_from}); "
        f"best epoch {result.best_epoch}, validation t2v GM(R@1,5,10) {result.best_score:.2f}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run's best checkpoint on a split; a table or JSON on stdout."""
    from pipeline.runs.evaluate import evaluate_run, format_metrics_table
    from pipeline.threads import apply_threads, threads_per_process

    RunFolder(args.run_dir).read()  # RunError naming the folder or its config.json
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
    apply_threads(threads_per_process(1))  # after extraction, whose task processes are forked
    result = evaluate_run(
        args.run_dir,
        manifest_path=args.manifest,
        split=args.split,
        features_root=args.features,
        checkpoint=args.checkpoint,
        device=args.device,
        progress=not args.json,
        branches=args.branches,
    )
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        title = f"{args.run_dir} ({args.checkpoint}, epoch {result['epoch']}) on {args.split}: "
        if args.branches != "both":
            title += f"{args.branches} branch only, "
        title += (
            f"{result['num_texts']} queries, {result['num_videos']} videos; selection: {result['selection']}"
        )
        print(format_metrics_table(result["metrics"], title=title))
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    """Train + evaluate a head's ablation variants through Luigi; print ablation.md."""
    from pipeline.training.config import load_config
    from workflows.luigi_runner import run_tasks
    from workflows.tasks_train import AblationTable

    if not Path(args.manifest).is_file():
        raise T2VError(f"{args.manifest}: manifest not found")
    task = AblationTable(
        head=args.head or load_config(args.config).head,
        manifest=args.manifest,
        features_root=args.features or str(_default_features(args.manifest)),
        out_dir=args.out,
        config_path=args.config,
        split=args.split,
        epochs=args.epochs,
        device=args.device or "auto",
    )
    run_tasks([task], workers=1)
    print(Path(task.output().path).read_text(encoding="utf-8"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate`` and ``ablation``."""
    p = sub.add_parser("train", help="train an alignment head on cached features")
    p.add_argument("--head", choices=head_names(), default=None, help="head (default: config's)")
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
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file in the run folder")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: the run's")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument(
        "--branches",
        choices=("both", "local", "global"),
        default="both",
        help="T2VLAD: score with one branch only at test time (the paper's 'w/o global/local alignment')",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "ablation",
        help="train and score a head's ablation variants (T2VLAD: full / no global / ...); print the table",
    )
    p.add_argument(
        "--head", choices=head_names(), default=None, help="head whose variants to train (default: config's)"
    )
    p.add_argument("--manifest", required=True, help="manifest JSONL (train, val and the scored split)")
    p.add_argument("--features", default=None, help="features root (default: 'features' beside the manifest)")
    p.add_argument("--out", required=True, help="folder for runs/, ablation.md and ablation.json")
    p.add_argument("--config", default=None, help="base training config (TOML/JSON)")
    p.add_argument("--split", default="test", help="split the variants are scored on (default: test)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None, help="default: auto")
    p.set_defaults(func=cmd_ablation)
