"""Linux's string-to-number conversions, as the probe-event parser uses them.

``kstrtoul`` and friends (``lib/kstrtox.c``) take the whole string: an optional ``+``, a
radix prefix when the base is 0 (``0x`` hexadecimal, a leading ``0`` octal), at least one
digit, an optional trailing newline, and nothing else; a value that overflows is refused.
``simple_strtoul`` stops at the first character that is not a digit and says where.
These rules decide which definitions the kernel accepts (``p 0x10``, ``r0x10:ev``,
``+010(%ax)`` is octal 8), so they are reproduced rather than approximated with ``int``.
"""

from __future__ import annotations

__all__ = ["kstrtol", "kstrtouint", "kstrtoul", "simple_strtoul"]

_U64 = (1 << 64) - 1
_S64_MAX = (1 << 63) - 1


def _radix(s: str, base: int) -> tuple[str, int]:
    if base == 0:
        if s.startswith("0"):
            if s[1:2].lower() == "x" and s[2:3] and s[2] in "0123456789abcdefABCDEF":
                return s[2:], 16
            return s, 8
        return s, 10
    if base == 16 and s[:2].lower() == "0x":
        return s[2:], 16
    return s, base


def _digits(s: str, base: int) -> tuple[int, int]:
    """The value of the leading digits of ``s`` and how many there were."""
    value, n = 0, 0
    for ch in s:
        d = int(ch, 36) if ch.isascii() and ch.isalnum() else 99
        if d >= base:
            break
        value = value * base + d
        n += 1
    return value, n


def kstrtoull(s: str, base: int = 0) -> int | None:
    """``kstrtoull``: the value, or ``None`` where the kernel returns an error."""
    if s.startswith("+"):
        s = s[1:]
    body, radix = _radix(s, base)
    value, n = _digits(body, radix)
    rest = body[n:]
    if n == 0 or rest not in ("", "\n") or value > _U64:
        return None
    return value


def kstrtoul(s: str, base: int = 0) -> int | None:
    """``kstrtoul`` (64-bit ``unsigned long``)."""
    return kstrtoull(s, base)


def kstrtouint(s: str, base: int = 0) -> int | None:
    """``kstrtouint``: a 32-bit unsigned value."""
    value = kstrtoull(s, base)
    return value if value is not None and value <= 0xFFFF_FFFF else None


def kstrtol(s: str, base: int = 0) -> int | None:
    """``kstrtol`` (64-bit ``long``): an optional ``-`` or ``+``, then as ``kstrtoull``."""
    if s.startswith("-"):
        value = kstrtoull(s[1:], base) if not s[1:].startswith("+") else None
        if value is None or value > _S64_MAX + 1:
            return None
        return -value
    value = kstrtoull(s, base)
    if value is None or value > _S64_MAX:
        return None
    return value


def simple_strtoul(s: str, base: int = 0) -> tuple[int, str]:
    """``simple_strtoul``: the value of the longest numeric prefix and the rest of ``s``
    (the whole of ``s`` when there is no digit)."""
    body, radix = _radix(s, base)
    value, n = _digits(body, radix)
    if n == 0:
        return 0, s
    return value & _U64, body[n:]
