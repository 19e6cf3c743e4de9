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
from pipeline.features.shards import shard_attr, shard_counts, shard_name, shard_summary
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


class _ExtractionTask(T2VTask):
    """Common parameters: which manifest, where features go, and how experts run."""

    manifest = luigi.PathParameter()
    features_root = luigi.PathParameter()
    shard_size = luigi.IntParameter(default=64)
    weights_dir = luigi.OptionalPathParameter(default=None, significant=False)
    device = luigi.Parameter(default="cpu", significant=False)
    retry_token = luigi.Parameter(default="", significant=False)
    probe_workers = luigi.IntParameter(default=2, significant=False)

    def expert_dir(self, expert: str, config: Any) -> Path:
        """``features_root/<expert>/<fingerprint>`` (the fingerprint hashes the weights: computed once per process)."""
        config_json = luigi.DictParameter().serialize(config)
        weights = str(self.weights_dir) if self.weights_dir else None
        return Path(self.features_root) / expert / _fingerprint(expert, config_json, weights)

    def probed(self) -> Path:
        return probed_manifest_path(self.manifest, self.features_root)

    def requires(self) -> ProbedManifest:
        return ProbedManifest(
            manifest=self.manifest, features_root=self.features_root, workers=self.probe_workers
        )


def _still_missing(rec: VideoRecord) -> bool:
    """A video recorded as unreadable at probe time whose file is still absent (nothing new to probe)."""
    return rec.probe_error is not None and rec.file_size is None and not Path(rec.path).exists()


class ExtractShards(_ExtractionTask):
    """Extract a group of ``shards_per_task`` consecutive shards for every expert of ``expert_configs`` (``{expert:
    options}``), each into ``<expert>/<fingerprint>/shard-NNNNN.h5`` (atomic, one shard after another).

    Experts run together: each video of a shard is decoded once for all experts whose shard is not current
    (``extractors.engine.extract_shards``); an expert whose shard is current is skipped, so changing one expert's
    options re-runs only that expert. One Luigi task per group rather than per shard keeps the scheduler's task
    count at videos / (shard_size × shards_per_task) (README, "Extraction at scale"); a killed task loses at most
    the shards it was writing.
    """

    expert_configs = luigi.DictParameter()
    group = luigi.IntParameter()
    shards_per_task = luigi.IntParameter(default=SHARDS_PER_TASK)

    @property
    def resources(self) -> dict[str, int]:  # type: ignore[override]
        return {"gpu": 1} if str(self.device).startswith("cuda") else {}

    def experts(self) -> list[str]:
        return sorted(self.expert_configs)

    def specs(self) -> list[ShardSpec]:
        """The plan entries of this group's shards."""
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=False)
        return specs[self.group * self.shards_per_task : (self.group + 1) * self.shards_per_task]

    def shard_path(self, expert: str, spec: ShardSpec) -> Path:
        return self.expert_dir(expert, self.expert_configs[expert]) / shard_name(spec.index)

    def output(self) -> list[luigi.LocalTarget]:  # type: ignore[override]
        return [luigi.LocalTarget(str(self.shard_path(e, s))) for e in self.experts() for s in self.specs()]

    def shard_done(self, expert: str, spec: ShardSpec) -> bool:
        """The expert's shard file matches its plan entry (an attribute read); under a retry token, also holds no
        failure. A shard this manifest cannot write whole (``shard_records``) counts as done: it is left to its
        owner."""
        if shard_records(spec, probed_by_id(self.probed())) is None:
            return True
        path = self.shard_path(expert, spec)
        if not shard_is_current(path, spec):
            return False
        if self.retry_token and shard_attr(path, "retry_token") != self.retry_token:
            return shard_counts(path)["failed"] == 0
        return True

    def complete(self) -> bool:
        return self.probed().exists() and all(
            self.shard_done(e, s) for e in self.experts() for s in self.specs()
        )

    def run(self) -> None:
        from extractors.engine import ShardJob, extract_shards
        from extractors.registry import get_expert

        threads = apply_thread_budget()
        by_id = probed_by_id(self.probed())
        todo = [
            (spec, records, needed)
            for spec in self.specs()
            if (records := shard_records(spec, by_id)) is not None
            and (needed := [e for e in self.experts() if not self.shard_done(e, spec)])
        ]
        experts = {e: get_expert(e, dict(self.expert_configs[e])) for e in {e for *_, n in todo for e in n}}
        sha = {}
        for name, expert in experts.items():
            expert.load(self.device, self.weights_dir)
            sha[name] = expert.weights_sha256(self.weights_dir)
        for done, (spec, records, needed) in enumerate(todo):
            self.set_status_message(
                f"shard {spec.index}: {', '.join(needed)} ({done} of {len(todo)} shards done)"
            )
            self.set_progress_percentage(int(100 * done / len(todo)))
            jobs = []
            for name in needed:
                out = self.shard_path(name, spec)
                previous = out if (self.retry_token and shard_is_current(out, spec)) else None
                jobs.append(
                    ShardJob(
                        experts[name],
                        out,
                        out.parent.name,
                        sha[name],
                        previous=previous,
                        retry_failed=previous is not None,
                        extra_attrs={"retry_token": self.retry_token} if self.retry_token else None,
                    )
                )
            extract_shards(
                jobs,
                records,
                self.probed().parent,
                members_digest=spec.members_digest,
                device=self.device,
                progress=False,
                threads=threads,
            )
        self.set_status_message(f"{len(todo)} shards written")
        self.set_progress_percentage(100)


class FeatureSet(_ExtractionTask):
    """All shards of one expert for a manifest; writes ``summary-s<shard_size>-<manifest tag>.json`` beside the
    shards (one per manifest: manifests sharing a features root keep their own summaries).

    ``together``: ``{expert: options}`` of every expert extracted in the same run (this one included; default: this
    one alone): their ``ExtractShards`` tasks are shared, so each video is decoded once for all of them.
    ``parallel``: the number of Luigi workers, so that a small plan still makes that many groups."""

    expert = luigi.Parameter()
    expert_config = luigi.DictParameter(default={})
    together = luigi.DictParameter(default={}, significant=False)
    shards_per_task = luigi.IntParameter(default=SHARDS_PER_TASK)
    parallel = luigi.IntParameter(default=1, significant=False)

    def feature_dir(self) -> Path:
        """This expert's feature folder."""
        return self.expert_dir(self.expert, self.expert_config)

    def output(self) -> AtomicTarget:
        return AtomicTarget(
            str(self.feature_dir() / f"summary-s{self.shard_size}-{manifest_tag(self.manifest)}.json")
        )

    def _groups(self, *, save: bool) -> list[ExtractShards]:
        specs = load_plan_specs(self.probed(), self.features_root, self.shard_size, save=save)
        per_task = max(1, min(self.shards_per_task, -(-len(specs) // max(1, self.parallel))))
        configs = dict(self.together) or {self.expert: self.expert_config}
        configs[self.expert] = self.expert_config
        return [
            self.clone(ExtractShards, expert_configs=configs, group=g, shards_per_task=per_task)
            for g in range(-(-len(specs) // per_task))
        ]

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
        )
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def summarize_shards(paths: list[Path]) -> dict[str, float]:
    """Totals over shard files (from their attributes): videos ok / empty / failed, rows written, and the seconds
    the models ran (``model_s``) and waited for decoded input (``input_wait_s``) in the shards that recorded them;
    ``gpu_busy``: the mean share of the shards that recorded one."""
    out: dict[str, float] = {"shards": len(paths), "ok": 0, "empty": 0, "failed": 0, "rows": 0}
    busy = []
    for path in paths:
        for key, value in shard_summary(path).items():
            if key == "gpu_busy":
                busy.append(value)
            elif key != "wall_s":
                out[key] = out.get(key, 0) + value
    if busy:
        out["gpu_busy"] = sum(busy) / len(busy)
    return out
