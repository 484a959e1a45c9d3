"""The division, counting and overflow operations of kprobe_ref.bits: the integer result
is the arithmetic definition, and the Z3 term evaluates to the same value."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import z3
from hypothesis import given
from hypothesis import strategies as st

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond

WIDTHS = st.sampled_from([8, 16, 32, 64])


def _signed(x: int, w: int) -> int:
    return x - (1 << w) if x >> (w - 1) else x


def _value(term: BV) -> int:
    s = z3.simplify(term)
    assert z3.is_bv_value(s), s
    return int(s.as_long())


def _truth(c: Cond) -> bool:
    s = z3.simplify(c)
    assert z3.is_true(s) or z3.is_false(s), s
    return bool(z3.is_true(s))


def _symbolic(x: int, w: int) -> z3.BitVecRef:
    """``x`` as a Z3 term that only simplification reduces to a constant."""
    v = z3.BitVec("v", w)
    return z3.substitute(v, (v, z3.BitVecVal(x, w)))


def _quotient(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


DIVISIONS: dict[str, tuple[Callable[[BV, BV, int], BV], Callable[[int, int, int], int]]] = {
    "udiv": (bits.udiv, lambda a, b, w: a // b),
    "urem": (bits.urem, lambda a, b, w: a % b),
    "sdiv": (bits.sdiv, lambda a, b, w: _quotient(_signed(a, w), _signed(b, w))),
    "srem": (bits.srem, lambda a, b, w: _signed(a, w)
             - _signed(b, w) * _quotient(_signed(a, w), _signed(b, w))),
}


@pytest.mark.parametrize("name", sorted(DIVISIONS))
@given(w=WIDTHS, a=st.integers(0, (1 << 64) - 1), b=st.integers(1, (1 << 64) - 1))
def test_division_is_the_definition_for_ints_and_terms(name: str, w: int, a: int,
                                                       b: int) -> None:
    fn, definition = DIVISIONS[name]
    a, b = a & bits.mask(w), (b & bits.mask(w)) or 1
    expected = definition(a, b, w) & bits.mask(w)
    assert fn(a, b, w) == expected
    assert _value(fn(_symbolic(a, w), b, w)) == expected
    assert _value(fn(a, _symbolic(b, w), w)) == expected


def test_signed_division_of_min_by_minus_one_wraps() -> None:
    assert bits.sdiv(0x80, 0xFF, 8) == 0x80 and bits.srem(0x80, 0xFF, 8) == 0


@given(w=WIDTHS, a=st.integers(0, (1 << 64) - 1))
def test_counts_are_the_definition_for_ints_and_terms(w: int, a: int) -> None:
    a &= bits.mask(w)
    ones = bin(a).count("1")
    zeros = next((w - 1 - i for i in range(w - 1, -1, -1) if a >> i & 1), w)
    assert bits.popcount(a, w) == ones and bits.lzcount(a, w) == zeros
    assert _value(bits.popcount(_symbolic(a, w), w)) == ones
    assert _value(bits.lzcount(_symbolic(a, w), w)) == zeros


@given(w=WIDTHS, a=st.integers(0, (1 << 64) - 1), b=st.integers(0, (1 << 64) - 1))
def test_overflows_are_the_definition_for_ints_and_terms(w: int, a: int, b: int) -> None:
    a, b = a & bits.mask(w), b & bits.mask(w)
    lo, hi = -(1 << (w - 1)), 1 << (w - 1)
    expected = {
        bits.uadd_overflows: a + b >= 1 << w,
        bits.sadd_overflows: not lo <= _signed(a, w) + _signed(b, w) < hi,
        bits.ssub_overflows: not lo <= _signed(a, w) - _signed(b, w) < hi,
    }
    for fn, want in expected.items():
        assert fn(a, b, w) == want, fn.__name__
        assert _truth(fn(_symbolic(a, w), b, w)) == want, fn.__name__


def test_concrete_passes_ints_and_refuses_terms() -> None:
    assert bits.is_concrete(5) and not bits.is_concrete(z3.BitVec("x", 8))
    assert bits.concrete(5) == 5
    with pytest.raises(TypeError, match="an address must be concrete"):
        bits.concrete(z3.BitVec("x", 64), "an address")
