"""Independent check of the decode tables' PC claim: every word the decoder steps out of
line translates (Ghidra P-code through pypcode) to the same operations at two different
addresses, except for the fall-through address.

Words per ISA: ``PC_WORDS`` (default 200,000; 1,000,000 with
``HYPOTHESIS_PROFILE=thorough``; about 40 s for 200,000 words of each ISA on this
machine).  riscv64 also covers all 65,536 16-bit encodings.

One difference is allowed besides the fall-through: the instruction's own address passed
to a user-defined operation (``CALLOTHER``), which is how the specifications raise an
exception (aarch64 ``UDF #imm`` is stepped and faults in the slot; the engine reports a
fault in a slot at the probed address, so the recorded PC never reaches the caller).
"""

from __future__ import annotations

import os
import random
from typing import Any

import pypcode
import pytest

from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Verdict

LANGS = {"aarch64": "AARCH64:LE:64:v8A", "riscv64": "RISCV:LE:64:RV64GC",
         "loongarch64": "Loongarch:LE:64:lp64d"}
ADDRS = (0x0000_0000_0040_1000, 0x7FFF_A5A5_5A5A_0F00)
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
WORDS = int(os.environ.get("PC_WORDS", 1_000_000 if THOROUGH else 200_000))


def _varnode(v: Any, addr: int, length: int, trap: bool = False) -> tuple[object, ...]:
    space = v.space.name
    if space in ("const", "ram") and v.offset == (addr + length) % (1 << 64):
        return (space, "NEXT", v.size)
    if trap and space == "const" and v.offset == addr:
        return (space, "FAULT_PC", v.size)
    return (space, v.offset, v.size)


def _normalised(ctx: Any, code: bytes, addr: int) -> list[tuple[object, ...]] | None:
    try:
        tr = ctx.translate(code, addr, max_instructions=1)
    except pypcode.BadDataError:
        return None
    except pypcode.UnimplError:
        return None
    ops: list[tuple[object, ...]] = []
    length = len(code)
    for op in tr.ops:
        if op.opcode == pypcode.OpCode.IMARK:
            length = sum(v.size for v in op.inputs)
            continue
        out = None if op.output is None else _varnode(op.output, addr, length)
        trap = op.opcode == pypcode.OpCode.CALLOTHER
        ops.append((op.opcode, out, *(_varnode(v, addr, length, trap) for v in op.inputs)))
    return ops


def _stepped(isa: str, code: bytes) -> bool:
    return get_arch(isa).decode(code, 0x1000, False).verdict is Verdict.STEP_OUT_OF_LINE


def _differs(ctx: Any, code: bytes) -> bool:
    a, b = (_normalised(ctx, code, addr) for addr in ADDRS)
    return a is not None and b is not None and a != b


def _check(isa: str, words: list[bytes]) -> None:
    ctx = pypcode.Context(LANGS[isa])
    bad = [c.hex() for c in words if _stepped(isa, c) and _differs(ctx, c)]
    assert bad == []


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["aarch64", "riscv64", "loongarch64"])
def test_random_stepped_words_do_not_depend_on_the_pc(isa: str) -> None:
    rng = random.Random(isa)
    words = [rng.getrandbits(32) for _ in range(WORDS)]
    if isa == "riscv64":
        words = [w | 0b11 if (w & 0b11100) != 0b11100 else (w & ~0b100) | 0b11 for w in words]
    _check(isa, [w.to_bytes(4, "little") for w in words])


@pytest.mark.slow
def test_every_16_bit_riscv_encoding_stepped_does_not_depend_on_the_pc() -> None:
    _check("riscv64", [h.to_bytes(2, "little") for h in range(1 << 16) if h & 0b11 != 0b11])
