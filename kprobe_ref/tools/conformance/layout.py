"""Where conformance vectors live in the simulated address space, and what memory holds.

Every vector's instruction sits at or near :data:`CODE` (64 GiB, far enough from zero that
the largest backward branch of every ISA lands on a mappable address).  Registers that an
instruction may use as an address hold values near :data:`DATA`; the stack pointer points
into :data:`STACK`.  Memory is mapped lazily, one page at a time, on the first access that
faults, and every page starts with the same contents in every run: :func:`page_bytes` derives
them from the page's address alone, so a vector's memory regions are reproducible.

Half of a data page's 8-byte words look like code or data addresses (so a ``ret`` or a jump
table entry loaded from memory leads somewhere mappable); the other half are arbitrary
64-bit values (so sign and zero extension of loads are exercised).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from kprobe_ref.arch import ArchOps

__all__ = [
    "CODE",
    "DATA",
    "FLAG_REGS",
    "PAGE",
    "STACK",
    "TARGETS",
    "flag_names",
    "page_bytes",
    "page_of",
    "reg_names",
]

PAGE = 0x1000
CODE = 0x10_0000_0000
"""The default address of a vector's instruction."""
DATA = 0x30_0000_0000
"""Address-like register values lie in ``[DATA, DATA + 0x1000)``."""
STACK = 0x38_0000_0800
"""The stack pointer of every vector (16-byte aligned)."""
TARGETS = 0x20_0000_0000
"""Address-like words in data pages lie in ``[TARGETS, TARGETS + 2**36)``."""
MAPPABLE = 1 << 47
"""Pages at or above this address are never mapped (the machine's address space)."""

FLAG_REGS: Mapping[str, tuple[str, ...]] = {
    "x86_64": ("rflags",),
    "aarch64": ("pstate",),
    "riscv64": (),
    "loongarch64": tuple(f"fcc{i}" for i in range(8)),
}
"""The condition state of each ISA, reported in a vector's ``flags``: a ``pt_regs`` field
(x86_64 ``rflags``, aarch64 ``pstate``) or state outside ``pt_regs`` (the LoongArch FP
condition flags)."""


def page_of(addr: int) -> int:
    """The base address of the page holding ``addr``."""
    return addr & ~(PAGE - 1)


def page_bytes(base: int) -> bytes:
    """The initial contents of the page at ``base``: 512 deterministic 8-byte words."""
    out = bytearray()
    for block in range(PAGE // 32):
        digest = hashlib.sha256(f"{base:#x}:{block}".encode()).digest()
        for i in range(4):
            word = int.from_bytes(digest[8 * i : 8 * i + 8], "little")
            if word & 1:
                word = TARGETS + (word >> 8 & 0xF_FFFF_FFF0)
            out += word.to_bytes(8, "little")
    return bytes(out)


def reg_names(arch: ArchOps) -> tuple[str, ...]:
    """The ``pt_regs`` field names a vector's ``regs`` holds, in ``pt_regs`` order: every
    field the CPU carries except the condition flags (see :data:`FLAG_REGS`)."""
    frame = arch.regs_class()
    carried = {_field(frame, name) for name in arch.cpu_regs}
    flags = set(FLAG_REGS[arch.name])
    return tuple(n for n in frame.as_dict() if n in carried and n not in flags)


def flag_names(arch: ArchOps) -> tuple[str, ...]:
    """The names in a vector's ``flags``."""
    return FLAG_REGS[arch.name]


def _field(frame: object, name: str) -> str:
    """The ``pt_regs`` field name of an architectural register name (``x5`` -> ``regs[5]``)."""
    aliases: Mapping[str, str] = getattr(frame, "ALIASES", {})
    return aliases.get(name, name)
