"""riscv64: the ISA hooks of the probe engine.

Breakpoints: ``c.ebreak`` (0x9002) over a 16-bit instruction and ``ebreak`` (0x00100073)
over a 32-bit one, so a probe never overwrites the next instruction; ``ebreak`` ends an
out-of-line step and marks the return trampoline.  The trap frame's ``epc`` is the
breakpoint's own address.  With the "C" extension instructions are 2 or 4 bytes on 2-byte
alignment, so a probe inside a known function must lie on a boundary found by decoding
from its start.  Mirrors Linux ``arch/riscv/kernel/probes/kprobes.c``.
"""

from __future__ import annotations

from collections.abc import Mapping

from kprobe_ref.arch.base import (
    Decoded,
    OptPlan,
    OptRegion,
    Reader,
    SimState,
    SlotPlan,
    SlotReach,
)
from kprobe_ref.arch.riscv64 import decode as _decode
from kprobe_ref.arch.riscv64 import encoding, optimize, regs, rethook, simulate, slot
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["OPS", "Riscv64Ops"]


class Riscv64Ops:
    """The riscv64 implementation of :class:`kprobe_ref.arch.ArchOps`."""

    name = "riscv64"
    regs_class: type[PtRegs] = regs.Riscv64PtRegs
    insn_align = 2
    max_insn_len = 4
    slot_size = slot.SLOT_SIZE
    boost_offset = slot.BOOST_OFFSET
    boost_reach = slot.BOOST_REACH
    variable_length = True
    stack_align = 16
    link_register: str | None = "x1"
    cpu_regs: Mapping[str, str] = regs.CPU_REGS

    def decode(self, code: bytes, addr: int, user: bool) -> Decoded:
        return _decode.decode(code, addr, user)

    def insn_length(self, code: bytes, addr: int) -> int:
        return encoding.length(code)

    def breakpoint(self, decoded: Decoded, user: bool) -> bytes:
        if decoded.length == 2:
            return encoding.BREAK_KPROBE_16
        return encoding.BREAK_UPROBE if user else encoding.BREAK_KPROBE

    def step_breakpoint(self, user: bool) -> bytes:
        return encoding.BREAK_STEP

    def trap_address(self, regs: PtRegs) -> int:
        return regs.pc

    def trap_pc(self, addr: int) -> int:
        return addr

    def reach(self, decoded: Decoded, user: bool) -> SlotReach:
        return slot.reach(decoded, user)

    def build_slot(self, decoded: Decoded, slot_addr: int, user: bool) -> SlotPlan:
        return slot.build_slot(decoded, slot_addr, user)

    def build_boosted_slot(self, decoded: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
        return slot.build_boosted_slot(decoded, slot_addr, user)

    def plan_optimized_region(self, code: bytes, start: int, addr: int, mem: Reader
                              ) -> OptRegion | str:
        return optimize.plan_region(code, start, addr, mem)

    def build_detour(self, region: OptRegion, addr: int, detour: int
                     ) -> OptPlan | str:
        return optimize.build_detour(region, addr, detour)

    def simulate(self, decoded: Decoded, state: SimState) -> None:
        simulate.simulate(decoded, state)

    def sequence_hazard(self, code: bytes, start: int, addr: int) -> str | None:
        return _decode.sequence_hazard(code, start, addr)

    def trampoline(self, user: bool) -> bytes:
        return rethook.TRAMPOLINE

    def rethook_prepare(self, state: SimState, trampoline: int) -> tuple[BV, BV]:
        return rethook.rethook_prepare(state, trampoline)

    def rethook_return(self, regs: PtRegs, real_ret: int) -> None:
        rethook.rethook_return(regs, real_ret)

    def return_frame(self, regs: PtRegs) -> int:
        return rethook.return_frame(regs)


OPS = Riscv64Ops()
