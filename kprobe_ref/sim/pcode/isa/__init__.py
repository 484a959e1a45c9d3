"""The ISA records of the P-code CPU, one module per ISA (:class:`base.IsaRecord`)."""

from __future__ import annotations

from kprobe_ref.sim.pcode.isa import aarch64, loongarch64, riscv64, x86_64
from kprobe_ref.sim.pcode.isa.base import IsaRecord

__all__ = ["ISAS", "IsaRecord"]

ISAS: dict[str, IsaRecord] = {
    r.name: r for r in (x86_64.RECORD, aarch64.RECORD, riscv64.RECORD, loongarch64.RECORD)
}
"""Every ISA the P-code CPU runs, by name."""
