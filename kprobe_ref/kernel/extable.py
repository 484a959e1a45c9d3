"""The kernel's exception table, read from the image.

Linux v6.12 (``arch/*/include/asm/extable.h``, ``kernel/extable.c``): ``__ex_table`` holds
one entry per instruction whose fault the kernel fixes up (user-memory accessors, MSR
reads...), 12 bytes each on x86_64, arm64, riscv and loongarch, starting with ``int insn``,
the instruction's address relative to that field (the fixup follows in the same form).  The
x86 optimizer's ``can_optimize`` refuses a whole function when any of its instructions has
an entry (``search_exception_tables``): the fixup code jumps back into the function, to a
place the optimizer's branch analysis cannot see.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from kprobe_ref.kernel.elfscan import KernelElf

__all__ = ["ENTRY_SIZE", "ExceptionTable", "exception_table"]

ENTRY_SIZE = 12
SECTION = "__ex_table"


@dataclass
class ExceptionTable:
    """The instruction addresses the exception table names, sorted."""

    insns: list[int] = field(default_factory=list)

    def any_in(self, addr: int, size: int) -> bool:
        """Whether an entry names an instruction in ``[addr, addr + size)``."""
        i = bisect.bisect_left(self.insns, addr)
        return i < len(self.insns) and self.insns[i] < addr + size

    def extend(self, other: ExceptionTable) -> None:
        """Add the entries of another image."""
        self.insns = sorted(self.insns + other.insns)


def exception_table(kelf: KernelElf) -> ExceptionTable:
    """The exception table of the image (empty when it has no ``__ex_table``)."""
    sec = next((s for s in kelf.sections if s.name == SECTION and s.has_bytes), None)
    if sec is None:
        return ExceptionTable()
    raw = kelf.read(sec.addr, sec.size - sec.size % ENTRY_SIZE)
    mask = (1 << 64) - 1
    insns = [(sec.addr + i * ENTRY_SIZE + rel) & mask
             for i, (rel,) in enumerate(struct.iter_unpack("<i8x", raw))]
    return ExceptionTable(sorted(insns))
