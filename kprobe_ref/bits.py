"""Named bit-vector operations over plain integers and over Z3 terms.

Every rule that computes an architectural result (a branch target, a condition, a relocated
displacement) is written with these functions and never with Python operators whose meaning
changes between the two worlds: in z3py ``<`` is signed and ``>>`` is arithmetic, while a
Python ``int`` has no width at all.  With plain integers each function returns the unsigned
value of the given width; with Z3 bit-vectors it returns a Z3 term.  One rule therefore runs
concretely inside the probe engine and symbolically inside the proofs.

Conventions:

- A *value* of width ``w`` is an ``int`` in ``[0, 2**w)`` or a Z3 bit-vector.  Functions that
  take a width ``w`` read only the low ``w`` bits of their inputs.
- A *condition* is a ``bool`` or a Z3 boolean.
- This module is the only place that asks whether a value is symbolic
  (:func:`is_concrete`, :func:`concrete`, :func:`is_symbolic`).  The one exception is a
  type assertion on the P-code CPU's hottest path (``IntegerState.set``), which states an
  invariant rather than asking.
"""

from __future__ import annotations

from typing import Any, TypeAlias, TypeGuard

import z3

BV: TypeAlias = "int | z3.BitVecRef"
Cond: TypeAlias = "bool | z3.BoolRef"

__all__ = [
    "BV",
    "Cond",
    "add",
    "and_",
    "ashr",
    "b_and",
    "b_not",
    "b_or",
    "concat",
    "concrete",
    "eq",
    "extract",
    "is_concrete",
    "is_symbolic",
    "ite",
    "lshr",
    "lzcount",
    "mask",
    "mul",
    "ne",
    "not_",
    "or_",
    "popcount",
    "sadd_overflows",
    "sdiv",
    "sext",
    "shl",
    "sle",
    "slt",
    "srem",
    "ssub_overflows",
    "sub",
    "to_signed",
    "uadd_overflows",
    "udiv",
    "ule",
    "ult",
    "urem",
    "wrap",
    "xor",
    "zext",
]


def mask(w: int) -> int:
    """Return the all-ones value of width ``w``."""
    return (1 << w) - 1


def is_symbolic(x: Any) -> bool:
    """Tell whether ``x`` is a Z3 term rather than a Python value."""
    return isinstance(x, z3.ExprRef)


def is_concrete(x: BV) -> TypeGuard[int]:
    """Tell whether ``x`` is a plain integer rather than a Z3 term."""
    return isinstance(x, int)


def concrete(x: BV, what: str = "value") -> int:
    """Return ``x`` as a plain integer; a Z3 term raises ``TypeError`` naming ``what``.

    Code that only ever runs concretely (the probe engine's trap-time state, encoders,
    the P-code CPU's integer state) states that expectation with this function."""
    if not isinstance(x, int):
        raise TypeError(f"{what} must be concrete, got the Z3 term {x}")
    return x


def _z(x: BV, w: int) -> z3.BitVecRef:
    """Return the low ``w`` bits of ``x`` as a Z3 bit-vector of width exactly ``w``."""
    if isinstance(x, int):
        return z3.BitVecVal(x & mask(w), w)
    size = x.size()
    if size == w:
        return x
    if size > w:
        return z3.Extract(w - 1, 0, x)
    return z3.ZeroExt(w - size, x)


def _any_sym(*xs: Any) -> bool:
    """Tell whether any of ``xs`` is a Z3 term; two operands (the usual case, asked before
    every concrete operation) are tested without a generator."""
    if len(xs) == 2:
        return isinstance(xs[0], z3.ExprRef) or isinstance(xs[1], z3.ExprRef)
    return any(is_symbolic(x) for x in xs)


def wrap(x: BV, w: int = 64) -> BV:
    """Return ``x`` modulo ``2**w``: the low ``w`` bits, zero-extended to width ``w``."""
    if isinstance(x, int):
        return x & mask(w)
    return _z(x, w)


def zext(x: BV, w_from: int, w_to: int = 64) -> BV:
    """Zero-extend the low ``w_from`` bits of ``x`` to width ``w_to``."""
    if isinstance(x, int):
        return x & mask(w_from)
    return z3.ZeroExt(w_to - w_from, _z(x, w_from)) if w_to > w_from else _z(x, w_to)


def sext(x: BV, w_from: int, w_to: int = 64) -> BV:
    """Sign-extend the low ``w_from`` bits of ``x`` to width ``w_to``."""
    if isinstance(x, int):
        v = x & mask(w_from)
        if v >> (w_from - 1):
            v -= 1 << w_from
        return v & mask(w_to)
    return z3.SignExt(w_to - w_from, _z(x, w_from)) if w_to > w_from else _z(x, w_to)


def to_signed(x: int, w: int) -> int:
    """Interpret the low ``w`` bits of a concrete ``x`` as a two's-complement integer."""
    v = x & mask(w)
    return v - (1 << w) if v >> (w - 1) else v


def extract(x: BV, hi: int, lo: int) -> BV:
    """Return bits ``hi`` down to ``lo`` of ``x`` (inclusive), a value of width ``hi-lo+1``."""
    if isinstance(x, int):
        return (x >> lo) & mask(hi - lo + 1)
    return z3.Extract(hi, lo, x)


def concat(hi: BV, lo: BV, w_lo: int, w_hi: int) -> BV:
    """Return ``hi:lo``, a value of width ``w_hi + w_lo`` with ``lo`` in the low bits."""
    if not _any_sym(hi, lo):
        assert isinstance(hi, int) and isinstance(lo, int)
        return ((hi & mask(w_hi)) << w_lo) | (lo & mask(w_lo))
    return z3.Concat(_z(hi, w_hi), _z(lo, w_lo))


def _binop(a: BV, b: BV, w: int, concrete: Any, symbolic: Any) -> BV:
    if not _any_sym(a, b):
        return int(concrete(a & mask(w), b & mask(w))) & mask(w)
    return symbolic(_z(a, w), _z(b, w))


def add(a: BV, b: BV, w: int = 64) -> BV:
    """Return ``a + b`` modulo ``2**w``."""
    return _binop(a, b, w, lambda x, y: x + y, lambda x, y: x + y)


def sub(a: BV, b: BV, w: int = 64) -> BV:
    """Return ``a - b`` modulo ``2**w``."""
    return _binop(a, b, w, lambda x, y: x - y, lambda x, y: x - y)


def mul(a: BV, b: BV, w: int = 64) -> BV:
    """Return ``a * b`` modulo ``2**w``."""
    return _binop(a, b, w, lambda x, y: x * y, lambda x, y: x * y)


def and_(a: BV, b: BV, w: int = 64) -> BV:
    """Return the bitwise AND of ``a`` and ``b``."""
    return _binop(a, b, w, lambda x, y: x & y, lambda x, y: x & y)


def or_(a: BV, b: BV, w: int = 64) -> BV:
    """Return the bitwise OR of ``a`` and ``b``."""
    return _binop(a, b, w, lambda x, y: x | y, lambda x, y: x | y)


def xor(a: BV, b: BV, w: int = 64) -> BV:
    """Return the bitwise exclusive OR of ``a`` and ``b``."""
    return _binop(a, b, w, lambda x, y: x ^ y, lambda x, y: x ^ y)


def not_(a: BV, w: int = 64) -> BV:
    """Return the bitwise complement of ``a`` in width ``w``."""
    if isinstance(a, int):
        return ~a & mask(w)
    return ~_z(a, w)


def shl(a: BV, n: BV, w: int = 64) -> BV:
    """Shift left by ``n`` (an unsigned amount); amounts of ``w`` or more give zero."""
    if not _any_sym(a, n):
        assert isinstance(a, int) and isinstance(n, int)
        return (a << n) & mask(w) if n < w else 0
    return _z(a, w) << _z(n, w)


def lshr(a: BV, n: BV, w: int = 64) -> BV:
    """Logical shift right by ``n``: zeros enter at the top; amounts of ``w`` or more give 0."""
    if not _any_sym(a, n):
        assert isinstance(a, int) and isinstance(n, int)
        return (a & mask(w)) >> n if n < w else 0
    return z3.LShR(_z(a, w), _z(n, w))


def ashr(a: BV, n: BV, w: int = 64) -> BV:
    """Arithmetic shift right by ``n``: copies of the sign bit enter at the top."""
    if not _any_sym(a, n):
        assert isinstance(a, int) and isinstance(n, int)
        return (to_signed(a, w) >> min(n, w)) & mask(w)
    return _z(a, w) >> _z(n, w)


def eq(a: BV, b: BV, w: int = 64) -> Cond:
    """Return whether the low ``w`` bits of ``a`` and ``b`` are equal."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return (a & mask(w)) == (b & mask(w))
    return _z(a, w) == _z(b, w)


def ne(a: BV, b: BV, w: int = 64) -> Cond:
    """Return whether the low ``w`` bits of ``a`` and ``b`` differ."""
    return b_not(eq(a, b, w))


def ult(a: BV, b: BV, w: int = 64) -> Cond:
    """Unsigned ``a < b``."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return (a & mask(w)) < (b & mask(w))
    return z3.ULT(_z(a, w), _z(b, w))


def ule(a: BV, b: BV, w: int = 64) -> Cond:
    """Unsigned ``a <= b``."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return (a & mask(w)) <= (b & mask(w))
    return z3.ULE(_z(a, w), _z(b, w))


def slt(a: BV, b: BV, w: int = 64) -> Cond:
    """Signed (two's-complement) ``a < b``."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return to_signed(a, w) < to_signed(b, w)
    return _z(a, w) < _z(b, w)


def sle(a: BV, b: BV, w: int = 64) -> Cond:
    """Signed (two's-complement) ``a <= b``."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return to_signed(a, w) <= to_signed(b, w)
    return _z(a, w) <= _z(b, w)


def b_not(c: Cond) -> Cond:
    """Logical negation of a condition."""
    if isinstance(c, bool):
        return not c
    return z3.Not(c)


def b_and(*cs: Cond) -> Cond:
    """Logical conjunction of conditions."""
    if not _any_sym(*cs):
        return all(cs)
    return z3.And(*cs)


def b_or(*cs: Cond) -> Cond:
    """Logical disjunction of conditions."""
    if not _any_sym(*cs):
        return any(cs)
    return z3.Or(*cs)


def ite(c: Cond, a: BV, b: BV, w: int = 64) -> BV:
    """Return ``a`` when ``c`` holds, else ``b`` (both read as width ``w``)."""
    if isinstance(c, bool):
        return wrap(a, w) if c else wrap(b, w)
    return z3.If(c, _z(a, w), _z(b, w))


# ---------------------------------------------------------------------------------------
# Division, counting and overflow (P-code's INT_DIV ... INT_SBORROW, POPCOUNT, LZCOUNT)


def udiv(a: BV, b: BV, w: int = 64) -> BV:
    """Unsigned quotient of the low ``w`` bits; the caller deals with a zero divisor."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return (a & mask(w)) // (b & mask(w))
    return z3.UDiv(_z(a, w), _z(b, w))


def urem(a: BV, b: BV, w: int = 64) -> BV:
    """Unsigned remainder of the low ``w`` bits; the caller deals with a zero divisor."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        return (a & mask(w)) % (b & mask(w))
    return z3.URem(_z(a, w), _z(b, w))


def sdiv(a: BV, b: BV, w: int = 64) -> BV:
    """Signed quotient rounded toward zero, modulo ``2**w`` (``MIN / -1`` is ``MIN``); the
    caller deals with a zero divisor."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        x, y = to_signed(a, w), to_signed(b, w)
        q = abs(x) // abs(y)
        return (-q if (x < 0) != (y < 0) else q) & mask(w)
    return _z(a, w) / _z(b, w)


def srem(a: BV, b: BV, w: int = 64) -> BV:
    """Signed remainder with the sign of the dividend; the caller deals with a zero
    divisor."""
    if not _any_sym(a, b):
        assert isinstance(a, int) and isinstance(b, int)
        x, y = to_signed(a, w), to_signed(b, w)
        r = abs(x) % abs(y)
        return (-r if x < 0 else r) & mask(w)
    return z3.SRem(_z(a, w), _z(b, w))


def popcount(a: BV, w: int = 64) -> BV:
    """The number of set bits among the low ``w`` bits of ``a`` (a value of width ``w``)."""
    if isinstance(a, int):
        return (a & mask(w)).bit_count()
    total: BV = 0
    for i in range(w):
        total = add(total, zext(extract(a, i, i), 1, w), w)
    return total


def lzcount(a: BV, w: int = 64) -> BV:
    """The number of leading zero bits of ``a`` in width ``w`` (``w`` when ``a`` is 0)."""
    if isinstance(a, int):
        return w - (a & mask(w)).bit_length()
    out: BV = w
    for i in range(w):
        out = ite(eq(extract(a, i, i), 1, 1), w - 1 - i, out, w)
    return out


def uadd_overflows(a: BV, b: BV, w: int = 64) -> Cond:
    """Whether the unsigned sum ``a + b`` does not fit ``w`` bits (a carry out)."""
    return ult(add(a, b, w), a, w)


def sadd_overflows(a: BV, b: BV, w: int = 64) -> Cond:
    """Whether the signed sum ``a + b`` does not fit ``w`` bits: both operands have one sign
    and the result the other."""
    top = w - 1
    same = eq(extract(a, top, top), extract(b, top, top), 1)
    return b_and(same, ne(extract(add(a, b, w), top, top), extract(a, top, top), 1))


def ssub_overflows(a: BV, b: BV, w: int = 64) -> Cond:
    """Whether the signed difference ``a - b`` does not fit ``w`` bits: the operands'
    signs differ and the result's sign is not the minuend's."""
    top = w - 1
    differ = ne(extract(a, top, top), extract(b, top, top), 1)
    return b_and(differ, ne(extract(sub(a, b, w), top, top), extract(a, top, top), 1))
