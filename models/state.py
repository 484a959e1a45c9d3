"""Machine state of the instruction models, and the few helpers every model shares.

A model step maps a :class:`State` before one instruction to the state after it.  The state
is the instruction's address (``pc``), named 64-bit registers, memory and the registers
outside ``pt_regs`` (``extras``: FP/SIMD).  Every value is a :data:`~kprobe_ref.bits.BV`:
a plain integer when a model runs concretely (against a CPU emulator) and a Z3 term when it
runs symbolically (in a proof).  Memory is a Z3 array from 64-bit addresses to bytes in
the symbolic world and a dictionary of bytes (absent bytes read 0) in the concrete one;
this module is the only place in the models that tells the two apart.

Register numbers in an encoding are fields like any other: a model reads register ``n``
with :func:`read_indexed`, a selection over every register keyed by the (possibly
symbolic) number, so a model never branches in Python on a field value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import z3

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond

__all__ = [
    "Memory",
    "ModelClass",
    "State",
    "bit",
    "flag",
    "load",
    "read_indexed",
    "select",
    "store",
    "symbolic_memory",
    "write_indexed",
]

Memory: TypeAlias = "z3.ArrayRef | dict[int, int]"
"""Byte-addressed memory: a Z3 array (BitVec 64 -> BitVec 8) or ``{address: byte}``."""


@dataclass(frozen=True)
class State:
    """Architectural state at one instruction boundary."""

    pc: BV
    regs: Mapping[str, BV]
    mem: Memory
    extras: Mapping[str, BV] = field(default_factory=dict)

    def reg(self, name: str) -> BV:
        """A register's value."""
        return self.regs[name]

    def evolve(self, pc: BV, regs: Mapping[str, BV] | None = None, mem: Memory | None = None,
               extras: Mapping[str, BV] | None = None) -> State:
        """The next state: ``pc`` and the given registers, memory and extras replaced."""
        new_regs = {**self.regs, **(regs or {})}
        new_extras = {**self.extras, **(extras or {})}
        return replace(self, pc=pc, regs=new_regs, mem=self.mem if mem is None else mem,
                       extras=new_extras)


@dataclass(frozen=True)
class ModelClass:
    """One instruction class of a model.

    ``encoding(word)`` is the class's encoding predicate over the instruction word of
    ``width`` bits; ``step(state, word)`` the next state.  ``pc_use`` says whether the
    class reads or writes the PC other than by falling through (every class listed as a
    model does).  x86_64 keys its classes differently (see :mod:`kprobe_ref.models.x86_64`).
    """

    name: str
    width: int
    encoding: Callable[[BV], Cond]
    step: Callable[[State, BV], State]
    manual: str = ""


def symbolic_memory(name: str = "mem") -> z3.ArrayRef:
    """A fresh symbolic memory."""
    return z3.Array(name, z3.BitVecSort(64), z3.BitVecSort(8))


def load(mem: Memory, addr: BV, size: int) -> BV:
    """``size`` bytes at ``addr``, little-endian, as an unsigned value of ``8 * size`` bits."""
    if isinstance(mem, dict):
        addr = bits.concrete(addr, "an address in concrete memory")
        return sum(mem.get((addr + i) & bits.mask(64), 0) << (8 * i) for i in range(size))
    parts = [z3.Select(mem, bits.add(addr, i)) for i in reversed(range(size))]
    return parts[0] if size == 1 else z3.Concat(*parts)


def store(mem: Memory, addr: BV, size: int, value: BV) -> Memory:
    """Memory with the low ``size`` bytes of ``value`` written at ``addr``, little-endian."""
    if isinstance(mem, dict):
        addr = bits.concrete(addr, "an address in concrete memory")
        value = bits.concrete(value, "a value in concrete memory")
        out = dict(mem)
        for i in range(size):
            out[(addr + i) & bits.mask(64)] = (value >> (8 * i)) & 0xFF
        return out
    arr: Any = mem
    for i in range(size):
        arr = z3.Store(arr, bits.add(addr, i), bits.extract(bits.wrap(value, 8 * size), 8 * i + 7,
                                                             8 * i))
    return arr


def bit(x: BV, n: int) -> Cond:
    """Whether bit ``n`` of ``x`` is set."""
    return bits.eq(bits.extract(x, n, n), 1, 1)


def flag(c: Cond) -> BV:
    """A condition as a 1-bit value."""
    return bits.ite(c, 1, 0, 1)


def constant(x: BV) -> int | None:
    """The value of ``x`` if it is a constant (a symbolic term is simplified first)."""
    if bits.is_concrete(x):
        return x
    s = z3.simplify(x)
    return s.as_long() if z3.is_bv_value(s) else None


def select(index: BV, values: Sequence[BV], w: int, iw: int) -> BV:
    """``values[index]`` for an ``iw``-bit ``index`` (values of width ``w``); an index past
    the end selects the last value.  A constant index selects directly."""
    k = constant(index)
    if k is not None:
        return values[min(k & bits.mask(iw), len(values) - 1)]
    out = values[-1]
    for k in reversed(range(len(values) - 1)):
        out = bits.ite(bits.eq(index, k, iw), values[k], out, w)
    return out


def read_indexed(regs: Mapping[str, BV], names: Sequence[str | None], index: BV,
                 iw: int) -> BV:
    """Register number ``index`` (an ``iw``-bit field): ``names[n]`` is its name, ``None``
    for a register that reads as zero."""
    values = [0 if n is None else regs[n] for n in names]
    return select(index, values, 64, iw)


def write_indexed(regs: Mapping[str, BV], names: Sequence[str | None], index: BV, iw: int,
                  value: BV) -> dict[str, BV]:
    """The register updates of writing ``value`` to register number ``index``; a ``None``
    name is a zero register and takes no write."""
    k = constant(index)
    if k is not None:
        name = names[k & bits.mask(iw)]
        return {} if name is None else {name: value}
    return {n: bits.ite(bits.eq(index, k, iw), value, regs[n])
            for k, n in enumerate(names) if n is not None}
