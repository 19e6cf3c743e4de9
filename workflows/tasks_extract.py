"""Luigi tasks of the extraction DAG: probe → shard plan → ``ExtractShards`` × shard groups → ``FeatureSet`` per expert.

Outputs live under ``features_root`` (DESIGN.md §2, §3.3):

- ``_manifests/<stem>-<path hash>.probed.jsonl``: the probed copy of the manifest (absolute media paths), with a
  ``.source.json`` sidecar holding the sha256 of the source manifest it was made from;
- ``plan-<shard_size>.json``: the append-only shard plan (shared by every expert);
- ``<expert>/<fingerprint>/shard-NNNNN.h5``: the shards, named by the expert's fingerprint.

A shard is complete when its file exists and its ``members_digest`` attribute equals the plan's (a changed video
content hash invalidates its own shard only) and its data is verified (``shard_is_current``: a full read only for a
file changed since), never a manifest parse, since the probed manifest, the plan and each expert's fingerprint are computed once per process. ``--retry-failed`` passes a fresh ``retry_token``: shards holding
failed videos are redone once per token, copying their good rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import luigi

from data_manifest.atomic import exclusive_lock, write_text
from data_manifest.hashing import sha256_file
from data_manifest.probe import journal_path, probe_records, read_probed_copy, unchanged_since_probe
from data_manifest.schema import PROBED_FIELDS, VideoRecord, write_manifest
from data_manifest.validate import load_manifest
from pipeline.features.plan import ShardPlan, ShardSpec, default_plan_path, members_digest, shard_is_current
from pipeline.features.shards import shard_attr, shard_counts, shard_name
from workflows.luigi_runner import T2VTask, apply_thread_budget
from workflows.targets import AtomicTarget

_CARRIED = (*PROBED_FIELDS, "probe_error", "file_size", "file_mtime")
SHARDS_PER_TASK = 16
# summary key: shards holding this manifest's videos that are left to a manifest holding all their members
SKIPPED = "skipped: members not in this manifest"

# Per-process memos. Keys carry the files' (size, mtime_ns), so a changed file is re-read; only the probe's
# completeness (which depends on every media file) is dropped explicitly, by ``forget_completion`` at each run.
_manifests: dict[str, tuple[tuple[int, int], list[VideoRecord], dict[str, VideoRecord]]] = {}
_plans: dict[tuple[Any, ...], tuple[list[ShardSpec], bool]] = {}  # key -> (specs, not yet saved)
_probe_complete: set[tuple[Any, ...]] = set()


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def probed_manifest_path(manifest: str | Path, features_root: str | Path) -> Path:
    """Where the probed copy of ``manifest`` lives under ``features_root``."""
    return Path(features_root) / "_manifests" / f"{Path(manifest).stem}-{manifest_tag(manifest)}.probed.jsonl"


def _probed(probed: Path) -> tuple[tuple[int, int], list[VideoRecord], dict[str, VideoRecord]]:
    key = _stat_key(probed)
    cached = _manifests.get(str(probed))
    if key is None or cached is None or cached[0] != key:
        records = read_probed_copy(probed)
        cached = (key, records, {r.video_id: r for r in records})  # type: ignore[assignment]
        _manifests[str(probed)] = cached  # type: ignore[assignment]
    return cached  # type: ignore[return-value]


def probed_records(probed: Path) -> list[VideoRecord]:
    """The probed manifest's records, parsed once per process while the file keeps its size and mtime."""
    return _probed(probed)[1]


def probed_by_id(probed: Path) -> dict[str, VideoRecord]:
    """The probed manifest's records by video id (memoised like ``probed_records``)."""
    return _probed(probed)[2]


def load_plan_specs(
    probed: Path, features_root: str | Path, shard_size: int, *, save: bool
) -> list[ShardSpec]:
    """Shard specs for the probed manifest's videos (the plan is extended, never reordered; saved if ``save`` and
    it changed). Memoised per process on the probed manifest's and the plan's size and mtime."""
    path = default_plan_path(features_root, shard_size)
    key = (str(probed), _stat_key(probed), str(path), _stat_key(path), shard_size)
    cached = _plans.get(key)
    if cached is not None and not (save and cached[1]):
        return cached[0]
    with _plan_lock(path):
        plan = ShardPlan.load(path)
        specs = plan.update(probed_records(probed), shard_size)
        unsaved = plan.changed
        if save and unsaved:
            plan.save(path)
            unsaved = False
            key = (str(probed), _stat_key(probed), str(path), _stat_key(path), shard_size)
    _plans[key] = (specs, unsaved)
    return specs


@contextmanager
def _plan_lock(plan_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<plan>.lock`` around a plan's load-update-save: extracts of different
    manifests into one features root then never lose each other's shards."""
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(plan_path.with_name(plan_path.name + ".lock")):
        yield


def shard_records(spec: ShardSpec, by_id: dict[str, VideoRecord]) -> list[VideoRecord] | None:
    """The records of every member of ``spec``, or None when this manifest cannot write the whole shard.

    A shard holds all its plan members or is not written: when some member is missing from this manifest (another
    manifest sharing the features root owns it) or was probed with another content hash than the plan's, the shard
    is left for a run whose manifest reproduces the plan's ``members_digest``.
    """
    records = [by_id[v] for v in spec.video_ids if v in by_id]
    if len(records) != len(spec.video_ids):
        return None
    if members_digest((r.video_id, r.content_hash or "") for r in records) != spec.members_digest:
        return None
    return records


def manifest_tag(manifest: str | Path) -> str:
    """A short digest of the manifest's absolute path: names the files kept per manifest under a features root."""
    return hashlib.sha256(str(Path(manifest).absolute()).encode()).hexdigest()[:8]


def forget_completion() -> None:
    """Drop the memo of finished probes: a new run must see media files replaced since the last one."""
    _probe_complete.clear()


@functools.lru_cache(maxsize=64)
def _fingerprint(expert: str, config_json: str, weights_dir: str | None) -> str:
    from extractors.registry import get_expert  # lazy: `luigi --module workflows` should not load torch

    return get_expert(expert, json.loads(config_json)).fingerprint(weights_dir)


class ProbedManifest(T2VTask):
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
        src, out, manifest = self._source_path(), Path(self.output().path), Path(self.manifest)
        key = (str(out), _stat_key(out), _stat_key(src), str(manifest), _stat_key(manifest))
        if key in _probe_complete:
            return True
        if None in (key[1], key[2], key[4]):
            return False
        if json.loads(src.read_text())["sha256"] != sha256_file(manifest):
            return False
        if all(unchanged_since_probe(r, Path(r.path)) or _still_missing(r) for r in probed_records(out)):
            _probe_complete.add(key)
            return True
        return False

    def run(self) -> None:
        manifest = Path(self.manifest)
        records = load_manifest(manifest, check_paths=False)
        out = Path(self.output().path)
        if out.exists():
            previous = {r.video_id: r for r in probed_records(out)}
            for rec in records:
                old = previous.get(rec.video_id)
                if old is not None and Path(old.path) == rec.resolve(manifest.parent.absolute()):
                    for key in _CARRIED:
                        setattr(rec, key, getattr(old, key))
        journal = journal_path(out)
        probe_records(records, manifest.parent, workers=self.workers, progress=True, journal=journal)
        for rec in records:
            rec.path = str(rec.resolve(manifest.parent.absolute()))
        write_manifest(out, records)  # atomic itself
        write_text(
            self._source_path(),
            json.dumps({"manifest": str(manifest.absolute()), "sha256": sha256_file(manifest)}),
        )
        journal.unlink(missing_ok=True)


class _ExpertTask(T2VTask):
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
        """``features_root/<expert>/<fingerprint>`` (the fingerprint hashes the weights: computed once per process)."""
        config = luigi.DictParameter().serialize(self.expert_config)
        weights = str(self.weights_dir) if self.weights_dir else None
        return Path(self.features_root) / self.expert / _fingerprint(self.expert, config, weights)

    def probed(self) -> Path:
        return probed_manifest_path(self.manifest, self.features_root)


def _still_missing(rec: VideoRecord) -> bool:
    """A video recorded as unreadable at probe time whose file is still absent (nothing new to probe)."""
    return rec.probe_error is not None and rec.file_size is None and not Path(rec.path).exists()


class ExtractShards(_ExpertTask):
    """Extract a group of ``shards_per_task`` consecutive shards of one expert, each into
    ``<expert>/<fingerprint>/shard-NNNNN.h5`` (atomic, one after another).

    One Luigi task per group rather than per shard keeps the scheduler's task count at
    videos / (shard_size × shards_per_task) per expert (README, "Extraction at scale"); a killed task loses at most
    the shard it was writing.
    """

    group = luigi.IntParameter()
    shards_per_task = luigi.IntParameter(default=SHARDS_PER_TASK)

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        return {"gpu": 1} if str(self.device).startswith("cuda") else {}

    def requires(self) -> ProbedManifest:
        return ProbedManifest(
            manifest=self.manifest, features_root=self.features_root, workers=self.probe_workers
        )

    def specs(self) -> list[ShardSpec]:
        """The plan entries of this group's shards."""
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=False)
        return specs[self.group * self.shards_per_task : (self.group + 1) * self.shards_per_task]

    def output(self) -> list[luigi.LocalTarget]:  # type: ignore[override]
        folder = self.feature_dir()
        return [luigi.LocalTarget(str(folder / shard_name(s.index))) for s in self.specs()]

    def shard_done(self, spec: ShardSpec) -> bool:
        """The shard file matches its plan entry (an attribute read); under a retry token, also holds no failure.
        A shard this manifest cannot write whole (``shard_records``) counts as done: it is left to its owner."""
        if shard_records(spec, probed_by_id(self.probed())) is None:
            return True
        path = self.feature_dir() / shard_name(spec.index)
        if not shard_is_current(path, spec):
            return False
        if self.retry_token and shard_attr(path, "retry_token") != self.retry_token:
            return shard_counts(path)["failed"] == 0
        return True

    def complete(self) -> bool:
        return self.probed().exists() and all(self.shard_done(s) for s in self.specs())

    def run(self) -> None:
        from extractors.engine import extract_shard

        threads = apply_thread_budget()
        by_id = probed_by_id(self.probed())
        todo = [
            (spec, records)
            for spec in self.specs()
            if not self.shard_done(spec) and (records := shard_records(spec, by_id)) is not None
        ]
        expert = self.build_expert()
        expert.load(self.device, self.weights_dir)
        weights_sha256 = expert.weights_sha256(self.weights_dir)
        for done, (spec, records) in enumerate(todo):
            self.set_status_message(f"{self.expert}: shard {spec.index} ({done} of {len(todo)} shards done)")
            self.set_progress_percentage(int(100 * done / len(todo)))
            out = self.feature_dir() / shard_name(spec.index)
            previous = out if (self.retry_token and shard_is_current(out, spec)) else None
            extract_shard(
                expert,
                records,
                self.probed().parent,
                out,
                fingerprint=out.parent.name,
                weights_sha256=weights_sha256,
                members_digest=spec.members_digest,
                device=self.device,
                progress=False,
                previous=previous,
                retry_failed=previous is not None,
                threads=threads,
                extra_attrs={"retry_token": self.retry_token} if self.retry_token else None,
            )
        self.set_status_message(f"{self.expert}: {len(todo)} shards written")
        self.set_progress_percentage(100)


class FeatureSet(_ExpertTask):
    """All shards of one expert for a manifest; writes ``summary-s<shard_size>-<manifest tag>.json`` beside the
    shards (one per manifest: manifests sharing a features root keep their own summaries)."""

    shards_per_task = luigi.IntParameter(default=SHARDS_PER_TASK)

    def requires(self) -> ProbedManifest:
        return ProbedManifest(
            manifest=self.manifest, features_root=self.features_root, workers=self.probe_workers
        )

    def output(self) -> AtomicTarget:
        return AtomicTarget(
            str(self.feature_dir() / f"summary-s{self.shard_size}-{manifest_tag(self.manifest)}.json")
        )

    def _groups(self, *, save: bool) -> list[ExtractShards]:
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=save)
        groups = -(-len(specs) // self.shards_per_task)
        return [self.clone(ExtractShards, group=g) for g in range(groups)]

    def complete(self) -> bool:
        if not ProbedManifest(manifest=self.manifest, features_root=self.features_root).complete():
            return False
        if not Path(self.output().path).exists() or not all(t.complete() for t in self._groups(save=False)):
            return False
        return not self._skipped(
            load_plan_specs(self.probed(), self.features_root, self.shard_size, save=False)
        )

    def _skipped(self, specs: list[ShardSpec]) -> list[ShardSpec]:
        """Shards holding some of this manifest's videos that it cannot write whole and that are not current: the
        features are incomplete until a manifest holding all their members extracts them (reported, never final)."""
        by_id = probed_by_id(self.probed())
        return [
            s
            for s in specs
            if any(v in by_id for v in s.video_ids)
            and shard_records(s, by_id) is None
            and not shard_is_current(self.feature_dir() / shard_name(s.index), s)
        ]

    def run(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        groups = self._groups(save=True)
        yield groups
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=False)
        by_id = probed_by_id(self.probed())
        mine = [s for s in specs if any(v in by_id for v in s.video_ids)]
        paths = {s.index: self.feature_dir() / shard_name(s.index) for s in mine}
        written = [s for s in mine if shard_is_current(paths[s.index], s)]
        summary: dict[str, Any] = summarize_shards([paths[s.index] for s in written])
        skipped = self._skipped(mine)
        summary.update(
            {SKIPPED: len(skipped)},
            manifest=str(Path(self.manifest).absolute()),
            expert=self.expert,
            fingerprint=self.feature_dir().name,
            seconds_last_run=time.perf_counter() - start,
        )
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def summarize_shards(paths: list[Path]) -> dict[str, int]:
    """Counts over shard files (from their count attributes): videos ok / empty / failed and rows written."""
    out = {"shards": len(paths), "ok": 0, "empty": 0, "failed": 0, "rows": 0}
    for path in paths:
        for key, value in shard_counts(path).items():
            out[key] += value
    return out
