"""Varnodes and the value store that compiled P-code ops run on.

A varnode is ``size`` bytes at ``offset`` in one of P-code's address spaces.  Compiled ops
read and write varnodes only through the :class:`State` protocol, so a symbolic store can
later run the same ops; :class:`IntegerState` is the store the CPU runs on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode.memory import PAGE_SHIFT, PAGE_SIZE, Memory
from kprobe_ref.sim.pcode.trap import Trap

__all__ = ["IntegerState", "RegisterFile", "Space", "State", "Vn", "vn"]


class Space(enum.IntEnum):
    """The address spaces P-code varnodes live in."""

    CONST = 0
    REGISTER = 1
    UNIQUE = 2
    RAM = 3


class Vn(NamedTuple):
    """A varnode: ``size`` bytes at ``offset`` in ``space`` (a constant's value is its
    offset)."""

    space: Space
    offset: int
    size: int


_SPACES = {"const": Space.CONST, "register": Space.REGISTER, "unique": Space.UNIQUE}


def vn(v: Any) -> Vn:
    """Convert a pypcode varnode."""
    return Vn(_SPACES.get(v.space.name, Space.RAM), int(v.offset), int(v.size))


class State(Protocol):
    """The value store the compiled ops run on.

    ``get`` and ``set`` cover the constant, register, unique and RAM spaces (a RAM varnode
    is a direct memory operand); ``load`` and ``store`` are P-code's LOAD and STORE.
    ``next_pc`` receives the target of a branch out of the instruction.
    """

    next_pc: BV

    def get(self, vn: Vn) -> BV:
        """Return the value of ``vn``."""

    def set(self, vn: Vn, value: BV) -> None:
        """Write ``value`` (taken modulo the varnode's width) to ``vn``."""

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read of ``size`` bytes."""

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write of ``size`` bytes."""


class RegisterFile:
    """Sparse little-endian byte store for the register space (riscv CSRs sit near
    ``0x9000_0000``), in chunks of 4 KiB."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytearray] = {}

    def chunk(self, c: int) -> bytearray:
        """Return chunk ``c`` (bytes ``c * 4096`` on), created zeroed on first use.  A
        chunk is never replaced once created (:meth:`load` copies into it), so compiled
        code may hold on to it."""
        chunk = self.chunks.get(c)
        if chunk is None:
            chunk = self.chunks[c] = bytearray(PAGE_SIZE)
        return chunk

    def read(self, off: int, size: int) -> int:
        """Return the ``size``-byte value at ``off``."""
        lo = off & (PAGE_SIZE - 1)
        if lo + size <= PAGE_SIZE:
            chunk = self.chunks.get(off >> PAGE_SHIFT)
            return 0 if chunk is None else int.from_bytes(chunk[lo : lo + size], "little")
        raw = bytes(self.chunk((off + i) >> PAGE_SHIFT)[(off + i) & 0xFFF] for i in range(size))
        return int.from_bytes(raw, "little")

    def snapshot(self) -> dict[int, bytes]:
        """Return a copy of every chunk."""
        return {c: bytes(b) for c, b in self.chunks.items()}

    def load(self, snapshot: dict[int, bytes]) -> None:
        """Make the register space equal to ``snapshot`` (from :meth:`snapshot`): chunks
        are overwritten in place; chunks the snapshot lacks read as zeros, as before they
        were created."""
        for c, chunk in self.chunks.items():
            chunk[:] = snapshot.get(c, bytes(PAGE_SIZE))
        for c, raw in snapshot.items():
            self.chunk(c)[:] = raw

    def write(self, off: int, size: int, value: int) -> None:
        """Store the low ``size`` bytes of ``value`` at ``off``."""
        raw = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        lo = off & (PAGE_SIZE - 1)
        if lo + size <= PAGE_SIZE:
            self.chunk(off >> PAGE_SHIFT)[lo : lo + size] = raw
            return
        for i, b in enumerate(raw):
            self.chunk((off + i) >> PAGE_SHIFT)[(off + i) & 0xFFF] = b


class IntegerState:
    """A :class:`State` over plain integers: registers, unique temporaries and memory.

    A Z3 address or stored value raises ``TypeError`` (:func:`kprobe_ref.bits.concrete`)."""

    def __init__(self, memory: Memory) -> None:
        self.regs = RegisterFile()
        self.unique: dict[int, tuple[int, int]] = {}
        self.mem = memory
        self.next_pc: BV = 0
        self.on_store: Callable[[int, int], None] = lambda addr, size: None

    def get(self, vn: Vn) -> int:
        """Return the value of ``vn``."""
        space, off, size = vn
        if space is Space.REGISTER:
            return self.regs.read(off, size)
        if space is Space.UNIQUE:
            return self._get_unique(off, size)
        if space is Space.CONST:
            return off & ((1 << (8 * size)) - 1)
        return self.mem.load(off, size)

    def _get_unique(self, off: int, size: int) -> int:
        """Read a temporary, also when it is a piece of a wider one written earlier."""
        hit = self.unique.get(off)
        if hit is not None and hit[1] >= size:
            return hit[0] & ((1 << (8 * size)) - 1)
        for start, (value, wsize) in self.unique.items():
            if start <= off and off + size <= start + wsize:
                return (value >> (8 * (off - start))) & ((1 << (8 * size)) - 1)
        return 0

    def set(self, vn: Vn, value: BV) -> None:
        """Write ``value`` to ``vn``.  ``value`` is an ``int``: it comes from an operation
        over this state's integers.  The assertion states that invariant for the type
        checker; it is not a question about the value (those go through
        :func:`kprobe_ref.bits.is_concrete`), and a call there would cost this hottest path
        of the CPU about 1.5%."""
        assert isinstance(value, int)
        space, off, size = vn
        if space is Space.REGISTER:
            self.regs.write(off, size, value)
        elif space is Space.UNIQUE:
            self.unique[off] = (value & ((1 << (8 * size)) - 1), size)
        elif space is Space.RAM:
            self.store(off, size, value)
        else:
            raise Trap(StopKind.FAULT, detail=f"write to constant varnode {vn}")

    def load(self, addr: BV, size: int) -> int:
        """Guest memory read."""
        return self.mem.load(bits.concrete(addr, "an address"), size)

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write; tells ``on_store`` so cached code there is dropped."""
        addr = bits.concrete(addr, "an address")
        self.mem.store(addr, size, bits.concrete(value))
        self.on_store(addr & 0xFFFF_FFFF_FFFF_FFFF, size)
