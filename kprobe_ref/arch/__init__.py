"""The ISA hooks of the probe engine: the :class:`ArchOps` protocol and its registry.

The generic engine (``probe``, ``point``, ``manager``, ``kretprobe``, ``uprobe``) is written
once; each ISA package supplies the hooks below and nothing else.  Every ISA package has the
same modules: ``encoding`` (instruction fields and encoders), ``decode`` (the verdict
table), ``simulate`` (the rules for simulated classes), ``slot`` (out-of-line slots and
relocation), ``rethook`` (return-address hijacking) and ``regs`` (the ``pt_regs`` frame and
calling convention).  ISAs are found through the explicit registry :data:`ARCHES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Protocol

from kprobe_ref.arch.base import Decoded, SimState, SlotPlan, SlotReach, Verdict
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = [
    "ARCHES", "ArchOps", "Decoded", "SimState", "SlotPlan", "SlotReach", "Verdict", "get_arch",
    "instruction_starts",
]


class ArchOps(Protocol):
    """What one ISA supplies to the generic probe engine."""

    name: str
    regs_class: type[PtRegs]
    insn_align: int
    """Required alignment of a probe address (1 on x86_64)."""
    max_insn_len: int
    """Bytes to read to be sure to hold one whole instruction."""
    slot_size: int
    """Bytes of executable memory one out-of-line slot takes."""
    boost_offset: int
    """Where, inside a slot of ``slot_size`` bytes, the boosted variant starts (the
    two-trap variant starts at 0)."""
    boost_reach: int
    """How far (in bytes, either way) a kernel slot may lie from the probed code for its
    boost jump back to reach; a host prefers slots within it but never needs them."""
    variable_length: bool
    """Whether instruction boundaries must be found by decoding from a function start."""
    stack_align: int
    """Stack pointer alignment of the ISA's C calling convention."""
    link_register: str | None
    """The CPU register a call writes its return address to (``None``: pushed on the
    stack)."""
    cpu_regs: Mapping[str, str]
    """``pt_regs`` register name -> CPU backend register name (see ``kprobe_ref.sim.cpu``),
    for every register a trap frame carries."""

    def decode(self, code: bytes, addr: int, user: bool) -> Decoded:
        """Decode the instruction at the start of ``code``, located at ``addr``, and give
        its verdict.  ``user`` tells whether it is process code (a uprobe)."""

    def insn_length(self, code: bytes, addr: int) -> int:
        """Length of the instruction at the start of ``code`` (0 if undecodable)."""

    def breakpoint(self, decoded: Decoded, user: bool) -> bytes:
        """The breakpoint written over the probed instruction."""

    def step_breakpoint(self, user: bool) -> bytes:
        """The breakpoint that ends an out-of-line step or marks a return trampoline."""

    def trap_address(self, regs: PtRegs) -> int:
        """The address of the breakpoint instruction that trapped, from the trap frame."""

    def trap_pc(self, addr: int) -> int:
        """The PC a trap frame holds for a breakpoint at ``addr`` (x86_64: ``addr + 1``)."""

    def reach(self, decoded: Decoded, user: bool) -> SlotReach:
        """Where an out-of-line slot for ``decoded`` may go: the relocation constraints it
        must meet and those its boosted variant needs (one rule for every ISA; a host's
        allocator searches outward from the code for a place meeting them)."""

    def build_slot(self, decoded: Decoded, slot_addr: int, user: bool) -> SlotPlan:
        """Build the out-of-line slot for a ``STEP_OUT_OF_LINE`` instruction placed at
        ``slot_addr``; raise :class:`~kprobe_ref.errors.OutOfReach` if a relocated operand
        cannot reach its target from there."""

    def build_boosted_slot(self, decoded: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
        """Build the boosted variant of a ``STEP_OUT_OF_LINE`` instruction's slot placed at
        ``slot_addr``: the instruction as :meth:`build_slot` relocates it for that address,
        followed by a jump to the next instruction.  ``None`` when the instruction may not
        be boosted, its slot needs a scratch register, or the jump cannot reach (the probe
        then takes two traps; boosting never refuses a probe)."""

    def simulate(self, decoded: Decoded, state: SimState) -> None:
        """Apply a ``SIMULATE`` instruction's effect to ``state``."""

    def sequence_hazard(self, code: bytes, start: int, addr: int) -> str | None:
        """Given the bytes of the function from ``start`` up to and including the probed
        instruction at ``addr``, return a reason code if the probe would sit inside an
        exclusive (load-linked .. store-conditional) sequence, else ``None``."""

    def trampoline(self, user: bool) -> bytes:
        """The return trampoline's code: it traps into the host at its first instruction."""

    def rethook_prepare(self, state: SimState, trampoline: int) -> tuple[BV, BV]:
        """At function entry, save and replace the return address: return ``(real return
        address, frame)`` and make the function return to ``trampoline``."""

    def rethook_return(self, regs: PtRegs, real_ret: int) -> None:
        """At the trampoline trap, make execution continue at ``real_ret`` exactly as the
        unprobed return would have."""

    def return_frame(self, regs: PtRegs) -> int:
        """At the trampoline trap, the frame value ``rethook_prepare`` recorded for the
        returning call (the stack pointer the caller sees after the return)."""


def _registry() -> dict[str, ArchOps]:
    from kprobe_ref.arch import aarch64, loongarch64, riscv64, x86_64

    return {"x86_64": x86_64.OPS, "aarch64": aarch64.OPS, "riscv64": riscv64.OPS,
            "loongarch64": loongarch64.OPS}


ARCHES: dict[str, ArchOps] = _registry()
"""Every supported ISA by name."""


def get_arch(name: str) -> ArchOps:
    """Return the hooks of ISA ``name``; an unknown name is a ``KprobeError``."""
    from kprobe_ref.errors import InvalidProbeDefinition

    try:
        return ARCHES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHES))
        raise InvalidProbeDefinition(f"unknown ISA {name!r} (known: {known})") from None


@lru_cache(maxsize=256)
def instruction_starts(isa: str, start: int, code: bytes) -> tuple[tuple[int, ...], int | None]:
    """The instruction start addresses of ``code`` decoded from ``start``, and the address
    where decoding stopped on bytes that do not decode (``None`` when all of it did).
    Cached: registering many probes in one function decodes it once."""
    arch = get_arch(isa)
    starts: list[int] = []
    off = 0
    while off < len(code):
        n = arch.insn_length(code[off:], start + off)
        if n == 0:
            return tuple(starts), start + off
        starts.append(start + off)
        off += n
    return tuple(starts), None
