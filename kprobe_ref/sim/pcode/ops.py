"""What each P-code operation computes, independent of the ISA.

Integer operations are :mod:`kprobe_ref.bits` functions over plain integers or Z3 terms;
comparisons give P-code booleans (one byte, 0 or 1).  Floating-point operations are
concrete only (IEEE single and double through ``struct``); other sizes, and symbolic
operands, stop with a FAULT.  A ``CALLOTHER`` (a user-defined operation) does what its
:class:`CallOther` record says; each ISA lists its own in its record
(:mod:`kprobe_ref.sim.pcode.isa`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode.state import State, Vn
from kprobe_ref.sim.pcode.trap import Trap

__all__ = [
    "BINARY",
    "DIVIDE",
    "SHIFTS",
    "UNARY",
    "CallOther",
    "DivRule",
    "callother_action",
    "concrete",
    "div_plain",
    "flag",
    "float_semantics",
    "zero_divisor",
]

DivRule = Callable[[str, BV, BV, int], BV]
"""An ISA's division rule: (P-code opcode name, dividend, divisor, width) -> result."""


def flag(c: bits.Cond) -> BV:
    """Return a condition as a one-byte P-code boolean (0 or 1)."""
    return bits.ite(c, 1, 0, 8)


def concrete(x: BV, what: str) -> int:
    """Return a concrete value or raise a FAULT naming the operation."""
    if not bits.is_concrete(x):
        raise Trap(StopKind.FAULT, detail=f"{what} on a symbolic value is not implemented")
    return x


# ---------------------------------------------------------------------------------------
# Floating point (concrete only)

_FLOAT_FORMATS = {4: "<f", 8: "<d"}


def _to_float(x: BV, size: int) -> float:
    """Decode an IEEE single or double."""
    fmt = _FLOAT_FORMATS.get(size)
    if fmt is None:
        raise Trap(StopKind.FAULT, detail=f"{size}-byte floating point is not implemented")
    return float(struct.unpack(fmt, concrete(x, "floating point").to_bytes(size, "little"))[0])


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

BINARY: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_ADD": bits.add,
    "INT_SUB": bits.sub,
    "INT_MULT": bits.mul,
    "INT_AND": bits.and_,
    "INT_OR": bits.or_,
    "INT_XOR": bits.xor,
    "INT_EQUAL": lambda a, b, w: flag(bits.eq(a, b, w)),
    "INT_NOTEQUAL": lambda a, b, w: flag(bits.ne(a, b, w)),
    "INT_LESS": lambda a, b, w: flag(bits.ult(a, b, w)),
    "INT_LESSEQUAL": lambda a, b, w: flag(bits.ule(a, b, w)),
    "INT_SLESS": lambda a, b, w: flag(bits.slt(a, b, w)),
    "INT_SLESSEQUAL": lambda a, b, w: flag(bits.sle(a, b, w)),
    "INT_CARRY": lambda a, b, w: flag(bits.uadd_overflows(a, b, w)),
    "INT_SCARRY": lambda a, b, w: flag(bits.sadd_overflows(a, b, w)),
    "INT_SBORROW": lambda a, b, w: flag(bits.ssub_overflows(a, b, w)),
    "BOOL_AND": bits.and_,
    "BOOL_OR": bits.or_,
    "BOOL_XOR": bits.xor,
}

SHIFTS: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_LEFT": bits.shl,
    "INT_RIGHT": bits.lshr,
    "INT_SRIGHT": bits.ashr,
}

DIVIDE: dict[str, Callable[[BV, BV, int], BV]] = {
    "INT_DIV": bits.udiv,
    "INT_REM": bits.urem,
    "INT_SDIV": bits.sdiv,
    "INT_SREM": bits.srem,
}

# (a, input width, output width) -> result
UNARY: dict[str, Callable[[BV, int, int], BV]] = {
    "COPY": lambda a, wi, wo: a,
    "INT_ZEXT": bits.zext,
    "INT_SEXT": bits.sext,
    "INT_2COMP": lambda a, wi, wo: bits.sub(0, a, wi),
    "INT_NEGATE": lambda a, wi, wo: bits.not_(a, wi),
    "BOOL_NEGATE": lambda a, wi, wo: bits.xor(a, 1, 8),
    "POPCOUNT": lambda a, wi, wo: bits.wrap(bits.popcount(a, wi), wo),
    "LZCOUNT": lambda a, wi, wo: bits.wrap(bits.lzcount(a, wi), wo),
}


# ---------------------------------------------------------------------------------------
# Division and user-defined operations


def zero_divisor(b: BV, w: int) -> bool:
    """Whether the divisor ``b`` is known to be zero in width ``w``."""
    return bits.is_concrete(b) and b & bits.mask(w) == 0


def div_plain(op: str, a: BV, b: BV, w: int) -> BV:
    """The rule of an ISA whose P-code tests for a zero divisor itself (aarch64: ``udiv``
    and ``sdiv`` give 0): a zero divisor reaching the op means a gap in the specification,
    reported as a FAULT."""
    if zero_divisor(b, w):
        raise Trap(StopKind.FAULT, detail=f"{op} by zero not modelled by the specification")
    return DIVIDE[op](a, b, w)


@dataclass(frozen=True)
class CallOther:
    """What a CALLOTHER does: ``kind`` is ``break`` or ``syscall`` (stop with the code taken
    from argument ``code_arg``), ``swi`` (x86 ``int n``), ``fault`` (stop with a FAULT),
    ``nop`` (no effect) or ``const`` (the result is ``value``).  ``reason`` says why."""

    kind: str
    reason: str
    code_arg: int | None = None
    value: int = 0


def float_semantics(name: str, ins: list[Vn], out: Vn) -> Callable[[list[BV]], BV] | None:
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
        return lambda v: _from_float(float(bits.to_signed(concrete(v[0], name), 8 * si)), so)
    if name == "FLOAT_FLOAT2FLOAT":
        return lambda v: _from_float(_to_float(v[0], si), so)
    if name == "FLOAT_TRUNC":
        return lambda v: _ftrunc(_to_float(v[0], si), 8 * so)
    return None


def callother_action(spec: CallOther, args: list[Vn], detail: str) -> Callable[[State], BV]:
    """Return the run-time effect of a CALLOTHER described by ``spec``."""
    def code(st: State) -> int:
        if spec.code_arg is None or spec.code_arg >= len(args):
            return 0
        return concrete(st.get(args[spec.code_arg]), "trap code")

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
