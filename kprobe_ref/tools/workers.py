"""Worker processes that never outlive the command that started them.

The audit and the proof runner spread work over a :class:`ProcessPoolExecutor`.  Whatever
ends the parent (it returns, raises, is interrupted, receives ``SIGTERM``, or is killed
outright with ``SIGKILL``), its workers end with it:

- each worker asks the kernel to kill it when its parent dies (Linux's
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), checks its parent did not die before that took
  effect, and watches its parent id from a thread as well (the portable fallback);
- workers ignore ``SIGINT``: an interrupt from the terminal reaches the whole process group,
  and it is the parent that stops the pool;
- when the block using the pool raises (an interrupt, a ``SystemExit`` from a signal, an
  error), the parent kills its workers before the exception goes on.

The number of workers is capped at the number of CPUs this process may run on.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import TextIO

__all__ = ["available_cpus", "cap_jobs", "worker_pool"]

_PR_SET_PDEATHSIG = 1
_WATCH_INTERVAL = 0.5


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where known)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cap_jobs(jobs: int, err: TextIO | None, option: str = "--jobs") -> int:
    """``jobs`` capped at :func:`available_cpus`, with a one-line note on ``err`` when it
    was lowered."""
    cpus = available_cpus()
    if jobs <= cpus:
        return jobs
    if err is not None:
        err.write(f"kprobe-ref: note: {option} {jobs} capped at {cpus}, the number of CPUs "
                  "available\n")
    return cpus


def _die_with_parent() -> None:
    """Linux: have the kernel send ``SIGKILL`` when the parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(_WATCH_INTERVAL)


def _bind_to_parent(parent: int) -> None:
    """Worker initializer: die with ``parent``, ignore terminal interrupts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="kprobe-ref-parent-watch").start()


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel queued work and kill the worker processes."""
    table = getattr(pool, "_processes", None)  # the executor keeps no public list
    processes = list(table.values()) if isinstance(table, dict) else []
    for proc in processes:
        with contextlib.suppress(OSError, ValueError):
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            proc.join(timeout=5)


@contextlib.contextmanager
def worker_pool(jobs: int, mp_context: BaseContext | None = None
                ) -> Iterator[ProcessPoolExecutor]:
    """A process pool of ``jobs`` workers bound to this process (see the module text).
    Leaving the block normally waits for the work; leaving it by an exception kills the
    workers first."""
    ctx = mp_context or multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_bind_to_parent,
                               initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        _kill_workers(pool)
        raise
    pool.shutdown(wait=True)
