"""Benchmark: the extraction DAG's own cost as the dataset grows (issue 10), with the cheapest expert (audio_stats).

N videos are symlinks to a few real 1 s clips. For each N it prints:

- planning: a fresh process parsing the probed manifest and building + saving the shard plan;
- first run (only for N <= ``--first-run-max``; larger first runs take hours here): wall time of a real
  ``run_extraction`` split into probing, ``extract_shard`` (decoding + model + writing) and the rest, the DAG's
  overhead;
- no-op rerun: a fresh process running ``run_extraction`` on a finished run (imports not counted), and the whole
  ``t2v extract`` command. Sizes above ``--first-run-max`` are finished by a stand-in (tests/scale_fixtures.py:
  real probe results copied per clip, one zero row per video) so the rerun still walks the real code path;
- the fitted growth exponent of the no-op rerun (log-log slope, and between the two largest N);

and, on a real ``luigid`` on 127.0.0.1, the scheduling of the task count the design gives for
``--fleet-videos`` (one task per ``--shards-per-task`` shards for all ``--fleet-experts`` together): time to schedule them all
complete (a no-op) and per ``add_task``, luigid's RSS, and the scheduler's cost per task run (``--luigid-run-tasks``
trivial tasks run while luigid holds the fleet). Run:

    .venv/bin/python tests/benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--first-run-max 10000]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import luigi  # noqa: E402

from tests.conftest import running_luigid  # noqa: E402
from tests.scale_fixtures import (  # noqa: E402
    EXPERT,
    ROOT,
    finished_run,
    linked_manifest,
    make_clips,
    timed_noop_rerun,
)

_FIRST_RUN = """
import json, sys, time
import workflows.tasks_extract as te
import extractors.engine as engine
from workflows.extraction import run_extraction
spent = {"probe": 0.0, "extract_shard": 0.0}
def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t
    return wrapper
te.probe_records = timed("probe", te.probe_records)
engine.extract_shards = timed("extract_shard", engine.extract_shards)
t = time.perf_counter()
run_extraction(sys.argv[1], ["audio_stats"], sys.argv[2], shard_size=int(sys.argv[3]))
print(json.dumps({"wall": time.perf_counter() - t, **spent}))
"""

_PLANNING = """
import sys, time
from workflows.tasks_extract import load_plan_specs
t = time.perf_counter()
load_plan_specs(__import__("pathlib").Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), save=True)
print(time.perf_counter() - t)
"""


def _python(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def measure_size(work: Path, n: int, clips: list[Path], args: argparse.Namespace) -> dict[str, float]:
    """Planning, first run (if small enough) and no-op rerun at ``n`` videos."""
    import json

    from workflows.tasks_extract import probed_manifest_path

    root = work / f"n{n}"
    out: dict[str, float] = {"n": n}
    features = root / "features"
    if n <= args.first_run_max:
        manifest = linked_manifest(root, n, clips, probed=False)
        first = json.loads(_python(_FIRST_RUN, str(manifest), str(features), str(args.shard_size)))
        out.update({f"first_{k}": v for k, v in first.items()})
        out["first_overhead"] = first["wall"] - first["probe"] - first["extract_shard"]
    else:
        manifest, features = finished_run(root, n, clips, shard_size=args.shard_size)
    probed = probed_manifest_path(manifest, features)
    plan = features / f"plan-{args.shard_size}.json"
    plan.rename(plan.with_suffix(".bak"))
    out["planning"] = float(_python(_PLANNING, str(probed), str(features), str(args.shard_size)))
    plan.with_suffix(".bak").replace(plan)
    out["noop"] = timed_noop_rerun(manifest, features, shard_size=args.shard_size)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "workflows.cli", "extract", "--manifest", str(manifest), "--experts", EXPERT]
        + ["--out", str(features), "--shard-size", str(args.shard_size)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
    )
    out["noop_cli"] = time.perf_counter() - t
    return out


class _Scheduled(luigi.Task):
    """A stand-in for one ``ExtractShards`` task (a shard group, every expert): same kind of parameters, no work."""

    experts = luigi.Parameter()
    group = luigi.IntParameter()
    done = luigi.BoolParameter()

    def complete(self) -> bool:
        return self.done or getattr(self, "_ran", False)

    def run(self) -> None:
        self._ran = True


class _Fleet(luigi.Task):
    """Shard groups (like ``FeatureSet``: not complete itself, so every group is checked and added); the experts
    of a run share each group's task, so the count does not grow with them."""

    experts = luigi.IntParameter()
    groups = luigi.IntParameter()
    done = luigi.BoolParameter()

    def requires(self) -> list[_Scheduled]:
        names = ",".join(f"e{e}" for e in range(self.experts))
        return [_Scheduled(experts=names, group=g, done=self.done) for g in range(self.groups)]

    def complete(self) -> bool:
        return getattr(self, "_ran", False)

    def run(self) -> None:
        self._ran = True


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_luigid(work: Path, args: argparse.Namespace) -> dict[str, float]:
    """On a real luigid: schedule the fleet's task count all complete (a no-op rerun's scheduling), add them all as
    pending (a first run's state), then schedule and run ``--luigid-run-tasks`` trivial tasks beside them (the
    scheduler's cost per task run while it holds the fleet)."""
    groups = math.ceil(args.fleet_videos / (args.shard_size * args.shards_per_task))
    tasks = groups
    out: dict[str, float] = {"tasks": tasks}
    with running_luigid(work / "luigid") as (url, pid):
        for name, fleet, workers in (
            ("noop", _Fleet(experts=args.fleet_experts, groups=groups, done=True), 1),
            ("pending", _Fleet(experts=args.fleet_experts, groups=groups, done=False), 0),  # added, not run
            ("run", _Fleet(experts=1, groups=args.luigid_run_tasks, done=False), 1),
        ):
            t = time.perf_counter()
            luigi.build([fleet], scheduler_url=url, workers=workers, log_level="WARNING")
            out[f"luigid_{name}_s"] = time.perf_counter() - t
            out[f"luigid_{name}_rss_mib"] = _rss_mib(pid)
    out["per_add_task_ms"] = 1000 * out["luigid_noop_s"] / tasks
    out["per_run_task_ms"] = 1000 * out["luigid_run_s"] / args.luigid_run_tasks
    return out


def main() -> None:
    """Run the measures and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated video counts")
    parser.add_argument("--first-run-max", type=int, default=10000, help="largest N with a real first run")
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--shards-per-task", type=int, default=16)
    parser.add_argument("--fleet-videos", type=int, default=1_200_000)
    parser.add_argument("--fleet-experts", type=int, default=9)
    parser.add_argument("--luigid-run-tasks", type=int, default=300, help="trivial tasks run through luigid")
    parser.add_argument("--skip-luigid", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the datasets here (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = args.workdir or Path(tmp)
        clips = make_clips(work / "clips")
        print(
            f"{'videos':>8} {'planning':>9} {'first run':>10} {'probe':>7} {'extract':>8} {'overhead':>15} "
            f"{'no-op':>7} {'no-op CLI':>10}"
        )
        rows = []
        for n in sizes:
            r = measure_size(work, n, clips, args)
            rows.append(r)
            first = (
                f"{r['first_wall']:9.1f}s {r['first_probe']:6.1f}s {r['first_extract_shard']:7.1f}s "
                f"{r['first_overhead']:6.1f}s ({100 * r['first_overhead'] / r['first_wall']:4.1f}%)"
                if "first_wall" in r
                else f"{'-':>10} {'-':>7} {'-':>8} {'-':>15}"
            )
            print(f"{n:8d} {r['planning']:8.2f}s {first} {r['noop']:6.2f}s {r['noop_cli']:9.2f}s", flush=True)
        if len(rows) >= 2:
            xs, ys = [r["n"] for r in rows], [r["noop"] for r in rows]
            last = math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])
            fit = _slope(xs, ys)
            print(f"no-op growth exponent: {fit:.2f} (fit), {last:.2f} ({xs[-2]}→{xs[-1]})")
            print(
                f"extrapolated no-op rerun at {args.fleet_videos}: {ys[-1] * (args.fleet_videos / xs[-1]) ** last:.0f} s"
            )
        if not args.skip_luigid:
            s = measure_luigid(work, args)
            print(
                f"luigid, {int(s['tasks'])} tasks ({args.fleet_videos} videos × {args.fleet_experts} experts, "
                f"{args.shards_per_task} shards of {args.shard_size} per task): schedule all complete "
                f"{s['luigid_noop_s']:.1f} s ({s['per_add_task_ms']:.2f} ms per add_task), RSS "
                f"{s['luigid_noop_rss_mib']:.0f} MiB; all pending: added in {s['luigid_pending_s']:.1f} s, RSS "
                f"{s['luigid_pending_rss_mib']:.0f} MiB; beside them {args.luigid_run_tasks} tasks run at "
                f"{s['per_run_task_ms']:.0f} ms each (≈ {s['per_run_task_ms'] * s['tasks'] / 60000:.0f} min of "
                "scheduler time over the fleet's first run)"
            )


if __name__ == "__main__":
    main()
