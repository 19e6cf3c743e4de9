"""The thread budget: how many CPU threads one process of t2v may use, and applying it.

With ``workers`` processes running at once (Luigi ``--workers N``: one process per running task) each gets an
equal share of the cores. OpenMP pools that together ask for more threads than there are cores spin-wait each
other to a crawl (measured: a training epoch 30x slower with two 2-thread processes on 2 cores).
"""

from __future__ import annotations

import os
import sys

_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_per_process(workers: int, cores: int | None = None) -> int:
    """CPU threads for each of ``workers`` concurrent processes on ``cores`` cores (default: this machine's)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def apply_threads(threads: int) -> None:
    """Make this process use ``threads`` CPU threads: torch intra-op, faiss when loaded, and the OpenMP / MKL /
    OpenBLAS variables read by libraries that start later (faiss, onnxruntime's and ctranslate2's OpenMP)."""
    import torch

    for var in _ENV_VARS:
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
