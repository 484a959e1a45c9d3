"""capstone's opinion on validity: a third decoder, written by neither us nor Ghidra.

aarch64 words are decoded as one buffer in capstone's skip-data mode (an undecodable word
comes back as a 4-byte ``.byte`` entry, so the stream never loses its alignment); riscv64
words are decoded one at a time (a skipped word would resynchronise on a halfword).  An
instruction counts as valid only when capstone consumes exactly the word's bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import capstone

__all__ = ["HAS_OPINION", "valid"]

HAS_OPINION = frozenset({"aarch64", "riscv64"})
"""ISAs capstone decodes (its LoongArch support postdates capstone 5)."""


@lru_cache(maxsize=4)
def _cs(isa: str, skipdata: bool) -> Any:
    if isa == "aarch64":
        cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    else:
        cs = capstone.Cs(capstone.CS_ARCH_RISCV,
                         capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)
    cs.skipdata = skipdata
    return cs


def valid(isa: str, buf: bytes, size: int) -> Sequence[bool]:
    """For each ``size``-byte word of ``buf``: does capstone decode exactly it?"""
    n = len(buf) // size
    if isa == "aarch64":
        out = [False] * n
        for addr, length, mnem, _ in _cs(isa, True).disasm_lite(buf, 0):
            if length == 4 and mnem != ".byte":
                out[addr // 4] = True
        return out
    cs = _cs(isa, False)
    res = []
    for k in range(n):
        ins = next(cs.disasm_lite(buf[k * size : (k + 1) * size], 0, 1), None)
        res.append(ins is not None and ins[1] == size)
    return res
