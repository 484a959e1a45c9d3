"""The P-code interpreter CPU backend: one guest CPU for all four ISAs.

unicorn has no LoongArch, so the simulated machine has a second backend that interprets
Ghidra's P-code (SLEIGH specifications, through pypcode).  It is also an independent second
CPU for x86_64, aarch64 and riscv64, which the tests compare against unicorn.

How one instruction runs:

1. The PC's page must be mapped executable.  The instruction is looked up in the translation
   cache; on a miss its bytes are fetched (at most 16, never across a page the guest may not
   execute), translated with ``max_instructions=1`` and compiled: each P-code op becomes a
   small closure over a :class:`State`.  LoongArch words first go through
   :mod:`kprobe_ref.sim.loongarch_overrides` (aarch64 words through
   :mod:`kprobe_ref.sim.aarch64_overrides`), which replaces Ghidra's P-code where the
   specification is wrong.
2. The closures run in order.  Each returns the index of the next op, or ``EXIT`` after it
   set ``State.next_pc`` (a branch out of the instruction).  Relative branches (a target in
   the constant space) move inside the instruction's op list.
3. Traps (breakpoints, system calls, faults, unimplemented operations) raise
   :class:`Trap`; the run loop turns it into a :class:`~kprobe_ref.sim.cpu.Stop` whose ``pc``
   is the address of the instruction.  A faulting instruction may leave the registers it
   wrote before the fault written (the machine treats a fault as fatal).

Every arithmetic and logic operation goes through :mod:`kprobe_ref.bits`, and all values
flow through the :class:`State` protocol, so a symbolic state can later run the same
compiled ops.  Floating-point ops are concrete only (IEEE single and double through
``struct``).

The trap-raising and harmless user-defined operations (``CALLOTHER``) are listed in the
one table :data:`CALLOTHERS`; anything not in it stops the CPU with a FAULT naming it.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, Protocol

import pypcode
import z3

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim import aarch64_overrides, loongarch_overrides
from kprobe_ref.sim.cpu import Perms, Stop, StopKind

__all__ = [
    "CALLOTHERS",
    "EXIT",
    "LANGUAGES",
    "PAGE_SIZE",
    "CallOther",
    "ConcreteState",
    "GuestFault",
    "Memory",
    "PcodeCpu",
    "Space",
    "State",
    "Trap",
    "Vn",
]

LANGUAGES: dict[str, str] = {
    "x86_64": "x86:LE:64:default",
    "aarch64": "AARCH64:LE:64:v8A",
    "riscv64": "RISCV:LE:64:RV64GC",
    "loongarch64": "Loongarch:LE:64:lp64d",
}
"""The SLEIGH language of each ISA (AARCH64 v8A is v8.5-A and decodes ``bc.cond``)."""

PAGE_SIZE = 4096
_PAGE_SHIFT = 12
_MAX_INSN = 16
EXIT = -1
"""What a compiled op returns when the instruction continues at ``State.next_pc``."""

_R, _W, _X = 1, 2, 4


# ---------------------------------------------------------------------------------------
# Traps


class Trap(Exception):
    """Raised inside an instruction to stop the CPU; the run loop adds the PC."""

    def __init__(
        self, kind: StopKind, code: int = 0, detail: str = "", fault_addr: int | None = None
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.fault_addr = fault_addr


class GuestFault(Trap):
    """A guest access to unmapped memory or against the page permissions."""

    def __init__(self, addr: int, access: str, why: str) -> None:
        super().__init__(StopKind.FAULT, 0, f"{access} of {addr:#x}: {why}", addr)


# ---------------------------------------------------------------------------------------
# Memory


def _perm_bits(perms: Perms) -> int:
    """Return the permission string ``perms`` as a bit set of ``_R | _W | _X``."""
    if set(perms) - set("rwx"):
        raise ValueError(f"bad permissions {perms!r}: use the letters r, w and x")
    return (_R if "r" in perms else 0) | (_W if "w" in perms else 0) | (_X if "x" in perms else 0)


def _page_range(addr: int, size: int) -> range:
    """Return the page numbers covering ``size`` bytes at ``addr``."""
    return range(addr >> _PAGE_SHIFT, (addr + size + PAGE_SIZE - 1) >> _PAGE_SHIFT)


class Memory:
    """Sparse little-endian memory of 4 KiB pages, each with its own permissions.

    Host accesses (:meth:`read`, :meth:`write`) ignore permissions and raise ``ValueError``
    on unmapped pages; guest accesses (:meth:`load`, :meth:`store`, :meth:`fetch`) obey
    them and raise :class:`GuestFault`.
    """

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.perm: dict[int, int] = {}

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map zeroed pages; the range must be page-aligned and not yet mapped."""
        if addr % PAGE_SIZE or size % PAGE_SIZE or size <= 0:
            raise ValueError(f"map({addr:#x}, {size:#x}): not page-aligned")
        bits_ = _perm_bits(perms)
        pages = _page_range(addr, size)
        if any(p in self.data for p in pages):
            raise ValueError(f"map({addr:#x}, {size:#x}): overlaps a mapped page")
        for p in pages:
            self.data[p] = bytearray(PAGE_SIZE)
            self.perm[p] = bits_

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        """Set the permissions of mapped pages."""
        bits_ = _perm_bits(perms)
        pages = _page_range(addr, size)
        for p in pages:
            if p not in self.data:
                raise ValueError(f"protect: page {p << _PAGE_SHIFT:#x} is not mapped")
        for p in pages:
            self.perm[p] = bits_

    def _span(self, addr: int, n: int) -> list[tuple[bytearray, int, int]]:
        """Split ``n`` bytes at ``addr`` into (page, start, end) pieces, host view."""
        pieces = []
        while n > 0:
            page = self.data.get(addr >> _PAGE_SHIFT)
            if page is None:
                raise ValueError(f"host access to unmapped address {addr:#x}")
            lo = addr & (PAGE_SIZE - 1)
            k = min(n, PAGE_SIZE - lo)
            pieces.append((page, lo, lo + k))
            addr, n = addr + k, n - k
        return pieces

    def read(self, addr: int, n: int) -> bytes:
        """Host read, ignoring permissions."""
        return b"".join(bytes(p[a:b]) for p, a, b in self._span(addr, n))

    def write(self, addr: int, data: bytes) -> None:
        """Host write, ignoring permissions."""
        pos = 0
        for p, a, b in self._span(addr, len(data)):
            p[a:b] = data[pos : pos + b - a]
            pos += b - a

    def _check(self, addr: int, n: int, need: int, access: str) -> None:
        """Raise :class:`GuestFault` unless every page of the access allows ``need``."""
        for p in _page_range(addr, n):
            perm = self.perm.get(p)
            where = max(addr, p << _PAGE_SHIFT)
            if perm is None:
                raise GuestFault(where, access, "unmapped")
            if not perm & need:
                raise GuestFault(where, access, "forbidden by page permissions")

    def load(self, addr: int, n: int) -> int:
        """Guest read of an ``n``-byte little-endian value."""
        addr &= 0xFFFF_FFFF_FFFF_FFFF
        p = addr >> _PAGE_SHIFT
        lo = addr & (PAGE_SIZE - 1)
        if lo + n <= PAGE_SIZE and self.perm.get(p, 0) & _R:
            return int.from_bytes(self.data[p][lo : lo + n], "little")
        self._check(addr, n, _R, "read")
        return int.from_bytes(self.read(addr, n), "little")

    def store(self, addr: int, n: int, value: int) -> None:
        """Guest write of an ``n``-byte little-endian value."""
        addr &= 0xFFFF_FFFF_FFFF_FFFF
        p = addr >> _PAGE_SHIFT
        lo = addr & (PAGE_SIZE - 1)
        raw = (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
        if lo + n <= PAGE_SIZE and self.perm.get(p, 0) & _W:
            self.data[p][lo : lo + n] = raw
            return
        self._check(addr, n, _W, "write")
        self.write(addr, raw)

    def fetch(self, addr: int) -> bytes:
        """Return up to 16 instruction bytes at ``addr``, stopping at a non-executable page.

        Raises :class:`GuestFault` when ``addr`` itself cannot be executed.
        """
        self._check(addr, 1, _X, "fetch")
        out = b""
        while len(out) < _MAX_INSN:
            cur = addr + len(out)
            p = cur >> _PAGE_SHIFT
            if not self.perm.get(p, 0) & _X:
                break
            lo = cur & (PAGE_SIZE - 1)
            out += bytes(self.data[p][lo : min(PAGE_SIZE, lo + _MAX_INSN - len(out))])
        return out

    def executable(self, addr: int, length: int) -> bool:
        """Tell whether every byte of ``length`` bytes at ``addr`` may be executed."""
        return all(self.perm.get(p, 0) & _X for p in _page_range(addr, length))


# ---------------------------------------------------------------------------------------
# Varnodes and the value store


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


def _vn(v: Any) -> Vn:
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


class _RegisterFile:
    """Sparse little-endian byte store for the register space (riscv CSRs sit near
    ``0x9000_0000``), in chunks of 4 KiB."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytearray] = {}

    def _chunk(self, c: int) -> bytearray:
        chunk = self.chunks.get(c)
        if chunk is None:
            chunk = self.chunks[c] = bytearray(PAGE_SIZE)
        return chunk

    def read(self, off: int, size: int) -> int:
        """Return the ``size``-byte value at ``off``."""
        lo = off & (PAGE_SIZE - 1)
        if lo + size <= PAGE_SIZE:
            chunk = self.chunks.get(off >> _PAGE_SHIFT)
            return 0 if chunk is None else int.from_bytes(chunk[lo : lo + size], "little")
        raw = bytes(self._chunk((off + i) >> _PAGE_SHIFT)[(off + i) & 0xFFF] for i in range(size))
        return int.from_bytes(raw, "little")

    def write(self, off: int, size: int, value: int) -> None:
        """Store the low ``size`` bytes of ``value`` at ``off``."""
        raw = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        lo = off & (PAGE_SIZE - 1)
        if lo + size <= PAGE_SIZE:
            self._chunk(off >> _PAGE_SHIFT)[lo : lo + size] = raw
            return
        for i, b in enumerate(raw):
            self._chunk((off + i) >> _PAGE_SHIFT)[(off + i) & 0xFFF] = b


class ConcreteState:
    """A :class:`State` over plain integers: registers, unique temporaries and memory."""

    def __init__(self, memory: Memory) -> None:
        self.regs = _RegisterFile()
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
        """Write ``value`` to ``vn``."""
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
        assert isinstance(addr, int)
        return self.mem.load(addr, size)

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write; tells ``on_store`` so cached code there is dropped."""
        assert isinstance(addr, int) and isinstance(value, int)
        self.mem.store(addr, size, value)
        self.on_store(addr & 0xFFFF_FFFF_FFFF_FFFF, size)


# ---------------------------------------------------------------------------------------
# Operations bits.py does not name (private; concrete ints and z3 terms)


def _flag(c: bits.Cond) -> BV:
    """Return a condition as a one-byte P-code boolean (0 or 1)."""
    return bits.ite(c, 1, 0, 8)


def _udiv(a: BV, b: BV, w: int) -> BV:
    """Unsigned quotient; the caller has dealt with a zero divisor."""
    if isinstance(a, int) and isinstance(b, int):
        return (a & bits.mask(w)) // (b & bits.mask(w))
    return z3.UDiv(bits.wrap(a, w), bits.wrap(b, w))


def _urem(a: BV, b: BV, w: int) -> BV:
    """Unsigned remainder; the caller has dealt with a zero divisor."""
    if isinstance(a, int) and isinstance(b, int):
        return (a & bits.mask(w)) % (b & bits.mask(w))
    return z3.URem(bits.wrap(a, w), bits.wrap(b, w))


def _sdiv(a: BV, b: BV, w: int) -> BV:
    """Signed quotient rounded toward zero, modulo ``2**w`` (``MIN / -1`` is ``MIN``)."""
    if isinstance(a, int) and isinstance(b, int):
        x, y = bits.to_signed(a, w), bits.to_signed(b, w)
        q = abs(x) // abs(y)
        return (-q if (x < 0) != (y < 0) else q) & bits.mask(w)
    return bits.wrap(a, w) / bits.wrap(b, w)


def _srem(a: BV, b: BV, w: int) -> BV:
    """Signed remainder with the sign of the dividend."""
    if isinstance(a, int) and isinstance(b, int):
        x, y = bits.to_signed(a, w), bits.to_signed(b, w)
        r = abs(x) % abs(y)
        return (-r if x < 0 else r) & bits.mask(w)
    return z3.SRem(bits.wrap(a, w), bits.wrap(b, w))


def _popcount(a: BV, w: int) -> BV:
    """Number of set bits of ``a``."""
    if isinstance(a, int):
        return (a & bits.mask(w)).bit_count()
    total: BV = 0
    for i in range(w):
        total = bits.add(total, bits.zext(bits.extract(a, i, i), 1, w), w)
    return total


def _lzcount(a: BV, w: int) -> BV:
    """Number of leading zero bits of ``a`` in width ``w``."""
    if isinstance(a, int):
        return w - (a & bits.mask(w)).bit_length()
    out: BV = w
    for i in range(w):
        out = bits.ite(bits.eq(bits.extract(a, i, i), 1, 1), w - 1 - i, out, w)
    return out


def _carry(a: BV, b: BV, w: int) -> BV:
    """INT_CARRY: the unsigned addition overflows."""
    return _flag(bits.ult(bits.add(a, b, w), a, w))


def _scarry(a: BV, b: BV, w: int) -> BV:
    """INT_SCARRY: the signed addition overflows."""
    r = bits.add(a, b, w)
    same = bits.eq(bits.extract(a, w - 1, w - 1), bits.extract(b, w - 1, w - 1), 1)
    return _flag(bits.b_and(same, bits.ne(bits.extract(r, w - 1, w - 1),
                                          bits.extract(a, w - 1, w - 1), 1)))


def _sborrow(a: BV, b: BV, w: int) -> BV:
    """INT_SBORROW: the signed subtraction overflows."""
    r = bits.sub(a, b, w)
    differ = bits.ne(bits.extract(a, w - 1, w - 1), bits.extract(b, w - 1, w - 1), 1)
    return _flag(bits.b_and(differ, bits.ne(bits.extract(r, w - 1, w - 1),
                                            bits.extract(a, w - 1, w - 1), 1)))


# ---------------------------------------------------------------------------------------
# Floating point (concrete only)

_FLOAT_FORMATS = {4: "<f", 8: "<d"}


def _concrete(x: BV, what: str) -> int:
    """Return a concrete value or raise a FAULT naming the operation."""
    if not isinstance(x, int):
        raise Trap(StopKind.FAULT, detail=f"{what} on a symbolic value is not implemented")
    return x


def _to_float(x: BV, size: int) -> float:
    """Decode an IEEE single or double."""
    fmt = _FLOAT_FORMATS.get(size)
    if fmt is None:
        raise Trap(StopKind.FAULT, detail=f"{size}-byte floating point is not implemented")
    return float(struct.unpack(fmt, _concrete(x, "floating point").to_bytes(size, "little"))[0])


def _from_float(f: float, size: int) -> int:
    """Encode an IEEE single or double (rounding to nearest even)."""
    fmt = _FLOAT_FORMATS.get(size)
    if fmt is None:
        raise Trap(StopKind.FAULT, detail=f"{size}-byte floating point is not implemented")
    try:
        raw = struct.pack(fmt, f)
    except OverflowError:
        raw = struct.pack(fmt, math.copysign(math.inf, f))
    return int.from_bytes(raw, "little")


def _fdiv(a: float, b: float) -> float:
    """IEEE division, including division by zero."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _fsqrt(a: float) -> float:
    """IEEE square root (NaN for negative operands)."""
    return math.nan if a < 0 else math.sqrt(a)


def _ftrunc(a: float, w: int) -> int:
    """Float to signed integer, rounding toward zero; NaN and overflow give the x86
    "integer indefinite" value ``1 << (w - 1)``."""
    if math.isnan(a) or math.isinf(a):
        return 1 << (w - 1)
    v = int(a)
    if not -(1 << (w - 1)) <= v < (1 << (w - 1)):
        return 1 << (w - 1)
    return v & bits.mask(w)


_FLOAT_BINARY: dict[str, Callable[[float, float], float]] = {
    "FLOAT_ADD": lambda a, b: a + b,
    "FLOAT_SUB": lambda a, b: a - b,
    "FLOAT_MULT": lambda a, b: a * b,
    "FLOAT_DIV": _fdiv,
}
_FLOAT_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "FLOAT_EQUAL": lambda a, b: a == b,
    "FLOAT_NOTEQUAL": lambda a, b: a != b,
    "FLOAT_LESS": lambda a, b: a < b,
    "FLOAT_LESSEQUAL": lambda a, b: a <= b,
}
_FLOAT_UNARY: dict[str, Callable[[float], float]] = {
    "FLOAT_NEG": lambda a: -a,
    "FLOAT_ABS": abs,
    "FLOAT_SQRT": _fsqrt,
    "FLOAT_CEIL": lambda a: a if math.isnan(a) or math.isinf(a) else float(math.ceil(a)),
    "FLOAT_FLOOR": lambda a: a if math.isnan(a) or math.isinf(a) else float(math.floor(a)),
    "FLOAT_ROUND": lambda a: a if math.isnan(a) or math.isinf(a) else float(round(a)),
}


# ---------------------------------------------------------------------------------------
# Integer operation tables: (a, b, width of the inputs in bits) -> result

_BINARY: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_ADD": bits.add,
    "INT_SUB": bits.sub,
    "INT_MULT": bits.mul,
    "INT_AND": bits.and_,
    "INT_OR": bits.or_,
    "INT_XOR": bits.xor,
    "INT_EQUAL": lambda a, b, w: _flag(bits.eq(a, b, w)),
    "INT_NOTEQUAL": lambda a, b, w: _flag(bits.ne(a, b, w)),
    "INT_LESS": lambda a, b, w: _flag(bits.ult(a, b, w)),
    "INT_LESSEQUAL": lambda a, b, w: _flag(bits.ule(a, b, w)),
    "INT_SLESS": lambda a, b, w: _flag(bits.slt(a, b, w)),
    "INT_SLESSEQUAL": lambda a, b, w: _flag(bits.sle(a, b, w)),
    "INT_CARRY": _carry,
    "INT_SCARRY": _scarry,
    "INT_SBORROW": _sborrow,
    "BOOL_AND": bits.and_,
    "BOOL_OR": bits.or_,
    "BOOL_XOR": bits.xor,
}

_SHIFTS: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_LEFT": bits.shl,
    "INT_RIGHT": bits.lshr,
    "INT_SRIGHT": bits.ashr,
}

_DIVISIONS = ("INT_DIV", "INT_REM", "INT_SDIV", "INT_SREM")
_DIVIDE: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_DIV": _udiv,
    "INT_REM": _urem,
    "INT_SDIV": _sdiv,
    "INT_SREM": _srem,
}

# (a, input width, output width) -> result
_UNARY: dict[str, Callable[[BV, int, int], BV]] = {
    "COPY": lambda a, wi, wo: a,
    "INT_ZEXT": bits.zext,
    "INT_SEXT": bits.sext,
    "INT_2COMP": lambda a, wi, wo: bits.sub(0, a, wi),
    "INT_NEGATE": lambda a, wi, wo: bits.not_(a, wi),
    "BOOL_NEGATE": lambda a, wi, wo: bits.xor(a, 1, 8),
    "POPCOUNT": lambda a, wi, wo: bits.wrap(_popcount(a, wi), wo),
    "LZCOUNT": lambda a, wi, wo: bits.wrap(_lzcount(a, wi), wo),
}


# ---------------------------------------------------------------------------------------
# Division by zero: each ISA's own rule


def _div_riscv(op: str, a: BV, b: BV, w: int) -> BV:
    """RISC-V (unprivileged ISA, M extension, "Division by zero"): a quotient by zero is all
    ones, a remainder by zero is the dividend; ``MIN / -1`` is ``MIN`` with remainder 0."""
    if isinstance(b, int) and b & bits.mask(w) == 0:
        return bits.mask(w) if op in ("INT_DIV", "INT_SDIV") else bits.wrap(a, w)
    return _DIVIDE[op](a, b, w)


def _div_loongarch(op: str, a: BV, b: BV, w: int) -> BV:
    """LoongArch (manual 2.2.1.8): division by zero raises no exception and its result is
    undefined; this gives qemu's value (the divisor taken as 1: quotient = dividend,
    remainder = 0), which ``undefined.py`` lists."""
    if isinstance(b, int) and b & bits.mask(w) == 0:
        return bits.wrap(a, w) if op in ("INT_DIV", "INT_SDIV") else 0
    return _DIVIDE[op](a, b, w)


def _div_x86(op: str, a: BV, b: BV, w: int) -> BV:
    """x86 ``div``/``idiv`` (SDM vol. 2, DIV): a zero divisor, or a quotient that does not
    fit the destination (half the width of the dividend in Ghidra's P-code), raises #DE."""
    a, b = _concrete(a, "x86 division"), _concrete(b, "x86 division")
    if b & bits.mask(w) == 0:
        raise Trap(StopKind.FAULT, detail="#DE divide error: division by zero")
    q = _DIVIDE["INT_SDIV" if op in ("INT_SDIV", "INT_SREM") else "INT_DIV"](a, b, w)
    assert isinstance(q, int)
    half = w // 2
    signed = op in ("INT_SDIV", "INT_SREM")
    fits = (-(1 << (half - 1)) <= bits.to_signed(q, w) < (1 << (half - 1))) if signed else (
        q < (1 << half))
    if not fits:
        raise Trap(StopKind.FAULT, detail="#DE divide error: quotient overflow")
    return _DIVIDE[op](a, b, w)


def _div_plain(op: str, a: BV, b: BV, w: int) -> BV:
    """aarch64: Ghidra's P-code tests for a zero divisor itself (``udiv``/``sdiv`` give 0);
    a zero divisor reaching the op means a spec gap, reported as a FAULT."""
    if isinstance(b, int) and b & bits.mask(w) == 0:
        raise Trap(StopKind.FAULT, detail=f"{op} by zero not modelled by the specification")
    return _DIVIDE[op](a, b, w)


_DIV_POLICY: dict[str, Callable[[str, BV, BV, int], BV]] = {
    "x86_64": _div_x86,
    "aarch64": _div_plain,
    "riscv64": _div_riscv,
    "loongarch64": _div_loongarch,
}


# ---------------------------------------------------------------------------------------
# User-defined operations (CALLOTHER)


@dataclass(frozen=True)
class CallOther:
    """What a CALLOTHER does: ``kind`` is ``break`` or ``syscall`` (stop with the code taken
    from argument ``code_arg``), ``swi`` (x86 ``int n``), ``fault`` (stop with a FAULT),
    ``nop`` (no effect) or ``const`` (the result is ``value``).  ``reason`` says why."""

    kind: str
    reason: str
    code_arg: int | None = None
    value: int = 0


_BARRIER = "one CPU, sequentially consistent memory: ordering is already total"
_HINT = "a performance hint with no architectural effect"

CALLOTHERS: dict[str, dict[str, CallOther]] = {
    "x86_64": {
        "swi": CallOther("swi", "int3 is a breakpoint (code 0, intno in detail); other "
                         "int n are software interrupts, reported as a FAULT", 0),
        "syscall": CallOther("syscall", "the syscall instruction"),
        "invalidInstructionException": CallOther("fault", "ud2: undefined instruction #UD"),
        "LOCK": CallOther("nop", "lock prefix: one CPU, every instruction is atomic"),
        "UNLOCK": CallOther("nop", "lock prefix: one CPU, every instruction is atomic"),
    },
    "aarch64": {
        "SoftwareBreakpoint": CallOther("break", "brk #imm16", 0),
        "CallSupervisor": CallOther("syscall", "svc #imm16", 0),
        "DataMemoryBarrier": CallOther("nop", "dmb: " + _BARRIER),
        "DataSynchronizationBarrier": CallOther("nop", "dsb: " + _BARRIER),
        "InstructionSynchronizationBarrier": CallOther(
            "nop", "isb: the translation cache is already coherent with every write"),
        "Hint_Prefetch": CallOther("nop", "prfm: " + _HINT),
        "Yield": CallOther("nop", "yield: " + _HINT),
        "ClearExclusiveLocal": CallOther("nop", "clrex: the exclusive monitor always passes "
                                         "on one CPU without interrupts"),
        "ExclusiveMonitorPass": CallOther("const", "stxr: one CPU with no intervening "
                                          "exception, so the monitor is still held", value=1),
        "ExclusiveMonitorsStatus": CallOther("const", "stxr status: 0 means the store "
                                             "happened", value=0),
        "UndefinedInstructionException": CallOther("fault", "udf: undefined instruction"),
    },
    "riscv64": {
        "ebreak": CallOther("break", "ebreak and c.ebreak (code 0)"),
        "ecall": CallOther("syscall", "ecall"),
        "fence": CallOther("nop", "fence: " + _BARRIER),
        "fence.i": CallOther("nop", "fence.i: the translation cache is already coherent"),
    },
    "loongarch64": {
        "break": CallOther("break", "break code15", 0),
        "syscall": CallOther("syscall", "syscall code15", 0),
        "dbar": CallOther("nop", "dbar: " + _BARRIER),
        "ibar": CallOther("nop", "ibar: the translation cache is already coherent"),
        "bound_check_exception": CallOther("fault", "ldgt/ldle/stgt/stle/asrt*: the bound "
                                           "check failed (BCE exception)"),
        "preld_loadl1cache": CallOther("nop", "preld: " + _HINT),
        "preld_storel1cache": CallOther("nop", "preld: " + _HINT),
        "preld_nop": CallOther("nop", "preld with a reserved hint: " + _HINT),
        "preldx_loadl1cache": CallOther("nop", "preldx: " + _HINT),
        "preldx_storel1cache": CallOther("nop", "preldx: " + _HINT),
        "preldx_nop": CallOther("nop", "preldx with a reserved hint: " + _HINT),
    },
}
"""Every CALLOTHER the interpreter implements, per ISA.  Any other one stops with a FAULT
"unimplemented CALLOTHER <name> in <mnemonic> at <pc>"."""


# ---------------------------------------------------------------------------------------
# Compilation of one translation into closures

_INDIRECT_ALIGN: dict[str, int] = {"riscv64": bits.mask(64) - 1}
"""RISC-V: every indirect jump is a JALR, whose target has bit 0 cleared (unprivileged ISA,
2.5); Ghidra's ``c.jr``/``c.jalr`` P-code omits that."""

Op = Callable[[State], int]
"""A compiled P-code op: it runs on a state and returns the index of the next op or EXIT."""


@dataclass
class _Insn:
    """A cached, compiled instruction."""

    pc: int
    length: int
    mnemonic: str
    ops: list[Op]
    reads_pc: bool


class _Compiler:
    """Turns the P-code of one instruction into closures (see the module docstring)."""

    def __init__(self, isa: str, pc_vn: Vn, zero_vn: Vn | None) -> None:
        self.isa = isa
        self.pc_vn = pc_vn
        self.zero_vn = zero_vn
        self.div = _DIV_POLICY[isa]
        self.callothers = CALLOTHERS[isa]

    def compile(self, pc: int, mnemonic: str, ops: Sequence[Any]) -> list[Op]:
        """Compile the ops of one instruction (IMARKs dropped)."""
        body = [op for op in ops if op.opcode != pypcode.OpCode.IMARK]
        return [self._op(pc, mnemonic, i, op) for i, op in enumerate(body)]

    def _unimplemented(self, what: str, mnemonic: str, pc: int) -> Op:
        detail = f"unimplemented {what} in {mnemonic} at {pc:#x}"

        def op(st: State) -> int:
            raise Trap(StopKind.FAULT, detail=detail)

        return op

    def _out(self, op: Any) -> Vn:
        out = _vn(op.output)
        if self.zero_vn is not None and out.space is Space.REGISTER and (
            self.zero_vn.offset <= out.offset < self.zero_vn.offset + self.zero_vn.size
        ):
            return Vn(Space.UNIQUE, -1, out.size)  # the hard-wired zero register
        return out

    def _op(self, pc: int, mnemonic: str, i: int, op: Any) -> Op:
        name = op.opcode.name
        ins = [_vn(v) for v in op.inputs]
        nxt = i + 1
        if name in _BINARY or name in _SHIFTS:
            return self._binary(_BINARY.get(name) or _SHIFTS[name], ins, self._out(op), nxt)
        if name in _UNARY:
            return self._unary(_UNARY[name], ins[0], self._out(op), nxt)
        if name in _DIVIDE:
            return self._division(name, ins, self._out(op), nxt, mnemonic)
        if name.startswith("FLOAT_"):
            return self._float(name, ins, op, nxt) or self._unimplemented(name, mnemonic, pc)
        handler = getattr(self, "_op_" + name.lower(), None)
        if handler is None:
            return self._unimplemented(name, mnemonic, pc)
        return handler(pc, mnemonic, i, op, ins)  # type: ignore[no-any-return]

    @staticmethod
    def _binary(fn: Callable[[BV, BV, int], BV], ins: list[Vn], out: Vn, nxt: int) -> Op:
        a_vn, b_vn = ins
        w = 8 * a_vn.size
        if b_vn.space is Space.CONST:
            b_const = b_vn.offset & bits.mask(8 * b_vn.size)

            def op_k(st: State) -> int:
                st.set(out, fn(st.get(a_vn), b_const, w))
                return nxt

            return op_k

        def op(st: State) -> int:
            st.set(out, fn(st.get(a_vn), st.get(b_vn), w))
            return nxt

        return op

    @staticmethod
    def _unary(fn: Callable[[BV, int, int], BV], a_vn: Vn, out: Vn, nxt: int) -> Op:
        wi, wo = 8 * a_vn.size, 8 * out.size

        def op(st: State) -> int:
            st.set(out, fn(st.get(a_vn), wi, wo))
            return nxt

        return op

    def _division(self, name: str, ins: list[Vn], out: Vn, nxt: int, mnemonic: str) -> Op:
        a_vn, b_vn = ins
        w = 8 * a_vn.size
        x86_div = mnemonic.split()[0].upper() in ("DIV", "IDIV")
        div = self.div if self.isa != "x86_64" or x86_div else _div_plain

        def op(st: State) -> int:
            st.set(out, div(name, st.get(a_vn), st.get(b_vn), w))
            return nxt

        return op

    def _float(self, name: str, ins: list[Vn], raw: Any, nxt: int) -> Op | None:
        out = _vn(raw.output)
        fn = _float_semantics(name, ins, out)
        if fn is None:
            return None

        def op(st: State) -> int:
            st.set(out, fn([st.get(v) for v in ins]))
            return nxt

        return op

    # ---- data movement and pieces

    def _op_load(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        addr_vn, out = ins[1], self._out(op)

        def load(st: State) -> int:
            st.set(out, st.load(st.get(addr_vn), out.size))
            return i + 1

        return load

    def _op_store(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        addr_vn, val_vn = ins[1], ins[2]

        def store(st: State) -> int:
            st.store(st.get(addr_vn), val_vn.size, st.get(val_vn))
            return i + 1

        return store

    def _op_piece(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        hi_vn, lo_vn, out = ins[0], ins[1], self._out(op)
        w_hi, w_lo = 8 * hi_vn.size, 8 * lo_vn.size

        def piece(st: State) -> int:
            st.set(out, bits.concat(st.get(hi_vn), st.get(lo_vn), w_lo, w_hi))
            return i + 1

        return piece

    def _op_subpiece(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        src, out = ins[0], self._out(op)
        lo = 8 * ins[1].offset
        hi = min(lo + 8 * out.size, 8 * src.size) - 1
        wo = 8 * out.size

        def subpiece(st: State) -> int:
            st.set(out, bits.zext(bits.extract(st.get(src), hi, lo), hi - lo + 1, wo))
            return i + 1

        return subpiece

    # ---- control flow

    def _branch_to(self, i: int, target: Vn) -> Callable[[State], int]:
        """Return how to leave op ``i`` for a direct target: an op index (constant space:
        a relative branch inside the instruction) or EXIT with ``next_pc`` set."""
        if target.space is Space.CONST:
            dest = i + bits.to_signed(target.offset, 64)
            return lambda st: dest
        addr = target.offset

        def leave(st: State) -> int:
            st.next_pc = addr
            return EXIT

        return leave

    def _op_branch(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        return self._branch_to(i, ins[0])

    _op_call = _op_branch

    def _op_cbranch(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        taken, cond = self._branch_to(i, ins[0]), ins[1]

        def cbranch(st: State) -> int:
            c = st.get(cond)
            if not isinstance(c, int):
                raise Trap(StopKind.FAULT, detail="symbolic branch condition")
            return taken(st) if c else i + 1

        return cbranch

    def _op_branchind(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        target, align = ins[0], _INDIRECT_ALIGN.get(self.isa)

        def branchind(st: State) -> int:
            st.next_pc = st.get(target)
            if align is not None:
                st.next_pc = bits.and_(st.next_pc, align)
            return EXIT

        return branchind

    _op_callind = _op_branchind
    _op_return = _op_branchind

    # ---- user-defined operations

    def _op_callother(self, pc: int, mnem: str, i: int, op: Any, ins: list[Vn]) -> Op:
        name = op.inputs[0].getUserDefinedOpName()
        spec = self.callothers.get(name)
        if spec is None:
            return self._unimplemented(f"CALLOTHER {name}", mnem, pc)
        args = ins[1:]
        out = self._out(op) if op.output is not None else None
        detail = f"{name} in {mnem} at {pc:#x}"
        run = _callother_action(spec, args, detail)

        def callother(st: State) -> int:
            result = run(st)
            if out is not None:
                st.set(out, result)
            return i + 1

        return callother


def _float_semantics(name: str, ins: list[Vn], out: Vn) -> Callable[[list[BV]], BV] | None:
    """Return the concrete semantics of a FLOAT_* op, or None when not implemented."""
    si, so = ins[0].size, out.size
    if name in _FLOAT_BINARY:
        f2 = _FLOAT_BINARY[name]
        return lambda v: _from_float(f2(_to_float(v[0], si), _to_float(v[1], si)), so)
    if name in _FLOAT_COMPARE:
        fc = _FLOAT_COMPARE[name]
        return lambda v: int(fc(_to_float(v[0], si), _to_float(v[1], si)))
    if name in _FLOAT_UNARY:
        f1 = _FLOAT_UNARY[name]
        return lambda v: _from_float(f1(_to_float(v[0], si)), so)
    if name == "FLOAT_NAN":
        return lambda v: int(math.isnan(_to_float(v[0], si)))
    if name == "FLOAT_INT2FLOAT":
        return lambda v: _from_float(float(bits.to_signed(_concrete(v[0], name), 8 * si)), so)
    if name == "FLOAT_FLOAT2FLOAT":
        return lambda v: _from_float(_to_float(v[0], si), so)
    if name == "FLOAT_TRUNC":
        return lambda v: _ftrunc(_to_float(v[0], si), 8 * so)
    return None


def _callother_action(spec: CallOther, args: list[Vn], detail: str) -> Callable[[State], BV]:
    """Return the run-time effect of a CALLOTHER described by ``spec``."""
    def code(st: State) -> int:
        if spec.code_arg is None or spec.code_arg >= len(args):
            return 0
        return _concrete(st.get(args[spec.code_arg]), "trap code")

    def act(st: State) -> BV:
        if spec.kind == "nop":
            return 0
        if spec.kind == "const":
            return spec.value
        if spec.kind == "break":
            raise Trap(StopKind.BREAK, code(st), detail)
        if spec.kind == "syscall":
            raise Trap(StopKind.SYSCALL, code(st), detail)
        if spec.kind == "swi":
            n = code(st)
            if n == 3:
                raise Trap(StopKind.BREAK, 0, f"int3 (intno 3): {detail}")
            raise Trap(StopKind.FAULT, detail=f"software interrupt int {n:#x}: {detail}")
        raise Trap(StopKind.FAULT, detail=f"{spec.reason}: {detail}")

    return act


# ---------------------------------------------------------------------------------------
# Register names

_RISCV_ABI = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
]

_X86_FLAG_BITS = {
    "CF": 0, "PF": 2, "AF": 4, "ZF": 6, "SF": 7, "TF": 8, "IF": 9, "DF": 10, "OF": 11,
    "NT": 14, "RF": 16, "VM": 17, "AC": 18, "VIF": 19, "VIP": 20, "ID": 21,
}
"""rflags bits kept in Ghidra's one-byte flag registers (IOPL, bits 12-13, is two bits)."""

_AARCH64_NZCV = {"NG": 31, "ZR": 30, "CY": 29, "OV": 28}


def _register_map(isa: str, regs: dict[str, Any]) -> dict[str, Vn]:
    """Return the architectural register names of ``isa`` mapped to SLEIGH varnodes."""
    def vn(name: str) -> Vn:
        return _vn(regs[name])

    if isa == "x86_64":
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
        names += [f"r{i}" for i in range(8, 16)]
        out = {n: vn(n.upper()) for n in names}
        out |= {"rip": vn("RIP"), "fs_base": vn("FS_OFFSET"), "gs_base": vn("GS_OFFSET")}
        return out
    if isa == "aarch64":
        return {f"x{i}": vn(f"x{i}") for i in range(31)} | {"sp": vn("sp"), "pc": vn("pc")}
    if isa == "riscv64":
        return {f"x{i}": vn(_RISCV_ABI[i]) for i in range(1, 32)} | {"pc": vn("pc")}
    base = vn("zero").offset
    out = {f"r{i}": Vn(Space.REGISTER, base + 8 * i, 8) for i in range(1, 32)}
    return out | {"pc": vn("pc")} | {f"fcc{i}": vn(f"fcc{i}") for i in range(8)}


@functools.cache
def _language(isa: str) -> tuple[Any, dict[str, Any], dict[str, Vn]]:
    """Return the shared SLEIGH context of ``isa`` (loading one takes tens of milliseconds;
    translation does not change it), its registers and the architectural register map."""
    ctx = pypcode.Context(LANGUAGES[isa])
    regs = dict(ctx.registers)
    return ctx, regs, _register_map(isa, regs)


# ---------------------------------------------------------------------------------------
# The CPU


class PcodeCpu:
    """A :class:`~kprobe_ref.sim.cpu.Cpu` that interprets Ghidra P-code."""

    def __init__(self, isa: str) -> None:
        if isa not in LANGUAGES:
            raise ValueError(f"unknown ISA {isa!r}; expected one of {sorted(LANGUAGES)}")
        self.isa = isa
        self.ctx, self._sleigh_regs, self.regmap = _language(isa)
        self.mem = Memory()
        self.state = ConcreteState(self.mem)
        self.state.on_store = self._guest_store
        zero = {"riscv64": "zero", "loongarch64": "zero"}.get(isa)
        self._compiler = _Compiler(isa, self.regmap["pc" if isa != "x86_64" else "rip"],
                                   _vn(self._sleigh_regs[zero]) if zero else None)
        self._cache: dict[int, _Insn] = {}
        self._code_pages: dict[int, set[int]] = {}
        self.reservation: int | None = None
        """LoongArch ``ll``/``sc`` reservation: the reserved address, or None."""
        self._x86_rest = 0x2
        self._pc_name = "rip" if isa == "x86_64" else "pc"
        self.watch: set[int] = set()
        """Addresses whose executions are counted in ``exec_counts``."""
        self.exec_counts: Counter[int] = Counter()

    # ---- memory

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map zeroed pages."""
        self.mem.map(addr, size, perms)

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        """Change page permissions (cached code is re-checked at every fetch)."""
        self.mem.protect(addr, size, perms)

    def mem_read(self, addr: int, n: int) -> bytes:
        """Host read, ignoring permissions."""
        return self.mem.read(addr, n)

    def mem_write(self, addr: int, data: bytes) -> None:
        """Host write, ignoring permissions; drops cached code in the range and breaks an
        overlapping ``ll`` reservation."""
        self.mem.write(addr, data)
        self._invalidate(addr, len(data))

    def _guest_store(self, addr: int, size: int) -> None:
        if (addr >> _PAGE_SHIFT) in self._code_pages or (
            (addr + size - 1) >> _PAGE_SHIFT) in self._code_pages:
            self._invalidate(addr, size)
        if self.reservation is not None and addr <= self.reservation < addr + size:
            self.reservation = None

    def _invalidate(self, addr: int, size: int) -> None:
        """Drop cached translations that overlap ``[addr, addr + size)``."""
        if self.reservation is not None and addr <= self.reservation < addr + size:
            self.reservation = None
        for page in _page_range(addr - _MAX_INSN, size + _MAX_INSN):
            for pc in list(self._code_pages.get(page, ())):
                insn = self._cache.get(pc)
                if insn is not None and pc < addr + size and addr < pc + insn.length:
                    self._drop(insn)

    def _drop(self, insn: _Insn) -> None:
        del self._cache[insn.pc]
        for page in _page_range(insn.pc, insn.length):
            pcs = self._code_pages.get(page)
            if pcs is not None:
                pcs.discard(insn.pc)
                if not pcs:
                    del self._code_pages[page]

    # ---- registers

    def reg_read(self, name: str) -> int:
        """Read an architectural register, or any SLEIGH register by its Ghidra name."""
        if self.isa == "x86_64" and name == "rflags":
            return self._read_rflags()
        if self.isa == "aarch64" and name == "nzcv":
            return sum(self.state.regs.read(_vn(self._sleigh_regs[f]).offset, 1) << b
                       for f, b in _AARCH64_NZCV.items())
        vn = self._lookup(name)
        return self.state.regs.read(vn.offset, vn.size)

    def reg_write(self, name: str, value: int) -> None:
        """Write a register (modulo its width); x86 ``rflags`` and aarch64 ``nzcv`` are
        spread over Ghidra's one-byte flag registers."""
        if self.isa == "x86_64" and name == "rflags":
            self._write_rflags(value)
            return
        if self.isa == "aarch64" and name == "nzcv":
            for f, b in _AARCH64_NZCV.items():
                self.state.regs.write(_vn(self._sleigh_regs[f]).offset, 1, (value >> b) & 1)
            return
        vn = self._lookup(name)
        if self._compiler.zero_vn is not None and vn == self._compiler.zero_vn:
            return
        self.state.regs.write(vn.offset, vn.size, value)

    def reg_read_many(self, names: Sequence[str]) -> list[int]:
        """Read several registers."""
        return [self.reg_read(n) for n in names]

    def reg_write_many(self, items: Sequence[tuple[str, int]]) -> None:
        """Write several registers."""
        for name, value in items:
            self.reg_write(name, value)

    def register_names(self) -> tuple[str, ...]:
        """The architectural register names (any SLEIGH name is accepted as well)."""
        extra = {"x86_64": ("rflags",), "aarch64": ("nzcv",)}.get(self.isa, ())
        return (*self.regmap, *extra)

    def save_context(self) -> object:
        """Snapshot every register (the whole SLEIGH register space) and the reservation."""
        chunks = {c: bytes(b) for c, b in self.state.regs.chunks.items()}
        return (chunks, self._x86_rest, self.reservation)

    def restore_context(self, ctx: object) -> None:
        """Restore a snapshot taken by :meth:`save_context`."""
        assert isinstance(ctx, tuple) and len(ctx) == 3
        chunks, self._x86_rest, self.reservation = ctx
        self.state.regs.chunks = {c: bytearray(b) for c, b in chunks.items()}

    def _lookup(self, name: str) -> Vn:
        vn = self.regmap.get(name)
        if vn is not None:
            return vn
        for cand in (name, name.upper(), name.lower()):
            if cand in self._sleigh_regs:
                return _vn(self._sleigh_regs[cand])
        raise KeyError(f"{self.isa} has no register {name!r}")

    def _read_rflags(self) -> int:
        regs = self.state.regs
        value = self._x86_rest | 0x2
        for f, b in _X86_FLAG_BITS.items():
            value |= (regs.read(_vn(self._sleigh_regs[f]).offset, 1) & 1) << b
        return value | ((regs.read(_vn(self._sleigh_regs["IOPL"]).offset, 1) & 3) << 12)

    def _write_rflags(self, value: int) -> None:
        regs = self.state.regs
        for f, b in _X86_FLAG_BITS.items():
            regs.write(_vn(self._sleigh_regs[f]).offset, 1, (value >> b) & 1)
        regs.write(_vn(self._sleigh_regs["IOPL"]).offset, 1, (value >> 12) & 3)
        known = sum(1 << b for b in _X86_FLAG_BITS.values()) | (3 << 12)
        self._x86_rest = value & ~known & bits.mask(64)

    # ---- translation

    def _translate(self, pc: int) -> _Insn:
        """Fetch, translate and compile the instruction at ``pc`` (raises :class:`Trap`)."""
        code = self.mem.fetch(pc)
        if self.isa == "loongarch64" and len(code) >= 4:
            insn = self._loongarch_override(pc, int.from_bytes(code[:4], "little"))
            if insn is not None:
                return self._remember(insn)
        if self.isa == "aarch64" and len(code) >= 4:
            insn = self._aarch64_override(pc, int.from_bytes(code[:4], "little"))
            if insn is not None:
                return self._remember(insn)
        try:
            tx = self.ctx.translate(code, base_address=pc, max_instructions=1)
            dx = self.ctx.disassemble(code, base_address=pc, max_instructions=1)
        except (pypcode.BadDataError, pypcode.UnimplError) as e:
            why = "truncated by a non-executable page" if len(code) < _MAX_INSN else str(e)
            raise Trap(StopKind.FAULT, detail=(
                f"undecodable instruction at {pc:#x} (bytes {code.hex()}): {why}")) from e
        first = dx.instructions[0]
        mnemonic = f"{first.mnem} {first.body}".strip()
        length = int(first.length)
        ops = self._compiler.compile(pc, mnemonic, tx.ops)
        reads_pc = any(_vn(v) == self._compiler.pc_vn for op in tx.ops for v in op.inputs)
        return self._remember(_Insn(pc, length, mnemonic, ops, reads_pc))

    def _loongarch_override(self, pc: int, word: int) -> _Insn | None:
        """Compile a LoongArch override for ``word`` if the table has one."""
        entry = loongarch_overrides.lookup(word)
        if entry is None:
            return None
        view = _LoongArchView(self)

        def op(st: State) -> int:
            entry.fn(view, word)
            st.next_pc = (pc + 4) & bits.mask(64)
            return EXIT

        return _Insn(pc, 4, entry.mnemonic, [op], False)

    def _aarch64_override(self, pc: int, word: int) -> _Insn | None:
        """Compile an aarch64 override for ``word`` if the table has one."""
        entry = aarch64_overrides.lookup(word)
        if entry is None:
            return None
        view = _Aarch64View(self)

        def op(st: State) -> int:
            entry.fn(view, word)
            st.next_pc = (pc + 4) & bits.mask(64)
            return EXIT

        return _Insn(pc, 4, entry.mnemonic, [op], False)

    def _remember(self, insn: _Insn) -> _Insn:
        self._cache[insn.pc] = insn
        for page in _page_range(insn.pc, insn.length):
            self._code_pages.setdefault(page, set()).add(insn.pc)
        return insn

    # ---- execution

    def run(self, pc: int, stop_at: frozenset[int], max_steps: int) -> Stop:
        """Execute from ``pc`` until a stop (STOP_AT is checked before every instruction,
        the first included).  An instruction that traps counts as executed, as with
        unicorn; one that cannot be fetched or decoded does not."""
        steps = 0
        st = self.state
        pc_vn = self._compiler.pc_vn
        try:
            while True:
                if pc in stop_at:
                    return self._stop(StopKind.STOP_AT, pc, steps)
                if steps >= max_steps:
                    return self._stop(StopKind.STEP_LIMIT, pc, steps)
                insn = self._cache.get(pc)
                if insn is None or not self.mem.executable(pc, insn.length):
                    insn = self._translate(pc)
                steps += 1
                if pc in self.watch:
                    self.exec_counts[pc] += 1
                if insn.reads_pc:
                    st.set(pc_vn, pc)
                pc = self._execute(insn, st)
        except Trap as t:
            self.reservation = None
            return self._stop(t.kind, pc, steps, t.code, t.detail, t.fault_addr)

    @staticmethod
    def _execute(insn: _Insn, st: State) -> int:
        """Run one compiled instruction and return the address of the next one."""
        ops = insn.ops
        n = len(ops)
        i = 0
        while 0 <= i < n:
            i = ops[i](st)
        if i == EXIT:
            nxt = st.next_pc
            if not isinstance(nxt, int):
                raise Trap(StopKind.FAULT, detail=f"symbolic branch target in {insn.mnemonic}")
            return nxt & 0xFFFF_FFFF_FFFF_FFFF
        return (insn.pc + insn.length) & 0xFFFF_FFFF_FFFF_FFFF

    def _stop(self, kind: StopKind, pc: int, steps: int, code: int = 0, detail: str = "",
              fault_addr: int | None = None) -> Stop:
        self.reg_write(self._pc_name, pc)
        return Stop(kind, pc, steps, code, detail, fault_addr)


class _Aarch64View:
    """What an aarch64 override sees of the CPU (see
    :class:`kprobe_ref.sim.aarch64_overrides.Machine`)."""

    def __init__(self, cpu: PcodeCpu) -> None:
        self._cpu = cpu

    def x(self, n: int) -> BV:
        """``X<n>``; 31 reads 0."""
        return 0 if n == 31 else self._cpu.state.get(self._cpu.regmap[f"x{n}"])

    def set_x(self, n: int, value: BV) -> None:
        """Write ``X<n>``; 31 is dropped."""
        if n != 31:
            self._cpu.state.set(self._cpu.regmap[f"x{n}"], bits.wrap(value))

    def sp(self) -> BV:
        """The stack pointer."""
        return self._cpu.state.get(self._cpu.regmap["sp"])

    def set_sp(self, value: BV) -> None:
        """Write the stack pointer."""
        self._cpu.state.set(self._cpu.regmap["sp"], bits.wrap(value))

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read."""
        return self._cpu.state.load(addr, size)


class _LoongArchView:
    """What a LoongArch override sees of the CPU: general registers, memory and the
    ``ll``/``sc`` reservation (see :class:`kprobe_ref.sim.loongarch_overrides.Machine`)."""

    def __init__(self, cpu: PcodeCpu) -> None:
        self._cpu = cpu
        self._base = _vn(cpu._sleigh_regs["zero"]).offset

    def gr(self, n: int) -> BV:
        """Return general register ``n`` (r0 reads 0)."""
        return 0 if n == 0 else self._cpu.state.get(Vn(Space.REGISTER, self._base + 8 * n, 8))

    def set_gr(self, n: int, value: BV) -> None:
        """Write general register ``n`` (writes to r0 are dropped)."""
        if n:
            self._cpu.state.set(Vn(Space.REGISTER, self._base + 8 * n, 8), bits.wrap(value))

    def fcc(self, n: int) -> BV:
        """Condition flag ``fcc<n>``."""
        return self._cpu.state.get(self._cpu.regmap[f"fcc{n}"])

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read."""
        return self._cpu.state.load(addr, size)

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write."""
        self._cpu.state.store(addr, size, value)

    def get_reservation(self) -> int | None:
        """The address reserved by the last ``ll``, or None."""
        return self._cpu.reservation

    def set_reservation(self, addr: int | None) -> None:
        """Reserve ``addr`` (``ll``) or drop the reservation (``sc``)."""
        self._cpu.reservation = addr

    def fault(self, detail: str, addr: int) -> NoReturn:
        """Stop the CPU with a FAULT."""
        raise Trap(StopKind.FAULT, detail=detail, fault_addr=addr)
