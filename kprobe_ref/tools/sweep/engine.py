"""Running the shards of a sweep on Dask distributed, with checkpoints and progress.

:func:`sweep` plans the shards, drops those the checkpoint file already holds, and sends the
rest to a Dask cluster: a ``LocalCluster`` of one single-threaded worker process per core by
default, or the scheduler at ``scheduler`` (``tcp://host:8786``) whose workers may run on
other machines (they need kprobe-ref and the same pypcode and capstone installed; a record
made with other tool versions is not reused).  Each finished shard is checkpointed at once;
a progress line gives shards and words done, the words per second of this run and the time
left.  ``inline=True`` runs the shards in this process, one after the other, without Dask
(the reference the benchmark compares the cluster's results with).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any, TextIO

from kprobe_ref.tools.sweep import ours
from kprobe_ref.tools.sweep.plan import Shard
from kprobe_ref.tools.sweep.shard import run_shard
from kprobe_ref.tools.sweep.store import Store

__all__ = ["sweep", "tool_versions", "work"]


def tool_versions() -> dict[str, str]:
    """The versions of the decoders a record depends on."""
    return {name: metadata.version(name) for name in ("pypcode", "capstone")}


def work(shard: Shard) -> dict[str, Any]:
    """Run one shard (on a worker) and label its record."""
    rec = run_shard(shard.isa, shard.width, shard.lo, shard.hi)
    rec["shard"] = shard.name
    rec["versions"] = tool_versions()
    return rec


def _inline(todo: Sequence[Shard]) -> Iterator[dict[str, Any]]:
    for s in todo:
        yield work(s)


def _dask(todo: Sequence[Shard], scheduler: str | None, workers: int | None,
          timeout: float) -> Iterator[dict[str, Any]]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               host="127.0.0.1")
        client = Client(cluster, timeout=timeout)
    else:
        client = Client(scheduler, timeout=timeout)
    try:
        futures = client.map(work, list(todo), pure=False, retries=1)
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def sweep(shards: Sequence[Shard], results: str, *, scheduler: str | None = None,
          workers: int | None = None, inline: bool = False, progress: TextIO | None = None,
          timeout: float = 60.0) -> list[dict[str, Any]]:
    """Run every shard not yet checkpointed under ``results`` and return the records of
    all of ``shards``, in shard order."""
    progress = progress or sys.stderr
    versions = tool_versions()
    isas = sorted({s.isa for s in shards})
    done: dict[str, dict[str, Any]] = {}
    for isa in isas:
        done.update(Store(results, isa).load(ours.fingerprint(isa), versions))
    todo = [s for s in shards if s.name not in done]
    total = sum(s.words for s in todo)
    if todo:
        print(f"sweep: {len(todo)} of {len(shards)} shards to run ({total:,} words), "
              f"{len(shards) - len(todo)} checkpointed", file=progress)
    t0, words = time.monotonic(), 0
    stream = _inline(todo) if inline else _dask(todo, scheduler, workers, timeout)
    for k, rec in enumerate(stream, 1):
        Store(results, rec["isa"]).append(rec)
        done[rec["shard"]] = rec
        words += rec["words"]
        rate = words / max(time.monotonic() - t0, 1e-9)
        left = (total - words) / rate if rate else 0.0
        print(f"sweep: {k}/{len(todo)} shards, {words:,}/{total:,} words, "
              f"{rate:,.0f} words/s, ETA {_eta(left)}", file=progress, flush=True)
    return [done[s.name] for s in shards]
