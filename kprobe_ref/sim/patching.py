"""Patching live kernel text while other CPUs execute it.

The fetch model.  When a CPU arrives at an instruction it *latches* the first bytes of it
(it has fetched them, as a pipeline does before it executes); a store another CPU makes
before the instruction executes is seen only in the bytes after the latched ones, so the
CPU can execute a half-written instruction.  A serialising event on the CPU (x86's
``sync_core`` reached by the IPI of ``text_poke_sync``; the ``ISB`` or ``FENCE.I``/``IBAR``
each CPU executes when it leaves ``stop_machine``) discards the latch.  What is latched is
what each manual leaves open:

- x86_64: the rest of the 16-byte fetch block (Intel SDM vol. 3, "Handling Self- and
  Cross-Modifying Code": without a serialising instruction on the executing processor it
  may execute stale bytes).
- aarch64: the whole word.  When the old and the new instruction are both among B, BL, BRK
  and NOP (the Arm ARM's "concurrent modification and execution of instructions" list) the
  CPU executes one or the other; otherwise the result is CONSTRAINED UNPREDICTABLE and the
  model executes the old low halfword with the new high halfword.
- riscv64 and loongarch64: the first 16-bit parcel (instruction fetch is not ordered with
  stores until ``FENCE.I`` / ``IBAR``; parcels may be fetched separately).

The protocols (:attr:`Patcher.enabled` switches them off to show what they prevent):

- x86_64: a one-byte write (``int3`` in, or the original first byte back) is ``text_poke``
  followed by ``text_poke_sync``; a longer replacement of live text is
  :meth:`Patcher.text_poke_bp`: ``int3`` on the first byte, sync, the tail, sync, the first
  byte, sync, a CPU that meets the ``int3`` meanwhile emulating the new instruction.
- aarch64: :meth:`Patcher.patch_text_a64` uses ``aarch64_insn_patch_text_nosync`` when old
  and new are both B, BL, BRK or NOP and ``stop_machine`` otherwise; arming and disarming a
  kprobe always go through ``stop_machine`` (``aarch64_insn_patch_text``), as in Linux: a
  CPU executing the old NOP after ``register_kprobe`` returned would lose the hit.
- riscv64 and loongarch64: ``stop_machine`` (``patch_text``, ``larch_insn_patch_text``).

In this model every other CPU is always at an instruction boundary between two host
operations, so ``stop_machine`` is the write followed by every CPU's serialising event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kprobe_ref.errors import KprobeError

if TYPE_CHECKING:
    from kprobe_ref.sim.machine import Machine
    from kprobe_ref.sim.smp import CpuState, Smp

__all__ = ["Patcher", "PokeJob", "hotpatch_safe_a64"]

X86_FETCH_BLOCK = 16
INT3 = 0xCC
_X86_NOPS = (
    b"\x90", b"\x66\x90", b"\x0f\x1f\x00", b"\x0f\x1f\x40\x00", b"\x0f\x1f\x44\x00\x00",
    b"\x66\x0f\x1f\x44\x00\x00", b"\x0f\x1f\x80\x00\x00\x00\x00",
    b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
)


def hotpatch_safe_a64(word: int) -> bool:
    """Whether an A64 instruction is one the architecture lets another CPU replace while it
    is being executed: B, BL, BRK or NOP."""
    return (
        (word & 0x7C00_0000) == 0x1400_0000  # B, BL
        or (word & 0xFFE0_001F) == 0xD420_0000  # BRK #imm16
        or word == 0xD503_201F  # NOP
    )


@dataclass
class PokeJob:
    """A live-text replacement carried out in stages, other CPUs running between them
    (:meth:`advance` does one stage; :attr:`stages` names what each did)."""

    addr: int
    new: bytes
    steps: list[tuple[str, Callable[[], None]]]
    stages: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.steps

    def advance(self) -> bool:
        """Do the next stage; ``True`` while stages remain."""
        if self.steps:
            name, action = self.steps.pop(0)
            action()
            self.stages.append(name)
        return bool(self.steps)

    def finish(self) -> None:
        """Do every remaining stage."""
        while self.advance():
            pass


class Patcher:
    """Live-text writes of the kernel address space under each ISA's protocol."""

    def __init__(self, machine: Machine, smp: Smp) -> None:
        self.m = machine
        self.smp = smp
        self.enabled = True
        self.syncs = 0
        self.stop_machines = 0
        self.nosync_writes = 0
        self._bp: PokeJob | None = None

    # -- the fetch model -----------------------------------------------------------------------
    def _granule(self, pc: int) -> int:
        isa = self.m.isa
        if isa == "x86_64":
            return X86_FETCH_BLOCK - pc % X86_FETCH_BLOCK
        return 4 if isa == "aarch64" else 2

    def prefetch(self, pc: int) -> tuple[int, bytes] | None:
        """The bytes a CPU arriving at ``pc`` latches (``None`` where it cannot fetch)."""
        n = self._granule(pc)
        if not self.m.kernel.has(pc, n, "x"):
            return None
        return pc, self.m.kernel.read(pc, n)

    def seen(self, latch: tuple[int, bytes] | None, pc: int) -> bytes | None:
        """The bytes at ``pc`` as the latching CPU executes them, or ``None`` when they are
        memory's own."""
        if latch is None or latch[0] != pc:
            return None
        old = latch[1]
        now = self.m.kernel.read(pc, len(old))
        if now == old:
            return None
        if self.m.isa != "aarch64":
            return old
        o, n = int.from_bytes(old, "little"), int.from_bytes(now, "little")
        if hotpatch_safe_a64(o) and hotpatch_safe_a64(n):
            return old
        return ((o & 0xFFFF) | (n & 0xFFFF_0000)).to_bytes(4, "little")

    @contextmanager
    def fetch(self, cpu: CpuState, pc: int) -> Iterator[None]:
        """Execute the instruction at ``pc`` as ``cpu`` fetched it: the latched bytes stand
        in memory for that one instruction, then memory's own bytes come back."""
        bytes_seen = self.seen(cpu.latch, pc)
        if bytes_seen is None:
            yield
            return
        backend = self.m.kernel.cpu
        real = backend.mem_read(pc, len(bytes_seen))
        backend.mem_write(pc, bytes_seen)
        try:
            yield
        finally:
            backend.mem_write(pc, real)

    def sync(self) -> None:
        """Every CPU executes a serialising instruction (``text_poke_sync``'s IPI, or the
        ``ISB``/``FENCE.I``/``IBAR`` on leaving ``stop_machine``): latches are dropped and
        each CPU fetches its next instruction afresh."""
        self.syncs += 1
        for cpu in self.smp.cpus:
            cpu.latch = None
            if cpu.task is not None:
                cpu.latch = self.prefetch(cpu.task.pc)

    # -- writes through the engine's writable window ---------------------------------------
    def text_write(self, addr: int, size: int, action: Callable[[], None]) -> None:
        """The engine writes ``size`` bytes of kernel text at ``addr`` (``action``): apply
        the ISA's protocol around it."""
        if not self.enabled or len(self.smp.cpus) == 1:
            action()
            return
        if self.m.isa == "x86_64":
            action()  # text_poke
            self.sync()  # text_poke_sync
            return
        action()  # aarch64_insn_patch_text, patch_text, larch_insn_patch_text
        self._leave_stop_machine()

    def patch_text_a64(self, addr: int, word: int) -> None:
        """Replace the A64 instruction at ``addr`` by ``word`` under the architecture's rule:
        ``aarch64_insn_patch_text_nosync`` (no other CPU stops) when the old and the new
        instruction are both B, BL, BRK or NOP, ``stop_machine`` otherwise.  With the
        protocol disabled the store is never followed by ``stop_machine``."""
        if self.m.isa != "aarch64":
            raise KprobeError("patch_text_a64 is the aarch64 rule")
        if addr % 4:
            raise KprobeError(f"A64 instruction address {addr:#x} is not 4-byte aligned")
        old = int.from_bytes(self.m.kernel.read(addr, 4), "little")
        store = self._store(addr, (word & 0xFFFF_FFFF).to_bytes(4, "little"))
        store()
        if not self.enabled:
            return
        if hotpatch_safe_a64(old) and hotpatch_safe_a64(word):
            self.nosync_writes += 1
            return
        self._leave_stop_machine()

    def _leave_stop_machine(self) -> None:
        self.stop_machines += 1
        self.sync()

    # -- x86 text_poke_bp ----------------------------------------------------------------------
    def text_poke_bp(self, addr: int, new: bytes) -> PokeJob:
        """Replace the x86 instruction at ``addr`` with ``new`` (a CALL, JMP, JMP8 or NOP,
        the instructions Linux's handler emulates) by the breakpoint protocol; returns the
        job to advance.
        With the protocol disabled the job stores one byte per stage and never syncs."""
        if self.m.isa != "x86_64":
            raise KprobeError("text_poke_bp is the x86_64 protocol")
        if self._bp is not None and not self._bp.finished:
            raise KprobeError("a text_poke_bp is already in progress (text_mutex)")
        _x86_emulation(new, addr)  # validates the replacement
        old = self.m.kernel.read(addr, len(new))
        steps: list[tuple[str, Callable[[], None]]]
        if not self.enabled:
            steps = [(f"byte {i}", self._store(addr + i, new[i:i + 1]))
                     for i in range(len(new)) if old[i] != new[i]]
            return PokeJob(addr, new, steps)
        steps = [
            ("int3", self._store(addr, bytes([INT3]))),
            ("sync 1", self.sync),
        ]
        if len(new) > 1:
            steps += [("tail", self._store(addr + 1, new[1:])), ("sync 2", self.sync)]
        steps += [("first byte", self._store(addr, new[:1])), ("sync 3", self.sync),
                  ("done", self._clear_bp)]
        job = PokeJob(addr, new, steps)
        self._bp = job
        return job

    def _store(self, addr: int, data: bytes) -> Callable[[], None]:
        def store() -> None:
            with self.m.kernel.writable(addr, len(data)):
                self.m.kernel.write(addr, data, enforce=True)

        return store

    def _clear_bp(self) -> None:
        self._bp = None

    def poke_handler(self, trap_pc: int) -> int | None:
        """x86's ``poke_int3_handler``: a CPU that meets the breakpoint of a
        ``text_poke_bp`` in progress emulates the new instruction; returns the next PC
        (``None`` when the trap is not the poke's)."""
        job = self._bp
        if job is None or trap_pc != job.addr:
            return None
        kind, target = _x86_emulation(job.new, job.addr)
        if kind == "call":
            self._push(job.addr + len(job.new))
        return target

    def _push(self, value: int) -> None:
        cpu = self.m.kernel.cpu
        sp = (cpu.reg_read("rsp") - 8) & ((1 << 64) - 1)
        self.m.kernel.write(sp, value.to_bytes(8, "little"), enforce=True)
        cpu.reg_write("rsp", sp)

    def stale_breakpoint(self, trap_pc: int) -> int | None:
        """x86's ``kprobe_int3_handler`` rule: a breakpoint another CPU removed just after
        this CPU fetched it is not an error; back up and run what is there now.  Returns the
        PC to resume at, or ``None`` when memory still holds the breakpoint."""
        if self.m.isa != "x86_64":
            return None
        if self.m.kernel.read(trap_pc, 1)[0] == INT3:
            return None
        return trap_pc


def _x86_emulation(new: bytes, addr: int) -> tuple[str, int]:
    """What a CPU meeting the poke breakpoint does instead of ``new``: ``(kind, next pc)``.
    Raises ``KprobeError`` for an instruction ``text_poke_bp`` cannot emulate."""
    mask = (1 << 64) - 1
    end = addr + len(new)
    if len(new) == 5 and new[0] in (0xE8, 0xE9):
        target = (end + int.from_bytes(new[1:], "little", signed=True)) & mask
        return ("call" if new[0] == 0xE8 else "jmp"), target
    if len(new) == 2 and new[0] == 0xEB:
        return "jmp", (end + int.from_bytes(new[1:], "little", signed=True)) & mask
    if new in _X86_NOPS:
        return "nop", end
    raise KprobeError(f"text_poke_bp cannot replace live text with {new.hex()} "
                      "(only CALL rel32, JMP rel32, JMP rel8 and NOP)")
