"""Where an architecture leaves a result undefined, in one table.

Two correct CPUs may disagree on an undefined value, so a comparison of CPU backends (the
unicorn-against-P-code tests, the qemu vectors) masks these bits out.  Each row names the
ISA, a regular expression matched against the instruction's assembly text, the register
(``rflags``, ``nzcv`` or a register of the ``Cpu`` naming), the mask of undefined bits and
the manual's reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["UNDEFINED", "Undefined", "undefined_mask"]

_ALL = (1 << 64) - 1
_CF, _PF, _AF, _ZF, _SF, _OF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7, 1 << 11


@dataclass(frozen=True)
class Undefined:
    """Bits ``mask`` of ``register`` are not compared after instructions matching
    ``pattern``: ``kind`` is ``undefined`` (the manual leaves them undefined) or ``gap`` (a
    known limitation of a backend, which the reason names)."""

    isa: str
    pattern: str
    register: str
    mask: int
    reason: str
    kind: str = "undefined"


UNDEFINED: tuple[Undefined, ...] = (
    Undefined("x86_64", r"^(shl|shr|sar|sal|shld|shrd)\b", "rflags", _AF | _OF,
              "SDM SAL/SAR/SHL/SHR, SHLD: AF is undefined for a non-zero count; OF only for "
              "a count of 1"),
    Undefined("x86_64", r"^(rol|ror|rcl|rcr)\b", "rflags", _OF,
              "SDM RCL/RCR/ROL/ROR: OF is defined only for a count of 1"),
    Undefined("x86_64", r"^(mul|imul)\b", "rflags", _SF | _ZF | _AF | _PF,
              "SDM MUL, IMUL: SF, ZF, AF and PF are undefined"),
    Undefined("x86_64", r"^(and|or|xor|test)\b", "rflags", _AF,
              "SDM AND/OR/XOR/TEST: AF is undefined"),
    Undefined("x86_64", r"^bt\b", "rflags", _OF | _SF | _AF | _PF,
              "SDM BT: OF, SF, AF and PF are undefined"),
    Undefined("x86_64", r"^(div|idiv)\b", "rflags", _CF | _OF | _SF | _ZF | _AF | _PF,
              "SDM DIV, IDIV: all arithmetic flags are undefined"),
    Undefined("x86_64", r"^(lock )?(add|sub|adc|sbb|cmp|inc|dec|neg|xadd)\b", "rflags", _AF,
              "gap: AF is defined here (SDM), but Ghidra's x86 SLEIGH does not compute it, so "
              "the P-code CPU leaves AF unchanged; AF only feeds BCD instructions, which do "
              "not exist in 64-bit mode, and pushf/lahf", "gap"),
    Undefined("loongarch64", r"^(div|mod)\.", "rd", _ALL,
              "LoongArch manual 2.2.1.8: with a zero divisor the result is undefined (no "
              "exception); the P-code CPU gives qemu's value"),
)
"""Every undefined result the comparisons know about."""


def undefined_mask(isa: str, asm: str, register: str) -> int:
    """Return the bits of ``register`` that are undefined after instruction ``asm``."""
    mask = 0
    for row in UNDEFINED:
        if row.isa == isa and row.register == register and re.match(row.pattern, asm.strip()):
            mask |= row.mask
    return mask
