"""Luigi tasks of the extraction DAG: probe → shard plan → ``ExtractShard`` × shards → ``FeatureSet`` per expert.

Outputs live under ``features_root`` (DESIGN.md §2, §3.3):

- ``_manifests/<stem>-<path hash>.probed.jsonl``: the probed copy of the manifest (absolute media paths), with a
  ``.source.json`` sidecar holding the sha256 of the source manifest it was made from;
- ``plan-<shard_size>.json``: the append-only shard plan (shared by every expert);
- ``<expert>/<fingerprint>/shard-NNNNN.h5``: the shards, named by the expert's fingerprint.

A shard is complete when its file exists and its ``members_digest`` attribute equals the plan's (a changed video
content hash invalidates its own shard only). ``--retry-failed`` passes a fresh ``retry_token``: shards holding
failed videos are redone once per token, copying their good rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import luigi

from data_manifest.atomic import write_text
from data_manifest.hashing import sha256_file
from data_manifest.probe import probe_records, unchanged_since_probe
from data_manifest.schema import PROBED_FIELDS, VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from pipeline.features.plan import ShardPlan, default_plan_path, shard_is_current
from pipeline.features.shards import STATUS_FAILED, read_shard, shard_attrs, shard_name
from workflows.luigi_runner import apply_thread_budget
from workflows.targets import AtomicTarget

_CARRIED = (*PROBED_FIELDS, "probe_error", "file_size", "file_mtime")


def probed_manifest_path(manifest: str | Path, features_root: str | Path) -> Path:
    """Where the probed copy of ``manifest`` lives under ``features_root``."""
    manifest = Path(manifest).absolute()
    tag = hashlib.sha256(str(manifest).encode()).hexdigest()[:8]
    return Path(features_root) / "_manifests" / f"{manifest.stem}-{tag}.probed.jsonl"


def load_plan_specs(probed: Path, features_root: str | Path, shard_size: int, *, save: bool) -> list[Any]:
    """Shard specs for the probed manifest's videos (the plan is extended, never reordered; saved if ``save``)."""
    path = default_plan_path(features_root, shard_size)
    plan = ShardPlan.load(path)
    specs = plan.update(load_manifest(probed, check_paths=False), shard_size)
    if save:
        plan.save(path)
    return specs


class ProbedManifest(luigi.Task):
    """Probe the manifest's media (duration, fps, audio, content hash); unchanged files are not re-probed."""

    manifest = luigi.PathParameter()
    features_root = luigi.PathParameter()
    workers = luigi.IntParameter(default=2, significant=False)

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(probed_manifest_path(self.manifest, self.features_root)))

    def _source_path(self) -> Path:
        return Path(self.output().path + ".source.json")

    def complete(self) -> bool:
        """Probed from this exact manifest, and every media file still has its probed size and mtime (a stat per
        video: a file replaced in place is re-probed, so its new content hash invalidates its shard)."""
        src = self._source_path()
        if not (self.output().exists() and src.exists() and Path(self.manifest).exists()):
            return False
        if json.loads(src.read_text())["sha256"] != sha256_file(Path(self.manifest)):
            return False
        probed = load_manifest(Path(self.output().path), check_paths=False)
        return all(unchanged_since_probe(r, Path(r.path)) or _still_missing(r) for r in probed)

    def run(self) -> None:
        manifest = Path(self.manifest)
        records = load_manifest(manifest, check_paths=False)
        out = Path(self.output().path)
        if out.exists():
            previous = {r.video_id: r for r in load_manifest(out, check_paths=False)}
            for rec in records:
                old = previous.get(rec.video_id)
                if old is not None and Path(old.path) == rec.resolve(manifest.parent.absolute()):
                    for key in _CARRIED:
                        setattr(rec, key, getattr(old, key))
        probe_records(records, manifest.parent, workers=self.workers, progress=True)
        for rec in records:
            rec.path = str(rec.resolve(manifest.parent.absolute()))
        write_manifest(out, records)  # atomic itself
        write_text(
            self._source_path(),
            json.dumps({"manifest": str(manifest.absolute()), "sha256": sha256_file(manifest)}),
        )


class _ExpertTask(luigi.Task):
    """Common parameters: which manifest, expert and options, and where features go."""

    manifest = luigi.PathParameter()
    features_root = luigi.PathParameter()
    expert = luigi.Parameter()
    expert_config = luigi.DictParameter(default={})
    shard_size = luigi.IntParameter(default=64)
    weights_dir = luigi.OptionalPathParameter(default=None, significant=False)
    device = luigi.Parameter(default="cpu", significant=False)
    retry_token = luigi.Parameter(default="", significant=False)
    probe_workers = luigi.IntParameter(default=2, significant=False)

    def build_expert(self) -> Any:
        from extractors.registry import get_expert  # lazy: `luigi --module workflows` should not load torch

        return get_expert(self.expert, dict(self.expert_config))

    def feature_dir(self) -> Path:
        """``features_root/<expert>/<fingerprint>``."""
        return Path(self.features_root) / self.expert / self.build_expert().fingerprint(self.weights_dir)

    def probed(self) -> Path:
        return probed_manifest_path(self.manifest, self.features_root)


def _still_missing(rec: VideoRecord) -> bool:
    """A video recorded as unreadable at probe time whose file is still absent (nothing new to probe)."""
    return rec.probe_error is not None and rec.file_size is None and not Path(rec.path).exists()


class ExtractShard(_ExpertTask):
    """Extract one shard of one expert into ``<expert>/<fingerprint>/shard-NNNNN.h5`` (atomic)."""

    shard_index = luigi.IntParameter()

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        return {"gpu": 1} if str(self.device).startswith("cuda") else {}

    def requires(self) -> ProbedManifest:
        return ProbedManifest(
            manifest=self.manifest, features_root=self.features_root, workers=self.probe_workers
        )

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(self.feature_dir() / shard_name(self.shard_index)))

    def _spec(self) -> Any:
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=False)
        return specs[self.shard_index]

    def complete(self) -> bool:
        path = Path(self.output().path)
        if not self.probed().exists() or not path.exists() or not shard_is_current(path, self._spec()):
            return False
        if self.retry_token and shard_attrs(path).get("retry_token") != self.retry_token:
            return not bool((read_shard(path).status == STATUS_FAILED).any())
        return True

    def run(self) -> None:
        threads = apply_thread_budget()
        spec = self._spec()
        by_id = {r.video_id: r for r in load_manifest(self.probed(), check_paths=False)}
        records: list[VideoRecord] = [by_id[v] for v in spec.video_ids if v in by_id]
        out = Path(self.output().path)
        previous = out if (self.retry_token and out.exists() and shard_is_current(out, spec)) else None
        expert = self.build_expert()
        expert.load(self.device, self.weights_dir)
        from extractors.engine import extract_shard

        extract_shard(
            expert,
            records,
            Path(self.probed()).parent,
            out,
            fingerprint=out.parent.name,
            weights_sha256=expert.weights_sha256(self.weights_dir),
            members_digest=spec.members_digest,
            device=self.device,
            previous=previous,
            retry_failed=previous is not None,
            threads=threads,
            extra_attrs={"retry_token": self.retry_token} if self.retry_token else None,
        )


class FeatureSet(_ExpertTask):
    """All shards of one expert for a manifest; writes ``summary-s<shard_size>.json`` beside the shards."""

    def requires(self) -> ProbedManifest:
        return ProbedManifest(
            manifest=self.manifest, features_root=self.features_root, workers=self.probe_workers
        )

    def output(self) -> AtomicTarget:
        return AtomicTarget(str(self.feature_dir() / f"summary-s{self.shard_size}.json"))

    def _shards(self, *, save: bool) -> list[ExtractShard]:
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=save)
        return [self.clone(ExtractShard, shard_index=s.index) for s in specs]

    def complete(self) -> bool:
        if not ProbedManifest(manifest=self.manifest, features_root=self.features_root).complete():
            return False
        return Path(self.output().path).exists() and all(t.complete() for t in self._shards(save=False))

    def run(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        shards = self._shards(save=True)
        yield shards
        summary = summarize_shards([Path(t.output().path) for t in shards])
        summary.update(
            expert=self.expert,
            fingerprint=self.feature_dir().name,
            seconds_last_run=time.perf_counter() - start,
        )
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def summarize_shards(paths: list[Path]) -> dict[str, int]:
    """Counts over shard files: videos ok / empty / failed and rows written."""
    out = {"shards": len(paths), "ok": 0, "empty": 0, "failed": 0, "rows": 0}
    for path in paths:
        data = read_shard(path)
        for code, key in ((0, "ok"), (1, "empty"), (2, "failed")):
            out[key] += int((data.status == code).sum())
        out["rows"] += int(data.offsets[-1])
    return out
