"""Luigi tasks after extraction: ``TrainHead`` -> ``EvaluateHead`` -> ``AblationTable`` (DESIGN.md §2).

Run folders are ``<out_root>/<head>/<variant or 'default'>-<run id>/`` where the run id hashes what determines the
result (gokart style): the training config (after ablation options are merged, without ``device``), the feature
folders' fingerprints and the manifest's train/val ids and captions (and test ones for ``selection = "test"``).
Editing the config, an expert's options or a training caption gives a new run folder; editing test captions (unless
the config selects on test) or infrastructure parameters (device, paths of the output root) retrains nothing.

``TrainHead`` requires ``FeatureSet(manifest, features_root, expert, expert_config, shard_size)`` of
``workflows.tasks_extract`` for every expert the config lists; a config without ``experts`` uses every feature
folder already under ``features_root`` (nothing is extracted for it). Its output is ``result.json`` in the run
folder, written only when all epochs are done (``best.pt`` exists from the first epoch on, so it cannot tell a
finished run from a killed one); ``TrainHead.run_dir()`` and ``best_checkpoint()`` give the paths.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import luigi

from pipeline.errors import ConfigError
from pipeline.features.fingerprint import canonical_json
from pipeline.runs.ablation import ABLATION_JSON, ablation_json, ablation_markdown, ablation_rows
from pipeline.runs.record import RunFolder, metrics_name, write_json
from pipeline.training.config import TrainConfig, load_config
from workflows.luigi_runner import T2VTask, apply_thread_budget
from workflows.targets import AtomicTarget


def ablation_variants(head: str) -> dict[str, dict[str, Any]]:
    """The head class's ablation variants (name -> head options); ConfigError when it offers none."""
    from pipeline.heads import head_class

    variants = head_class(head).ablation_variants
    if not variants:
        raise ConfigError(f"head {head!r} offers no ablation variants")
    return variants


def _manifest_digest(manifest: Path, splits: tuple[str, ...]) -> str:
    from data_manifest.validate import load_manifest

    rows = [
        (r.video_id, r.split, r.captions)
        for r in load_manifest(manifest, check_paths=False)
        if r.split in splits
    ]
    return hashlib.sha256(canonical_json(rows).encode()).hexdigest()


class _RunParams(T2VTask):
    """Parameters that identify a training run (see the module docstring)."""

    head = luigi.Parameter(default="t2vlad")
    manifest = luigi.PathParameter()
    features_root = luigi.PathParameter()
    out_root = luigi.PathParameter()
    config_path = luigi.OptionalPathParameter(default=None)
    variant = luigi.Parameter(default="")
    epochs = luigi.OptionalIntParameter(default=None)
    expert_configs = luigi.DictParameter(default={})
    shard_size = luigi.IntParameter(default=64)
    device = luigi.Parameter(default="auto", significant=False)
    weights_dir = luigi.OptionalPathParameter(default=None, significant=False)

    def run_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in TrainHead.get_param_names()}

    def train_config(self) -> TrainConfig:
        """The config file (or defaults) with ``head``, ``epochs``, the variant's head options applied."""
        config = load_config(self.config_path, head=self.head, epochs=self.epochs)
        if self.variant:
            variants = ablation_variants(self.head)
            if self.variant not in variants:
                raise ConfigError(
                    f"unknown ablation variant {self.variant!r} of head {self.head!r} "
                    f"(choose from {', '.join(variants)})"
                )
            config = config.replace(head_options={**config.head_options, **variants[self.variant]})
        return config

    def feature_sets(self, manifest: Path | None = None) -> list[luigi.Task]:
        """The FeatureSet tasks of the config's experts (none when the config lists no experts)."""
        from extractors.registry import get_expert
        from workflows.tasks_extract import FeatureSet

        experts = self.train_config().experts
        # the full options, as `t2v extract` / `t2v run` pass them: the same FeatureSet and ExtractShards tasks
        together = {e: get_expert(e, dict(self.expert_configs.get(e, {}))).config_dict() for e in experts}
        return [
            FeatureSet(
                manifest=manifest or self.manifest,
                features_root=self.features_root,
                expert=e,
                expert_config=together[e],
                together=together,
                shard_size=self.shard_size,
                weights_dir=self.weights_dir,
                device="cpu" if self.device == "auto" else self.device,
            )
            for e in experts
        ]

    def pinned_config(self) -> TrainConfig:
        """``train_config`` with the FeatureSets' fingerprint folders pinned."""
        config = self.train_config()
        dirs = {t.expert: str(t.feature_dir()) for t in self.feature_sets()}
        return config.replace(features={**dirs, **config.features})

    def run_id(self) -> str:
        from pipeline.training.loop import data_splits

        config = self.pinned_config()
        if config.features:
            features = {e: Path(d).name for e, d in config.features.items()}
        else:
            from pipeline.runs.folder import list_experts

            root = Path(self.features_root)
            features = {e: Path(d).name for e, d in _latest_dirs(root, list_experts(root)).items()}
        significant = {
            "config": {k: v for k, v in config.to_dict().items() if k not in ("device", "features")},
            "features": features,
            "data": _manifest_digest(Path(self.manifest), data_splits(config)),
        }
        return hashlib.sha256(canonical_json(significant).encode()).hexdigest()[:12]

    def run_dir(self) -> Path:
        """``<out_root>/<head>/<variant>-<run id>`` (computed once per task instance: it hashes the manifest)."""
        if "_run_dir" not in self.__dict__:
            self._run_dir = Path(self.out_root) / self.head / f"{self.variant or 'default'}-{self.run_id()}"
        return self._run_dir


def _latest_dirs(root: Path, experts: list[str]) -> dict[str, Path]:
    from pipeline.features.reader import latest_feature_dir

    return {e: Path(latest_feature_dir(root, e)) for e in experts}


class TrainHead(_RunParams):
    """Train a head on cached features (``pipeline.training.loop.train``); resumes a killed run in the same folder."""

    def requires(self) -> list[luigi.Task]:
        return self.feature_sets()

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(RunFolder(self.run_dir()).result))

    def best_checkpoint(self) -> Path:
        return RunFolder(self.run_dir()).best

    def run(self) -> None:
        apply_thread_budget()
        from pipeline.training.loop import train

        config = self.pinned_config().replace(device=self.device)
        train(config, self.manifest, self.features_root, self.run_dir())


class EvaluateHead(_RunParams):
    """Metrics of a trained run on ``split`` of ``eval_manifest`` (default: the training manifest), scored with
    ``branches`` (T2VLAD's test-time ablation; ``both`` for every head)."""

    split = luigi.Parameter(default="test")
    eval_manifest = luigi.OptionalPathParameter(default=None)
    branches = luigi.ChoiceParameter(choices=("both", "local", "global"), default="both")

    def requires(self) -> list[luigi.Task]:
        deps: list[luigi.Task] = [TrainHead(**self.run_params())]
        if self.eval_manifest is not None:
            deps += self.feature_sets(Path(self.eval_manifest))
        return deps

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(RunFolder(self.run_dir()).metrics(self.metrics_name())))

    def metrics_name(self) -> str:
        if self.eval_manifest is None:
            return metrics_name(self.split, branches=self.branches)
        digest = _manifest_digest(Path(self.eval_manifest), (self.split,))[:8]
        return metrics_name(self.split, f"{Path(self.eval_manifest).stem}-{digest}", self.branches)

    def run(self) -> None:
        apply_thread_budget()
        from pipeline.runs.evaluate import evaluate_run, format_metrics_table

        result = evaluate_run(
            self.run_dir(),
            manifest_path=self.eval_manifest,
            split=self.split,
            device=self.device,
            out_name=self.metrics_name(),
            branches=self.branches,
        )
        title = f"{self.head} {self.variant or 'default'} {self.split} (selection: {result['selection']})"
        if self.branches != "both":
            title += f" ({self.branches} branch only)"
        print(format_metrics_table(result["metrics"], title=title))


class AblationTable(T2VTask):
    """Train the ablation variants of ``head`` (its class's ``ablation_variants``) and evaluate each row of its
    ``ablation_rows`` (T2VLAD's test-time rows score the ``full`` run with one branch); write
    ``<out_dir>/ablation.json`` (the results, for the report) and ``<out_dir>/ablation.md`` (the table; written
    last, it marks completion)."""

    head = luigi.Parameter()
    manifest = luigi.PathParameter()
    features_root = luigi.PathParameter()
    out_dir = luigi.PathParameter()
    config_path = luigi.OptionalPathParameter(default=None)
    split = luigi.Parameter(default="test")
    epochs = luigi.OptionalIntParameter(default=None)
    expert_configs = luigi.DictParameter(default={})
    shard_size = luigi.IntParameter(default=64)
    device = luigi.Parameter(default="auto", significant=False)

    def requires(self) -> dict[str, EvaluateHead]:
        from pipeline.heads import head_class

        ablation_variants(self.head)  # a head without an ablation table is a one-line ConfigError
        return {
            row: EvaluateHead(
                head=self.head,
                manifest=self.manifest,
                features_root=self.features_root,
                out_root=Path(self.out_dir) / "runs",
                config_path=self.config_path,
                variant=variant,
                epochs=self.epochs,
                expert_configs=self.expert_configs,
                shard_size=self.shard_size,
                device=self.device,
                split=self.split,
                branches=branches,
            )
            for row, (variant, branches) in ablation_rows(head_class(self.head)).items()
        }

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(Path(self.out_dir) / "ablation.md"))

    def run(self) -> None:
        results = {v: json.loads(Path(t.path).read_text())["metrics"] for v, t in self.input().items()}
        title = f"{self.head} ablations, split {self.split} of {Path(self.manifest).name}"
        write_json(Path(self.out_dir) / ABLATION_JSON, ablation_json(results, title))
        text = ablation_markdown(results, title=title)
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
