"""The P-code CPU: one guest CPU for all four ISAs.

It fetches from :class:`~kprobe_ref.sim.pcode.memory.Memory`, translates one instruction
at a time through pypcode, caches the compiled ops (:mod:`kprobe_ref.sim.pcode.compiler`)
and runs them on an :class:`~kprobe_ref.sim.pcode.state.IntegerState`.  Nothing here
depends on the ISA: the register names, packed flag registers, the program counter and
the replaced instructions come from the ISA's record (:mod:`kprobe_ref.sim.pcode.isa`).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pypcode

from kprobe_ref import bits
from kprobe_ref.sim.cpu import Perms, Stop, StopKind
from kprobe_ref.sim.pcode.compiler import CompiledInsn, Compiler, InsnFn, Translation
from kprobe_ref.sim.pcode.isa import ISAS
from kprobe_ref.sim.pcode.isa.base import Replacement
from kprobe_ref.sim.pcode.memory import MAX_INSN, PAGE_SHIFT, Memory, page_range
from kprobe_ref.sim.pcode.state import IntegerState, State, Vn, vn
from kprobe_ref.sim.pcode.trap import Trap

__all__ = ["PcodeCpu"]


_TRANSLATIONS: dict[tuple[str, bool, int], list[Translation]] = {}
"""Compiled instructions shared by every CPU: (ISA, fast path, address) -> the
translations made there, most recent first.  SLEIGH decodes an instruction from its own
bytes only, so a translation applies wherever the fetched bytes start with its bytes."""

_MAX_TRANSLATIONS = 1 << 13
"""When the shared cache holds this many addresses it starts again empty (a translation
not yet generated holds its pypcode translation, some 16 KiB with its closures; this keeps
the cache near 128 MiB at most)."""

_PER_ADDRESS = 4
"""Translations kept per address (code patched in place alternates between a few)."""


WARM_UP = 8
"""How many times an instruction runs on its closures before its fast path is generated:
generating costs about as much as a few executions, and code run only a few times (a
breakpoint, an out-of-line slot) is not worth it."""

_SMALL_WRITE = 64
"""Writes up to this many bytes look up each address an overlapping instruction may start
at; longer ones scan the cached instructions of the pages they touch."""


@functools.cache
def _language(isa: str) -> tuple[Any, dict[str, Any], dict[str, Vn]]:
    """Return the shared SLEIGH context of ``isa`` (loading one takes tens of milliseconds;
    translation does not change it), its registers and the architectural register map."""
    ctx = pypcode.Context(ISAS[isa].language)
    regs = dict(ctx.registers)
    return ctx, regs, ISAS[isa].registers(lambda name: vn(regs[name]))


class PcodeCpu:
    """A :class:`~kprobe_ref.sim.cpu.Cpu` that interprets Ghidra P-code for ``isa`` (a key
    of :data:`~kprobe_ref.sim.pcode.isa.ISAS`)."""

    def __init__(self, isa: str, *, fast: bool = True) -> None:
        """``fast=False`` runs every instruction on the generic closures instead of the
        generated fast path (:mod:`kprobe_ref.sim.pcode.fast`); both compute the same."""
        record = ISAS.get(isa)
        if record is None:
            raise ValueError(f"unknown ISA {isa!r}; expected one of {sorted(ISAS)}")
        self.isa = isa
        self.record = record
        self.ctx, self._sleigh_regs, self.regmap = _language(isa)
        self.mem = Memory()
        self.state = IntegerState(self.mem)
        self.state.on_store = self._guest_store
        zero = record.zero_register
        self._compiler = Compiler(record, self.regmap[record.pc],
                                  vn(self._sleigh_regs[zero]) if zero else None,
                                  fast)
        self._fast = fast
        self.warm_up = WARM_UP if fast else 0
        """Executions of a newly translated instruction on its closures before its fast
        path is generated (0: at once)."""
        self._cache: dict[int, CompiledInsn] = {}
        self._runs: dict[int, InsnFn] = {}
        """The ``run`` of each cached instruction whose bytes were found executable while
        the page map was at ``_runs_epoch`` (emptied when the epoch moves)."""
        self._runs_epoch = self.mem.epoch
        self._code_pages: dict[int, set[int]] = {}
        self.reservation: int | None = None
        """The ``ll``/``sc`` reservation of override-implemented instructions (LoongArch):
        the reserved address, or None."""
        self._packed = {p.name: p for p in record.packed}
        self._packed_rest = dict.fromkeys(self._packed, 0)
        self._plain: dict[str, tuple[int, int, bool]] = {}
        """Registers looked up so far (see :meth:`_place`)."""
        self.watch: set[int] = set()
        self.counting = True
        """Always exact here: the interpreter counts every instruction it runs anyway."""
        """Addresses whose executions are counted in ``exec_counts``."""
        self.exec_counts: Counter[int] = Counter()

    # ---- memory

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map zeroed pages."""
        self.mem.map(addr, size, perms)

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        """Change page permissions (cached code is re-checked at every fetch)."""
        self.mem.protect(addr, size, perms)

    def mem_read(self, addr: int, n: int) -> bytes:
        """Host read, ignoring permissions."""
        return self.mem.read(addr, n)

    def mem_write(self, addr: int, data: bytes) -> None:
        """Host write, ignoring permissions; drops cached code in the range and breaks an
        overlapping ``ll`` reservation."""
        self.mem.write(addr, data)
        self._invalidate(addr, len(data))

    def _guest_store(self, addr: int, size: int) -> None:
        if (addr >> PAGE_SHIFT) in self._code_pages or (
            (addr + size - 1) >> PAGE_SHIFT) in self._code_pages:
            self._invalidate(addr, size)
        if self.reservation is not None and addr <= self.reservation < addr + size:
            self.reservation = None

    def _invalidate(self, addr: int, size: int) -> None:
        """Drop cached translations that overlap ``[addr, addr + size)``."""
        if self.reservation is not None and addr <= self.reservation < addr + size:
            self.reservation = None
        if size <= _SMALL_WRITE:
            # An instruction overlapping the range starts at most MAX_INSN - 1 bytes before.
            for pc in range(addr - MAX_INSN + 1, addr + size):
                insn = self._cache.get(pc)
                if insn is not None and addr < pc + insn.length:
                    self._drop(insn)
            return
        for page in page_range(addr - MAX_INSN, size + MAX_INSN):
            for pc in list(self._code_pages.get(page, ())):
                insn = self._cache.get(pc)
                if insn is not None and pc < addr + size and addr < pc + insn.length:
                    self._drop(insn)

    def _drop(self, insn: CompiledInsn) -> None:
        del self._cache[insn.pc]
        self._runs.pop(insn.pc, None)
        for page in page_range(insn.pc, insn.length):
            pcs = self._code_pages.get(page)
            if pcs is not None:
                pcs.discard(insn.pc)
                if not pcs:
                    del self._code_pages[page]

    # ---- registers

    def reg_read(self, name: str) -> int:
        """Read an architectural register, or any SLEIGH register by its Ghidra name."""
        where = self._plain.get(name)
        if where is None:
            packed = self._packed.get(name)
            if packed is not None:
                return packed.compose(self._read_flag_byte, self._packed_rest[name])
            where = self._place(name)
        return self.state.regs.read(where[0], where[1])

    def reg_write(self, name: str, value: int) -> None:
        """Write a register (modulo its width); a packed register of the ISA record (x86
        ``rflags``, aarch64 ``nzcv``) is spread over Ghidra's one-byte flag registers;
        writes to the hard-wired zero register are dropped."""
        where = self._plain.get(name)
        if where is None:
            packed = self._packed.get(name)
            if packed is not None:
                self._packed_rest[name] = packed.spread(value, self._write_flag_byte)
                return
            where = self._place(name)
        if where[2]:
            self.state.regs.write(where[0], where[1], value)

    def _place(self, name: str) -> tuple[int, int, bool]:
        """Where register ``name`` (not a packed one) lives: offset, size and whether it
        may be written (not the hard-wired zero register); remembered by name."""
        reg = self._lookup(name)
        zero = self._compiler.zero_vn
        where = self._plain[name] = (reg.offset, reg.size, zero is None or reg != zero)
        return where

    def reg_read_many(self, names: Sequence[str]) -> list[int]:
        """Read several registers."""
        return [self.reg_read(n) for n in names]

    def reg_write_many(self, items: Sequence[tuple[str, int]]) -> None:
        """Write several registers."""
        for name, value in items:
            self.reg_write(name, value)

    def register_names(self) -> tuple[str, ...]:
        """The architectural register names (any SLEIGH name is accepted as well)."""
        return (*self.regmap, *self._packed)

    def save_context(self) -> object:
        """Snapshot every register (the whole SLEIGH register space) and the reservation."""
        return (self.state.regs.snapshot(), dict(self._packed_rest), self.reservation)

    def restore_context(self, ctx: object) -> None:
        """Restore a snapshot taken by :meth:`save_context`."""
        assert isinstance(ctx, tuple) and len(ctx) == 3
        chunks, rest, self.reservation = ctx
        self._packed_rest = dict(rest)
        self.state.regs.load(chunks)

    def _lookup(self, name: str) -> Vn:
        reg = self.regmap.get(name)
        if reg is not None:
            return reg
        for cand in (name, name.upper(), name.lower()):
            if cand in self._sleigh_regs:
                return vn(self._sleigh_regs[cand])
        raise KeyError(f"{self.isa} has no register {name!r}")

    def _read_flag_byte(self, sleigh_name: str) -> int:
        return self.state.regs.read(vn(self._sleigh_regs[sleigh_name]).offset, 1)

    def _write_flag_byte(self, sleigh_name: str, value: int) -> None:
        self.state.regs.write(vn(self._sleigh_regs[sleigh_name]).offset, 1, value)

    # ---- translation

    def _translate(self, pc: int) -> CompiledInsn:
        """Fetch, translate and compile the instruction at ``pc`` (raises :class:`Trap`)."""
        code = self.mem.fetch(pc)
        override = self.record.override
        if override is not None and len(code) >= 4:
            insn = self._replaced(pc, override(self, int.from_bytes(code[:4], "little")))
            if insn is not None:
                return self._remember(insn)
        shared = self._shared(pc, code)
        if shared.generated or self.warm_up <= 0:
            return self._remember(shared.bind(self.state))
        insn = shared.generic(self.state)
        insn.run = self._warming(shared, insn, insn.run)
        return self._remember(insn)

    def _warming(self, shared: Translation, insn: CompiledInsn, generic: InsnFn) -> InsnFn:
        """Return ``generic`` counting executions: the ``warm_up``-th one first replaces the
        instruction's ``run`` with its fast path (or plain ``generic`` when it has none)."""
        left = self.warm_up

        def run(st: State) -> int:
            nonlocal left
            left -= 1
            if left == 0:
                self._heat(shared, insn, generic)
            return generic(st)

        return run

    def _heat(self, shared: Translation, insn: CompiledInsn, generic: InsnFn) -> None:
        fast = shared.fast_code()
        insn.run, insn.fast = (generic, False) if fast is None else (fast.bind(self.state), True)
        if self._cache.get(insn.pc) is insn and insn.pc in self._runs:
            self._runs[insn.pc] = insn.run

    def _shared(self, pc: int, code: bytes) -> Translation:
        """The translation of the instruction in ``code`` at ``pc`` from the shared cache,
        made and remembered there when missing."""
        key = (self.isa, self._fast, pc)
        known = _TRANSLATIONS.get(key)
        if known is not None:
            for t in known:
                if code.startswith(t.code):
                    return t
        made = self._compile(pc, code)
        if known is None:
            if len(_TRANSLATIONS) >= _MAX_TRANSLATIONS:
                _TRANSLATIONS.clear()
            known = _TRANSLATIONS[key] = []
        known.insert(0, made)
        del known[_PER_ADDRESS:]
        return made

    def _compile(self, pc: int, code: bytes) -> Translation:
        """Translate and compile the instruction in ``code`` at ``pc`` (raises
        :class:`Trap` when SLEIGH cannot decode it)."""
        try:
            tx = self.ctx.translate(code, base_address=pc, max_instructions=1)
            dx = self.ctx.disassemble(code, base_address=pc, max_instructions=1)
        except (pypcode.BadDataError, pypcode.UnimplError) as e:
            why = "truncated by a non-executable page" if len(code) < MAX_INSN else str(e)
            raise Trap(StopKind.FAULT, detail=(
                f"undecodable instruction at {pc:#x} (bytes {code.hex()}): {why}")) from e
        first = dx.instructions[0]
        mnemonic = f"{first.mnem} {first.body}".strip()
        return self._compiler.translation(pc, code[: int(first.length)], mnemonic, tx)

    @staticmethod
    def _replaced(pc: int, replacement: Replacement | None) -> CompiledInsn | None:
        """Compile an instruction whose P-code the ISA record replaces (a 32-bit word)."""
        if replacement is None:
            return None
        mnemonic, effect = replacement
        nxt = (pc + 4) & bits.mask(64)

        def run(st: State) -> int:
            effect()
            return nxt

        return CompiledInsn(pc, 4, mnemonic, run)

    def _remember(self, insn: CompiledInsn) -> CompiledInsn:
        self._cache[insn.pc] = insn
        for page in page_range(insn.pc, insn.length):
            self._code_pages.setdefault(page, set()).add(insn.pc)
        return insn

    # ---- execution

    def run(self, pc: int, stop_at: frozenset[int], max_steps: int) -> Stop:
        """Execute from ``pc`` until a stop (STOP_AT is checked before every instruction,
        the first included).  An instruction that traps counts as executed, as with
        unicorn; one that cannot be fetched or decoded does not."""
        steps = 0
        st = self.state
        if self._runs_epoch != self.mem.epoch:  # the page map cannot change during a run
            self._runs.clear()
            self._runs_epoch = self.mem.epoch
        runs = self._runs.get
        watch = self.watch
        try:
            while True:
                if pc in stop_at:
                    return self._stop(StopKind.STOP_AT, pc, steps)
                if steps >= max_steps:
                    return self._stop(StopKind.STEP_LIMIT, pc, steps)
                run = runs(pc)
                if run is None:
                    run = self._fetch(pc)
                steps += 1
                if watch and pc in watch:
                    self.exec_counts[pc] += 1
                pc = run(st)
        except Trap as t:
            self.reservation = None
            return self._stop(t.kind, pc, steps, t.code, t.detail, t.fault_addr)

    def _fetch(self, pc: int) -> InsnFn:
        """The ``run`` of the instruction at ``pc``: the cached one if its bytes are still
        executable, else a new translation's (which raises :class:`Trap` when ``pc``
        cannot be executed)."""
        insn = self._cache.get(pc)
        if insn is None or not self.mem.executable(pc, insn.length):
            insn = self._translate(pc)
        self._runs[pc] = insn.run
        return insn.run

    def _stop(self, kind: StopKind, pc: int, steps: int, code: int = 0, detail: str = "",
              fault_addr: int | None = None) -> Stop:
        self.reg_write(self.record.pc, pc)
        return Stop(kind, pc, steps, code, detail, fault_addr)
