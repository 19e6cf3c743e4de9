"""Run Luigi tasks with the settings t2v needs, on the local scheduler or a central ``luigid``.

ENVIRONMENT.md: rerunning within 10 s after deleting outputs fails with "Unfulfilled dependencies" unless
``[scheduler] stable_done_cooldown_secs = 0``; the ``gpu`` resource caps concurrent CUDA tasks at one per device.
For a central scheduler these must be in its own config (see README, "Running against luigid").
"""

from __future__ import annotations

import logging

import luigi
import luigi.configuration

from data_manifest.errors import T2VError
from pipeline.threads import apply_threads, threads_per_process


class PipelineFailed(T2VError):
    """Some tasks of a Luigi build failed (their errors were logged above)."""


class t2v_runtime(luigi.Config):  # noqa: N801  (Luigi reads the [t2v_runtime] config section by class name)
    """Per-process settings of t2v's tasks. ``threads``: CPU threads per task process, set by ``run_tasks`` from
    its worker count (``pipeline.threads.threads_per_process``); 0 = one process on the whole machine."""

    threads = luigi.IntParameter(default=0)


def apply_thread_budget() -> int:
    """Call at the start of every heavy task's ``run``: applies ``[t2v_runtime] threads``; returns the count."""
    threads = t2v_runtime().threads or threads_per_process(1)
    apply_threads(threads)
    return threads


def configure_luigi(gpus: int = 1, threads: int = 0) -> None:
    """In-process Luigi settings: scheduler cooldown, GPU resource count, quieter logging."""
    cfg = luigi.configuration.get_config()
    for section, key, value in (
        ("scheduler", "stable_done_cooldown_secs", "0"),
        ("resources", "gpu", str(gpus)),
        ("worker", "keep_alive", "false"),
        ("t2v_runtime", "threads", str(threads)),
    ):
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, key, value)
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)


def run_tasks(tasks: list[luigi.Task], *, workers: int = 1, scheduler_url: str | None = None) -> None:
    """Build ``tasks``; raise PipelineFailed with Luigi's one-line status when anything failed."""
    configure_luigi(threads=threads_per_process(workers))
    kwargs: dict = {"workers": workers, "detailed_summary": True, "log_level": "WARNING"}
    if scheduler_url:
        kwargs["scheduler_url"] = scheduler_url
    else:
        kwargs["local_scheduler"] = True
    result = luigi.build(tasks, **kwargs)
    if not result.scheduling_succeeded or result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        raise PipelineFailed(f"pipeline did not complete: {result.one_line_summary}")
