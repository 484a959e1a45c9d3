"""x86_64: the ISA hooks of the probe engine.

Breakpoint: ``int3`` (0xCC) for probes, for the end of a step and for the return trampoline;
the trap frame's ``rip`` is one past it, as on Linux.  Instructions have variable length, so
a probe inside a known function must lie on a boundary found by decoding from its start.
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
from kprobe_ref.arch.x86_64 import decode as _decode
from kprobe_ref.arch.x86_64 import encoding, optimize, regs, rethook, simulate, slot
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["OPS", "X86_64Ops"]


class X86_64Ops:
    """The x86_64 implementation of :class:`kprobe_ref.arch.ArchOps`."""

    name = "x86_64"
    regs_class: type[PtRegs] = regs.X86_64PtRegs
    insn_align = 1
    max_insn_len = 15
    slot_size = slot.SLOT_SIZE
    boost_offset = slot.BOOST_OFFSET
    boost_reach = slot.BOOST_REACH
    variable_length = True
    stack_align = 16
    link_register: str | None = None
    cpu_regs: Mapping[str, str] = regs.CPU_REGS

    def decode(self, code: bytes, addr: int, user: bool) -> Decoded:
        return _decode.decode(code, addr, user)

    def insn_length(self, code: bytes, addr: int) -> int:
        return encoding.length(code, addr)

    def breakpoint(self, decoded: Decoded, user: bool) -> bytes:
        return encoding.BREAK_UPROBE if user else encoding.BREAK_KPROBE

    def step_breakpoint(self, user: bool) -> bytes:
        return encoding.BREAK_STEP

    def trap_address(self, regs: PtRegs) -> int:
        return (regs.pc - 1) & ((1 << 64) - 1)

    def trap_pc(self, addr: int) -> int:
        return (addr + 1) & ((1 << 64) - 1)

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
        return None

    def trampoline(self, user: bool) -> bytes:
        return rethook.TRAMPOLINE

    def rethook_prepare(self, state: SimState, trampoline: int) -> tuple[BV, BV]:
        return rethook.rethook_prepare(state, trampoline)

    def rethook_return(self, regs: PtRegs, real_ret: int) -> None:
        rethook.rethook_return(regs, real_ret)

    def return_frame(self, regs: PtRegs) -> int:
        return rethook.return_frame(regs)


OPS = X86_64Ops()
