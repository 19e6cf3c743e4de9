"""Luigi tasks after training: ``EncodeStore`` (TrainHead -> embedding store) and ``Report`` (store + metrics ->
HTML report), DESIGN.md §2 / §3.4.

``EncodeStore`` writes ``<store_root>/<head>-<variant or 'default'>-<run id>[-<split>]/`` (``store_root`` defaults
to ``<out_root>/../stores``) and, last, ``store.json`` with a digest of the split's (video id, content hash)
rows. It is complete while that digest matches the manifest: adding videos to the manifest makes it run again, and
``pipeline.stores.store.encode_store`` then appends only the new videos. ``Report`` writes
``<report_dir or <out_root>/../report>/index.html``; with ``ablation_dir`` it also requires the head's
``AblationTable`` written there and shows it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import luigi

from pipeline.features.fingerprint import canonical_json
from workflows.luigi_runner import apply_thread_budget
from workflows.targets import AtomicTarget
from workflows.tasks_train import AblationTable, EvaluateHead, TrainHead, _RunParams


def split_digest(manifest: Path, split: str | None) -> str:
    """sha256 of the (video id, content hash) rows of ``split`` (all videos for None) of a manifest."""
    from data_manifest.validate import load_manifest

    rows = [
        (r.video_id, r.content_hash or "")
        for r in load_manifest(manifest, check_paths=False)
        if split is None or r.split == split
    ]
    return hashlib.sha256(canonical_json(rows).encode()).hexdigest()


class _StoreParams(_RunParams):
    split = luigi.OptionalParameter(default="test")
    store_root = luigi.OptionalPathParameter(default=None)
    index_kind = luigi.Parameter(default="auto")
    nlist = luigi.IntParameter(default=1024)
    nprobe = luigi.IntParameter(default=16)
    pq_m = luigi.IntParameter(default=16)

    def store_dir(self) -> Path:
        root = Path(self.store_root) if self.store_root else Path(self.out_root).parent / "stores"
        suffix = f"-{self.split}" if self.split else ""
        return root / f"{self.head}-{self.variant or 'default'}-{self.run_id()}{suffix}"

    def resolved_device(self) -> str:
        from pipeline.runs.folder import pick_device

        return str(pick_device(self.device))


class EncodeStore(_StoreParams):
    """Encode (or extend) the embedding store of a trained run."""

    def requires(self) -> TrainHead:
        return TrainHead(**self.run_params())

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(self.store_dir() / "store.json"))

    def complete(self) -> bool:
        path = Path(self.output().path)
        if not path.is_file():
            return False
        recorded = json.loads(path.read_text(encoding="utf-8")).get("manifest_digest")
        return recorded == split_digest(Path(self.manifest), self.split)

    def run(self) -> None:
        apply_thread_budget()
        from pipeline.stores.index import IndexSpec
        from pipeline.stores.store import encode_store

        summary = encode_store(
            self.run_dir(),
            self.store_dir(),
            manifest=self.manifest,
            split=self.split,
            index=IndexSpec(self.index_kind, self.nlist, self.nprobe, self.pq_m),
            device=self.resolved_device(),
            progress=False,
        )
        info = {
            "manifest_digest": split_digest(Path(self.manifest), self.split),
            "num_videos": summary.num_videos,
            "added": summary.added,
            "reencoded": summary.reencoded,
            "skipped": summary.skipped,
            "index": summary.index,
        }
        with self.output().temporary_path() as tmp:  # replaced: the store moves to a new version
            Path(tmp).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class Report(_StoreParams):
    """The static HTML report of a run over its store (metrics of ``split``, searches, assignments)."""

    report_dir = luigi.OptionalPathParameter(default=None)
    num_queries = luigi.IntParameter(default=8)
    ablation_dir = luigi.OptionalPathParameter(default=None)

    def requires(self) -> dict[str, luigi.Task]:
        params = {name: getattr(self, name) for name in EncodeStore.get_param_names()}
        deps: dict[str, luigi.Task] = {
            "store": EncodeStore(**params),
            "metrics": EvaluateHead(**self.run_params(), split=self.split or "test"),
        }
        if self.ablation_dir is not None:
            deps["ablation"] = AblationTable(
                head=self.head,
                manifest=self.manifest,
                features_root=self.features_root,
                out_dir=self.ablation_dir,
                config_path=self.config_path,
                split=self.split or "test",
                epochs=self.epochs,
                expert_configs=self.expert_configs,
                shard_size=self.shard_size,
                device=self.device,
            )
        return deps

    def out_dir(self) -> Path:
        return Path(self.report_dir) if self.report_dir else Path(self.out_root).parent / "report"

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(self.out_dir() / "index.html"))

    def run(self) -> None:
        apply_thread_budget()
        from pipeline.report.html import build_report

        build_report(
            self.run_dir(),
            self.out_dir(),
            store_path=self.store_dir(),
            num_queries=self.num_queries,
            device=self.resolved_device(),
        )
