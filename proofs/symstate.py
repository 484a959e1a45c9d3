"""A symbolic :class:`~kprobe_ref.arch.base.SimState` for running kprobe_ref's own rules on
Z3 terms, and the comparison of its final state with a model's.

The initial state is one set of Z3 variables (``pc`` for the instruction address, one
64-bit variable per register, ``mem`` for memory, one variable per extra register) shared
by the rule and the model, so the two results are comparable term by term.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import z3

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.models.state import Memory, State, load, store, symbolic_memory

__all__ = ["SymState", "initial_state", "same_state"]


def initial_state(regs: Iterable[str], extras: Iterable[str] = ()) -> State:
    """Fresh symbolic variables for the instruction address, registers, memory and extras
    (``q`` registers 128 bits wide, all others 64)."""
    return State(
        pc=z3.BitVec("pc", 64),
        regs={r: z3.BitVec(r, 64) for r in regs},
        mem=symbolic_memory(),
        extras={e: z3.BitVec(e, 128 if e.startswith("q") else 64) for e in extras},
    )


class SymState:
    """The :class:`SimState` a rule runs on: reads come from ``start``, writes are
    recorded.  ``zero`` names the register that reads 0 and drops writes."""

    def __init__(self, start: State, zero: str | None) -> None:
        self._start = start
        self.zero = zero
        self.regs: dict[str, BV] = dict(start.regs)
        self.mem: Memory = start.mem
        self.extras: dict[str, BV] = dict(start.extras)
        self.pc: BV | None = None

    @property
    def address(self) -> BV:
        return self._start.pc

    def reg(self, name: str) -> BV:
        if name == self.zero:
            return 0
        return self.regs[name]

    def set_reg(self, name: str, value: BV) -> None:
        if name != self.zero:
            if name not in self.regs:
                raise KeyError(f"rule wrote unknown register {name!r}")
            self.regs[name] = bits.wrap(value, 64)

    def set_pc(self, value: BV) -> None:
        self.pc = bits.wrap(value, 64)

    def load(self, addr: BV, size: int) -> BV:
        return load(self.mem, addr, size)

    def store(self, addr: BV, size: int, value: BV) -> None:
        self.mem = store(self.mem, addr, size, value)

    def extra(self, name: str) -> BV:
        return self.extras[name]

    def set_extra(self, name: str, value: BV) -> None:
        if name not in self.extras:
            raise KeyError(f"rule wrote unknown extra register {name!r}")
        self.extras[name] = value

    def start_as_final(self, pc: BV) -> State:
        """The initial state with ``pc``: the default a merge of rule results splits from."""
        return State(pc, dict(self._start.regs), self._start.mem, dict(self._start.extras))

    def final(self) -> State:
        """The state after the rule (the PC must have been set)."""
        if self.pc is None:
            raise ValueError("the rule did not set the PC")
        return State(self.pc, dict(self.regs), self.mem, dict(self.extras))


def _bv(x: BV, w: int) -> z3.BitVecRef:
    if isinstance(x, int):
        return z3.BitVecVal(x, w)
    return x if x.size() == w else z3.ZeroExt(w - x.size(), x)


def same_state(a: State, b: State) -> z3.BoolRef:
    """Two final states agree: PC, every register, memory and every extra register.  Pairs
    that are the same term are left out."""
    pairs: list[tuple[BV, BV, int]] = [(a.pc, b.pc, 64)]
    pairs += [(a.regs[r], b.regs[r], 64) for r in a.regs]
    pairs += [(a.extras[e], b.extras[e], 128) for e in a.extras]
    parts = [_bv(x, w) == _bv(y, w) for x, y, w in pairs if not _same(x, y)]
    if not _same(a.mem, b.mem):
        parts.append(a.mem == b.mem)
    return z3.And(True, *parts)


def _same(x: object, y: object) -> bool:
    if isinstance(x, z3.AstRef) and isinstance(y, z3.AstRef):
        return bool(x.eq(y))
    return x is y or (isinstance(x, int) and isinstance(y, int) and x == y)


def _merge_value(cases: Mapping[int, BV], key: BV, width: int, default: BV, w: int) -> BV:
    out = default
    for k, value in cases.items():
        if not _same(value, default):
            out = bits.ite(bits.eq(key, k, width), value, out, w)
    return out


def merge(cases: Mapping[int, State], key: BV, width: int, default: State) -> State:
    """One state from several: ``cases[k]`` where ``key == k``, else ``default``.  Values
    every case leaves as in ``default`` are not split."""
    mem: Memory = default.mem
    for k, st in cases.items():
        if not _same(st.mem, default.mem):
            mem = z3.If(bits.eq(key, k, width), st.mem, mem)
    return State(
        _merge_value({k: st.pc for k, st in cases.items()}, key, width, default.pc, 64),
        {r: _merge_value({k: st.regs[r] for k, st in cases.items()}, key, width,
                         default.regs[r], 64) for r in default.regs},
        mem,
        {e: _merge_value({k: st.extras[e] for k, st in cases.items()}, key, width,
                         default.extras[e], 128) for e in default.extras},
    )
