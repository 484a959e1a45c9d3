"""What an obligation is, what its result says, and how a claim is discharged.

An :class:`Obligation` names the ISA, the kind of claim (``decode-disjoint``,
``decode-model``, ``decode-pc``, ``simulate``, ``relocate``, ``relocate-necessity``,
``breakpoint``, ``slot``) and the instruction class it is about; ``check()`` runs the solver
and returns a :class:`Result`.  A claim is *proved* when Z3 finds its negation
unsatisfiable; otherwise the model of the negation is the counterexample, given as
``{variable: hex value}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import z3

__all__ = ["TIMEOUT_MS", "Obligation", "Result", "counterexample", "prove", "timed"]

TIMEOUT_MS = 60_000
"""A claim Z3 cannot settle within this time is reported unproved ("unknown")."""


@dataclass(frozen=True)
class Result:
    """The outcome of one obligation."""

    proved: bool
    seconds: float
    counterexample: dict[str, str] | None
    detail: str


@dataclass(frozen=True)
class Obligation:
    """One claim about one instruction class of one ISA."""

    isa: str
    kind: str
    klass: str
    check: Callable[[], Result]


def counterexample(model: z3.ModelRef) -> dict[str, str]:
    """A solver model as ``{name: value}``: bit-vectors in hex, arrays as their default and
    explicit entries, booleans as ``true``/``false``."""
    out: dict[str, str] = {}
    for decl in sorted(model.decls(), key=lambda d: d.name()):
        value = model[decl]
        if isinstance(value, z3.BitVecNumRef):
            out[decl.name()] = hex(value.as_long())
        else:
            out[decl.name()] = str(value).replace("\n", " ")[:200]
    return out


def prove(claim: z3.BoolRef | bool, detail: str = "") -> Result:
    """Prove ``claim`` for every value of its free variables."""
    start = time.perf_counter()
    solver = z3.Solver()
    solver.set("timeout", TIMEOUT_MS)
    solver.add(z3.Not(claim))
    verdict = solver.check()
    seconds = time.perf_counter() - start
    if verdict == z3.unsat:
        return Result(True, seconds, None, detail)
    if verdict == z3.sat:
        return Result(False, seconds, counterexample(solver.model()), detail)
    return Result(False, seconds, None, f"solver gave up ({solver.reason_unknown()}); {detail}")


def timed(fn: Callable[[], Result]) -> Callable[[], Result]:
    """Wrap a check so its seconds include building the claim, and so an exception in the
    rule under test becomes a failed result naming it."""

    def run() -> Result:
        start = time.perf_counter()
        try:
            r = fn()
        except Exception as exc:  # a rule that crashes on some input is a failed proof
            return Result(False, time.perf_counter() - start, None,
                          f"{type(exc).__name__}: {exc}")
        return Result(r.proved, time.perf_counter() - start, r.counterexample, r.detail)

    return run
