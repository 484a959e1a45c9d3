"""Decode-table obligations.

- ``decode-disjoint``: each row shares no encoding with any other row of its table (x86_64:
  over opcode map, opcode byte and ModRM byte, so the ModRM.reg groups are included).
- ``decode-model``: for every class the models define, the union of the class's rows is
  exactly the model's encoding predicate (a Z3 equivalence over the symbolic word).
- ``decode-pc`` (fixed-width ISAs): no word the table steps out of line (one no row
  matches) satisfies the predicate of any class that reads or writes the PC, as the model
  lists them from the manual.  Words the implementation also refuses because capstone
  (loongarch64: Ghidra's specification) cannot decode them are included: the claim is
  stronger than needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import z3

from kprobe_ref.arch.base import Verdict
from kprobe_ref.models import model
from kprobe_ref.proofs.core import Obligation, Result, prove, timed
from kprobe_ref.proofs.tables import (
    decode_module,
    row_predicate,
    row_width,
    x86_row_predicate,
)

__all__ = ["decode_obligations"]


def _label(rows: Sequence[Any], i: int) -> str:
    same = [j for j, r in enumerate(rows) if r.klass == rows[i].klass]
    return rows[i].klass if len(same) == 1 else f"{rows[i].klass}#{same.index(i) + 1}"


def _fixed_disjoint(rows: Sequence[Any], i: int) -> Result:
    width = row_width(rows[i])
    w = z3.BitVec("word", width)
    others = [row_predicate(r, w) for j, r in enumerate(rows) if j != i and row_width(r) == width]
    return prove(z3.Not(z3.And(row_predicate(rows[i], w), z3.Or(False, *others))))


def _fixed_model(rows: Sequence[Any], klass: str, isa: str) -> Result:
    cls = model(isa).CLASSES[klass]
    w = z3.BitVec("word", cls.width)
    mine = [row_predicate(r, w) for r in rows if r.klass == klass and row_width(r) == cls.width]
    if not mine:
        return Result(False, 0.0, None, f"no {cls.width}-bit row of class {klass}")
    return prove(z3.Or(*mine) == cls.encoding(w), cls.manual)


def _stepped(rows: Sequence[Any], w: z3.BitVecRef, width: int) -> z3.BoolRef:
    """The word is stepped out of line: no row matches, or a stepping row does."""
    hits = [row_predicate(r, w) for r in rows if row_width(r) == width]
    steps = [row_predicate(r, w) for r in rows
             if row_width(r) == width and r.verdict is Verdict.STEP_OUT_OF_LINE]
    return z3.Or(z3.Not(z3.Or(False, *hits)), *steps)


def _fixed_pc(rows: Sequence[Any], width: int, pred: Any) -> Result:
    w = z3.BitVec("word", width)
    return prove(z3.Implies(_stepped(rows, w, width), z3.Not(pred(w))))


def _fixed_obligations(isa: str, rows: Sequence[Any]) -> list[Obligation]:
    m = model(isa)
    obs = [Obligation(isa, "decode-disjoint", _label(rows, i),
                      timed(partial(_fixed_disjoint, rows, i))) for i in range(len(rows))]
    obs += [Obligation(isa, "decode-model", k, timed(partial(_fixed_model, rows, k, isa)))
            for k in m.CLASSES]
    obs += [Obligation(isa, "decode-pc", name, timed(partial(_fixed_pc, rows, wd, p)))
            for name, (wd, p) in m.PC_CLASSES.items()]
    return obs


# -- x86_64 -----------------------------------------------------------------------------------

_OPMAPS = ("1byte", "0f")


def _x86_vars() -> tuple[z3.BitVecRef, z3.BitVecRef]:
    return z3.BitVec("opcode", 8), z3.BitVec("modrm", 8)


def _x86_disjoint(rows: Sequence[Any], i: int) -> Result:
    op, modrm = _x86_vars()
    claims = []
    for opmap in _OPMAPS:
        mine = x86_row_predicate(rows[i], opmap, op, modrm)
        others = [x86_row_predicate(r, opmap, op, modrm) for j, r in enumerate(rows) if j != i]
        claims.append(z3.Not(z3.And(mine, z3.Or(False, *others))))
    return prove(z3.And(*claims))


def _x86_model(rows: Sequence[Any], klass: str) -> Result:
    cls = model("x86_64").CLASSES[klass]
    op, modrm = _x86_vars()
    mine = [x86_row_predicate(r, cls.opmap, op, modrm) for r in rows if r.klass == klass]
    if not mine:
        return Result(False, 0.0, None, f"no row of class {klass}")
    return prove(z3.Or(*mine) == cls.encoding(op, modrm), cls.manual)


def _x86_obligations(rows: Sequence[Any]) -> list[Obligation]:
    obs = [Obligation("x86_64", "decode-disjoint", _label(rows, i),
                      timed(partial(_x86_disjoint, rows, i))) for i in range(len(rows))]
    obs += [Obligation("x86_64", "decode-model", k, timed(partial(_x86_model, rows, k)))
            for k in model("x86_64").CLASSES]
    return obs


def decode_obligations(isa: str, rows: Sequence[Any] | None = None) -> list[Obligation]:
    """The decode obligations of ``isa`` over ``rows`` (default: the implementation's
    table; the regression tests pass mutated copies)."""
    table = list(decode_module(isa).ROWS if rows is None else rows)
    if isa == "x86_64":
        return _x86_obligations(table)
    return _fixed_obligations(isa, table)


