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
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TextIO

from kprobe_ref.arch import ARCHES
from kprobe_ref.models import MODULES
from kprobe_ref.proofs.boost import boost_obligations
from kprobe_ref.proofs.core import Obligation, Result
from kprobe_ref.proofs.decode import decode_obligations
from kprobe_ref.proofs.relocate import relocate_obligations
from kprobe_ref.proofs.rethook import obligations as rethook_obligations
from kprobe_ref.proofs.simulate import simulate_obligations
from kprobe_ref.proofs.slots import slot_obligations

__all__ = ["all_obligations", "isas", "report", "run"]


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
        if isa in ARCHES:
            out += rethook_obligations([isa])
    return out


_WORK: list[Obligation] = []


def _run_one(i: int) -> Result:
    return _WORK[i].check()


def run(obligations: Sequence[Obligation], jobs: int | None = None) -> list[Result]:
    """Run every obligation; results in the same order.  ``jobs`` defaults to the number
    of cores; 1 runs in this process."""
    n = jobs or os.cpu_count() or 1
    if n == 1 or len(obligations) < 2:
        return [o.check() for o in obligations]
    _WORK[:] = obligations
    # Largest first, so the slow ones do not end up last on one worker.
    slow = ("simulate", "instance-stack")
    order = sorted(range(len(obligations)), key=lambda i: obligations[i].kind not in slow)
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(n, mp_context=ctx) as pool:
        results = dict(zip(order, pool.map(_run_one, order, chunksize=1), strict=True))
    return [results[i] for i in range(len(obligations))]


def _cex(r: Result) -> str:
    if not r.counterexample:
        return ""
    return " ".join(f"{k}={v}" for k, v in r.counterexample.items())


def report(out: TextIO, obligations: Sequence[Obligation], results: Sequence[Result],
           total: float) -> None:
    """The table, the counts per ISA and kind, and the total time."""
    out.write(f"{'ISA':<9} {'obligation':<19} {'class':<24} {'result':<7} {'seconds':>8}\n")
    for o, r in zip(obligations, results, strict=True):
        verdict = "proved" if r.proved else "FAILED"
        out.write(f"{o.isa:<9} {o.kind:<19} {o.klass:<24} {verdict:<7} {r.seconds:8.2f}\n")
        if not r.proved:
            out.write(f"    {r.detail} {_cex(r)}\n")
    out.write("\ncounts (proved/total):\n")
    for (isa, kind), (ok, n) in sorted(_counts(obligations, results).items()):
        out.write(f"  {isa:<9} {kind:<19} {ok}/{n}\n")
    failed = sum(not r.proved for r in results)
    out.write(f"\n{len(results) - failed}/{len(results)} proved, {failed} failed, "
              f"{total:.1f} s total\n")


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


def prove_all(out: TextIO, arch: str | None, as_json: bool) -> int:
    """``kprobe-ref prove``: exit status 0 when every obligation is proved, else 1."""
    start = time.perf_counter()
    obligations = all_obligations(arch)
    results = run(obligations)
    total = time.perf_counter() - start
    (report_json if as_json else report)(out, obligations, results, total)
    return 0 if all(r.proved for r in results) else 1
