"""Run Luigi tasks with the settings t2v needs, on the local scheduler or a central ``luigid``.

ENVIRONMENT.md: rerunning within 10 s after deleting outputs fails with "Unfulfilled dependencies" unless
``[scheduler] stable_done_cooldown_secs = 0``; the ``gpu`` resource caps concurrent CUDA tasks at one per device.
For a central scheduler these must be in its own config (see README, "Running against luigid").
"""

from __future__ import annotations

import errno
import json
import logging
import re
import urllib.error
import urllib.request

import luigi
import luigi.configuration
import luigi.rpc
import luigi.worker

from data_manifest.errors import T2VError
from pipeline.threads import apply_threads, threads_per_process


class PipelineFailed(T2VError):
    """Some tasks of a Luigi build failed (their errors were logged above)."""


# h5py reports a failed write as a RuntimeError whose text carries the file and the OS reason
_HDF5_WRITE = re.compile(r"filename = '([^']*)'.*?error message = '([^']*)'", re.S)
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT})


def failure_line(err: BaseException) -> str:
    """One line saying why a write or a task failed: ``PATH: reason`` for I/O errors (OSError or an HDF5 write
    error), the message of a T2VError, else the exception's type and first line."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
    text = str(err)
    found = _HDF5_WRITE.search(text)
    if found:
        return f"{found.group(1)}: {found.group(2)}"
    if isinstance(err, T2VError):
        return text
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class T2VTask(luigi.Task):
    """Base of t2v's Luigi tasks: a failure is reported to the scheduler as one line (``failure_line``), which
    ``run_tasks`` puts in its PipelineFailed."""

    def on_failure(self, exception: BaseException) -> str:
        return failure_line(exception)


class _NoTracebacks(logging.Filter):
    """Drops Luigi's records that carry a traceback (task failures, failed calls to a central scheduler):
    ``run_tasks`` reports each failure as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.WARNING and record.exc_info)


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
    luigi_log = logging.getLogger("luigi-interface")
    luigi_log.setLevel(logging.WARNING)
    if logging.getLogger().level > logging.DEBUG and not any(
        isinstance(f, _NoTracebacks) for f in luigi_log.filters
    ):
        luigi_log.addFilter(_NoTracebacks())  # `t2v -v` keeps them


def run_tasks(tasks: list[luigi.Task], *, workers: int = 1, scheduler_url: str | None = None) -> None:
    """Build ``tasks``; raise PipelineFailed with each failed task's one-line reason (else Luigi's status line)."""
    configure_luigi(threads=threads_per_process(workers))
    kwargs: dict = {"workers": workers, "detailed_summary": True, "log_level": "WARNING"}
    if scheduler_url:
        kwargs["scheduler_url"] = scheduler_url
    else:
        kwargs["local_scheduler"] = True
    try:
        result = luigi.build(tasks, **kwargs)
    except luigi.rpc.RPCError as err:
        raise PipelineFailed(_scheduler_lost(str(scheduler_url))) from err
    if not result.scheduling_succeeded or result.status.name not in ("SUCCESS", "SUCCESS_WITH_RETRY"):
        if scheduler_url and not _answers(scheduler_url):
            raise PipelineFailed(_scheduler_lost(scheduler_url))
        failed = sorted(
            {t for t, status, _ in result.worker._add_task_history if status == "FAILED"}, key=str
        )
        reasons = [_task_error(result.worker, t) for t in failed]
        if reasons:
            raise PipelineFailed("\n".join(dict.fromkeys(reasons)))
        raise PipelineFailed(f"pipeline did not complete: {result.one_line_summary}")


def _scheduler_lost(url: str) -> str:
    """One line for a central scheduler that stopped answering (luigid killed, restarted or unreachable)."""
    return (
        f"{url}: the Luigi scheduler does not answer (luigid stopped or unreachable); outputs already written "
        "are kept: re-run once it answers"
    )


def _answers(url: str) -> bool:
    """Whether anything answers HTTP at ``url`` now (an HTTP error status is an answer)."""
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _task_error(worker: luigi.worker.Worker, task: luigi.Task) -> str:
    """The one-line reason a task failed, as its ``on_failure`` told the scheduler (the worker sends it JSON-encoded);
    ``failed`` when the scheduler cannot be asked (a central luigid that went away)."""
    try:
        expl = json.loads(worker._scheduler.fetch_error(task_id=task.task_id).get("error") or '""')
    except (luigi.rpc.RPCError, ValueError):
        expl = ""
    return f"{task.get_task_family()}: {str(expl).strip().splitlines()[-1] if expl else 'failed'}"
