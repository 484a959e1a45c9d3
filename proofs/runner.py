"""Collect every obligation, run them (on every core), and report.

The obligations of an ISA are those of :mod:`~kprobe_ref.proofs.decode`,
:mod:`~kprobe_ref.proofs.simulate`, :mod:`~kprobe_ref.proofs.relocate` and
:mod:`~kprobe_ref.proofs.slots` and :mod:`~kprobe_ref.proofs.boost` for each ISA that has a model
(:data:`kprobe_ref.models.MODULES`) and an implementation (:data:`kprobe_ref.arch.ARCHES`),
and those of :mod:`~kprobe_ref.proofs.rethook` (return-address hijacking) for every
implemented ISA.
Obligations run in forked worker processes, one per core; each worker rebuilds the same
list and runs the ones it is given by index.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import as_completed
from typing import TextIO

from kprobe_ref.arch import ARCHES
from kprobe_ref.models import MODULES
from kprobe_ref.proofs.boost import boost_obligations
from kprobe_ref.proofs.core import Obligation, Result
from kprobe_ref.proofs.decode import decode_obligations
from kprobe_ref.proofs.reach import reach_obligations
from kprobe_ref.proofs.relocate import relocate_obligations
from kprobe_ref.proofs.rethook import obligations as rethook_obligations
from kprobe_ref.proofs.simulate import simulate_obligations
from kprobe_ref.proofs.slots import slot_obligations
from kprobe_ref.tools.workers import available_cpus, worker_pool

__all__ = ["all_obligations", "isas", "report", "run", "run_iter"]


def isas() -> list[str]:
    """Every ISA with both a model and an implementation."""
    return [isa for isa in MODULES if isa in ARCHES]


def all_obligations(arch: str | None = None) -> list[Obligation]:
    """Every obligation of ``arch`` (every ISA when ``None``)."""
    out: list[Obligation] = []
    for isa in [arch] if arch else sorted(ARCHES):
        if isa in MODULES:
            out += decode_obligations(isa)
            out += simulate_obligations(isa)
            out += relocate_obligations(isa)
            out += slot_obligations(isa)
            out += boost_obligations(isa)
            out += reach_obligations(isa)
        if isa in ARCHES:
            out += rethook_obligations([isa])
    return out


_WORK: list[Obligation] = []


def _run_one(i: int) -> Result:
    return _WORK[i].check()


def run_iter(obligations: Sequence[Obligation], jobs: int | None = None
             ) -> Iterator[tuple[int, Result]]:
    """Run every obligation, yielding ``(index, result)`` as each one finishes.  ``jobs``
    defaults to the number of cores; 1 runs in this process, in order."""
    n = jobs or available_cpus()
    if n == 1 or len(obligations) < 2:
        for i, o in enumerate(obligations):
            yield i, o.check()
        return
    _WORK[:] = obligations
    # Largest first, so the slow ones do not end up last on one worker.
    slow = ("simulate", "instance-stack")
    order = sorted(range(len(obligations)), key=lambda i: obligations[i].kind not in slow)
    ctx = multiprocessing.get_context("fork")
    with worker_pool(n, ctx) as pool:
        futures = {pool.submit(_run_one, i): i for i in order}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run(obligations: Sequence[Obligation], jobs: int | None = None) -> list[Result]:
    """Run every obligation; results in the same order."""
    results = dict(run_iter(obligations, jobs))
    return [results[i] for i in range(len(obligations))]


def _cex(r: Result) -> str:
    if not r.counterexample:
        return ""
    return " ".join(f"{k}={v}" for k, v in r.counterexample.items())


_HEADER = f"{'ISA':<9} {'obligation':<19} {'class':<24} {'result':<7} {'seconds':>8}\n"


def _line(o: Obligation, r: Result) -> str:
    verdict = "proved" if r.proved else "FAILED"
    line = f"{o.isa:<9} {o.kind:<19} {o.klass:<24} {verdict:<7} {r.seconds:8.2f}\n"
    return line + (f"    {r.detail} {_cex(r)}\n" if not r.proved else "")


def _summary(out: TextIO, obligations: Sequence[Obligation], results: Sequence[Result],
             total: float) -> None:
    out.write("\ncounts (proved/total):\n")
    for (isa, kind), (ok, n) in sorted(_counts(obligations, results).items()):
        out.write(f"  {isa:<9} {kind:<19} {ok}/{n}\n")
    failed = sum(not r.proved for r in results)
    out.write(f"\n{len(results) - failed}/{len(results)} proved, {failed} failed, "
              f"{total:.1f} s total\n")


def report(out: TextIO, obligations: Sequence[Obligation], results: Sequence[Result],
           total: float) -> None:
    """The table, the counts per ISA and kind, and the total time."""
    out.write(_HEADER)
    for o, r in zip(obligations, results, strict=True):
        out.write(_line(o, r))
    _summary(out, obligations, results, total)


def _counts(obligations: Iterable[Obligation], results: Iterable[Result]
            ) -> dict[tuple[str, str], tuple[int, int]]:
    ok: Counter[tuple[str, str]] = Counter()
    n: Counter[tuple[str, str]] = Counter()
    for o, r in zip(obligations, results, strict=True):
        n[o.isa, o.kind] += 1
        ok[o.isa, o.kind] += r.proved
    return {k: (ok[k], n[k]) for k in n}


def report_json(out: TextIO, obligations: Sequence[Obligation], results: Sequence[Result],
                total: float) -> None:
    """The same as JSON: ``{"obligations": [...], "counts": [...], "seconds": total}``."""
    rows = [{"isa": o.isa, "kind": o.kind, "class": o.klass, "proved": r.proved,
             "seconds": round(r.seconds, 4), "counterexample": r.counterexample,
             "detail": r.detail} for o, r in zip(obligations, results, strict=True)]
    counts = [{"isa": isa, "kind": kind, "proved": ok, "total": n}
              for (isa, kind), (ok, n) in sorted(_counts(obligations, results).items())]
    json.dump({"obligations": rows, "counts": counts, "seconds": round(total, 2)}, out,
              indent=1)
    out.write("\n")


class _Progress:
    """``[done/total] failed: n`` on one terminal line, rewritten as results arrive;
    silent when the stream is not a terminal."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.done, self.failed = stream, total, 0, 0
        self.live = bool(getattr(stream, "isatty", lambda: False)())

    def step(self, r: Result) -> None:
        self.done += 1
        self.failed += not r.proved
        if self.live:
            self.stream.write(f"\r[{self.done}/{self.total}] proved {self.done - self.failed}"
                              f", failed {self.failed}")
            self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def prove_all(out: TextIO, arch: str | None, as_json: bool, progress: TextIO | None = None
              ) -> int:
    """``kprobe-ref prove``: a line per obligation as it finishes (the JSON document at
    the end with ``as_json``), progress on ``progress`` when it is a terminal; exit status
    0 when every obligation is proved, else 1."""
    start = time.perf_counter()
    obligations = all_obligations(arch)
    results: dict[int, Result] = {}
    bar = _Progress(progress, len(obligations)) if progress is not None else None
    if not as_json:
        out.write(_HEADER)
        out.flush()
    for i, r in run_iter(obligations):
        results[i] = r
        if bar is not None:
            bar.close()
        if not as_json:
            out.write(_line(obligations[i], r))
            out.flush()
        if bar is not None:
            bar.step(r)
    if bar is not None:
        bar.close()
    ordered = [results[i] for i in range(len(obligations))]
    total = time.perf_counter() - start
    if as_json:
        report_json(out, obligations, ordered, total)
    else:
        _summary(out, obligations, ordered, total)
    return 0 if all(r.proved for r in ordered) else 1
