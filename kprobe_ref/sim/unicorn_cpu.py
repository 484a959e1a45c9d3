"""The unicorn CPU backend (x86_64, aarch64, riscv64).

Implements :class:`~kprobe_ref.sim.cpu.Cpu`.  unicorn cannot start emulation from inside its
own hooks, so every event the machine must handle stops the CPU and is returned as a
:class:`~kprobe_ref.sim.cpu.Stop`:

- x86_64 ``int3`` arrives as interrupt 3 with RIP one past it; aarch64 ``brk`` as interrupt 7
  with PC at the ``brk`` and no syndrome, so the immediate is decoded from memory; riscv
  ``ebreak``/``c.ebreak`` never reach the interrupt hook: ``emu_start`` fails (unicorn 2.1:
  ``UC_ERR_INSN_INVALID``) with PC at the breakpoint, which this backend recognises by its
  encoding; riscv ``ecall`` arrives as interrupt 8 with PC one past the ``ecall``.
- A code hook checks ``stop_at`` and counts steps before each instruction, and counts
  executions of watched addresses (how tests learn how often an instruction runs unprobed).
- After the host writes code, cached translations of the range are discarded
  (``ctl_remove_cache``).
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Sequence
from typing import Any

import unicorn
from unicorn import arm64_const as a64
from unicorn import riscv_const as rv
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import HOOK_CODE_CFUNC, HOOK_INTR_CFUNC, uc_hook_h, uclib

from kprobe_ref.sim.cpu import Perms, Stop, StopKind

__all__ = ["UnicornCpu"]

_PAGE = 0x1000
_NEVER = (1 << 64) - 1

_X86_REGS: dict[str, int] = {
    **{n: getattr(x86, f"UC_X86_REG_{n.upper()}") for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags", "fs_base", "gs_base", "mxcsr")},
    **{f"xmm{i}": getattr(x86, f"UC_X86_REG_XMM{i}") for i in range(16)},
}  # fmt: skip
_A64_REGS: dict[str, int] = {
    **{f"x{i}": getattr(a64, f"UC_ARM64_REG_X{i}") for i in range(29)},
    "x29": a64.UC_ARM64_REG_X29, "x30": a64.UC_ARM64_REG_X30, "sp": a64.UC_ARM64_REG_SP,
    "pc": a64.UC_ARM64_REG_PC, "nzcv": a64.UC_ARM64_REG_NZCV, "fpcr": a64.UC_ARM64_REG_FPCR,
    "fpsr": a64.UC_ARM64_REG_FPSR, "tpidr_el0": a64.UC_ARM64_REG_TPIDR_EL0,
    **{f"q{i}": getattr(a64, f"UC_ARM64_REG_Q{i}") for i in range(32)},
}  # fmt: skip
_RV_REGS: dict[str, int] = {
    **{f"x{i}": getattr(rv, f"UC_RISCV_REG_X{i}") for i in range(1, 32)},
    "pc": rv.UC_RISCV_REG_PC,
    **{f"f{i}": getattr(rv, f"UC_RISCV_REG_F{i}") for i in range(32)},
    "fcsr": rv.UC_RISCV_REG_FCSR,
}  # fmt: skip

_CONFIG: dict[str, tuple[int, int, dict[str, int], str]] = {
    "x86_64": (unicorn.UC_ARCH_X86, unicorn.UC_MODE_64, _X86_REGS, "rip"),
    "aarch64": (unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM, _A64_REGS, "pc"),
    "riscv64": (unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64, _RV_REGS, "pc"),
}


def _prot(perms: Perms) -> int:
    p: int = unicorn.UC_PROT_NONE
    if "r" in perms:
        p |= unicorn.UC_PROT_READ
    if "w" in perms:
        p |= unicorn.UC_PROT_WRITE
    if "x" in perms:
        p |= unicorn.UC_PROT_EXEC
    return p


_RV_BREAK_ERRORS = (unicorn.UC_ERR_EXCEPTION, unicorn.UC_ERR_INSN_INVALID)
"""The errors riscv ``ebreak``/``c.ebreak`` end ``emu_start`` with (unicorn 2.1 reports
``UC_ERR_INSN_INVALID`` with PC at the breakpoint)."""
_RV_MSTATUS_FS = 0b11 << 13
"""mstatus.FS = Dirty: the F and D extensions are usable (they trap while FS = Off)."""


def riscv_break_length(word: int) -> int:
    """2 for ``c.ebreak``, 4 for ``ebreak``, 0 for anything else."""
    if word & 0xFFFF == 0x9002:
        return 2
    if word == 0x0010_0073:
        return 4
    return 0


class UnicornCpu:
    """One unicorn CPU and its address space."""

    def __init__(self, isa: str) -> None:
        if isa not in _CONFIG:
            raise ValueError(f"unicorn backend does not run {isa}")
        arch, mode, regs, pc_name = _CONFIG[isa]
        self.isa = isa
        self.uc = unicorn.Uc(arch, mode)
        if isa == "x86_64":
            # Virtual TLB mode: addresses translate one to one, without the emulated 4-level
            # page walk that limits a plain x86_64 unicorn to the low 2**47 bytes; code runs
            # in the kernel half (0xffffffff81000000) with page permissions still enforced.
            self.uc.ctl_set_tlb_mode(unicorn.unicorn_const.UC_TLB_VIRTUAL)
        if isa == "aarch64":
            self.uc.ctl_set_cpu_model(unicorn.arm64_const.UC_CPU_ARM64_MAX)
            self._enable_fp()
        if isa == "riscv64":
            mstatus = self.uc.reg_read(rv.UC_RISCV_REG_MSTATUS)
            self.uc.reg_write(rv.UC_RISCV_REG_MSTATUS, mstatus | _RV_MSTATUS_FS)
        self._regs = regs
        self._pc = regs[pc_name]
        self._pc_name = pc_name
        self.watch: set[int] = set()
        self.exec_counts: Counter[int] = Counter()
        self._stop: Stop | None = None
        self._stop_at: frozenset[int] = frozenset()
        self._max = 0
        self._steps = 0
        self._fault_addr: int | None = None
        self._batches: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        self._uch = self.uc._uch
        self._word = ctypes.c_uint64()
        self._word_ref = ctypes.byref(self._word)
        self._peek_buf = ctypes.create_string_buffer(8)
        self._wide = frozenset(n for n in regs if n.startswith(("xmm", "q")))
        """Registers wider than 64 bits, read and written through unicorn's own wrapper."""
        self._code_pages: set[int] = set()
        """Pages ever mapped executable: a host write there discards cached translations."""
        self._hook_error: BaseException | None = None
        self._callbacks: list[Any] = []
        self.counting = True
        """Count every instruction (exact ``steps`` and step limit, through a hook before
        each instruction).  Off, the CPU runs natively between the addresses it must stop
        at (ranged hooks on ``stop_at`` only; a run with ``watch`` addresses counts): the
        step limit is unicorn's instruction count for each run, ``Stop.steps`` is 1 for a
        run that ends at a trap or fault, and the machine's instruction total is not
        kept."""
        self._code_cb = HOOK_CODE_CFUNC(self._code_hook)
        self._point_cb = HOOK_CODE_CFUNC(self._point_hook)
        self._global: int | None = self._raw_hook(unicorn.UC_HOOK_CODE, self._code_cb)
        self._points: set[int] = set()
        """Addresses with a ranged code hook (for runs that do not count)."""
        self._raw_hook(unicorn.UC_HOOK_INTR, HOOK_INTR_CFUNC(self._intr_hook))
        self.uc.hook_add(unicorn.UC_HOOK_MEM_INVALID, self._on_mem_invalid)

    def _enable_fp(self) -> None:
        """Let EL0/EL1 code use FP/SIMD (CPACR_EL1.FPEN = 0b11)."""
        cpacr = self.uc.reg_read(a64.UC_ARM64_REG_CPACR_EL1)
        self.uc.reg_write(a64.UC_ARM64_REG_CPACR_EL1, cpacr | (3 << 20))

    # -- memory ------------------------------------------------------------------------------
    def map(self, addr: int, size: int, perms: Perms) -> None:
        self.uc.mem_map(addr, size, _prot(perms))
        self._note_code(addr, size, perms)

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        self.uc.mem_protect(addr, size, _prot(perms))
        self._note_code(addr, size, perms)

    def _note_code(self, addr: int, size: int, perms: Perms) -> None:
        if "x" in perms:
            self._code_pages.update(range(addr & ~(_PAGE - 1), addr + size, _PAGE))

    def mem_read(self, addr: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(addr, n))

    def mem_write(self, addr: int, data: bytes) -> None:
        """Write memory; translations cached for the range are discarded when it lies on a
        page that was ever executable (data writes, such as a call's return address on the
        stack, need not pay for it)."""
        self.uc.mem_write(addr, data)
        first, last = addr & ~(_PAGE - 1), (addr + max(len(data), 1) - 1) & ~(_PAGE - 1)
        if first in self._code_pages or last in self._code_pages or (
                last - first > _PAGE and any(p in self._code_pages
                                             for p in range(first, last, _PAGE))):
            self.uc.ctl_remove_cache(addr, addr + max(len(data), 1))

    # -- registers -----------------------------------------------------------------------------
    def reg_read(self, name: str) -> int:
        if name in self._wide:
            value = self.uc.reg_read(self._regs[name])
            assert isinstance(value, int)
            return value
        self._word.value = 0  # a 32-bit register (mxcsr) fills only the low half
        status = uclib.uc_reg_read(self._uch, self._regs[name], self._word_ref)
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        return self._word.value

    def reg_write(self, name: str, value: int) -> None:
        if name in self._wide:
            self.uc.reg_write(self._regs[name], value & ((1 << 128) - 1))
            return
        self._word.value = value & _NEVER
        status = uclib.uc_reg_write(self._uch, self._regs[name], self._word_ref)
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)

    def reg_read_many(self, names: Sequence[str]) -> list[int]:
        ids, vals, ptrs = self._batch(tuple(names))
        ctypes.memset(vals, 0, ctypes.sizeof(vals))
        status = uclib.uc_reg_read_batch(self.uc._uch, ids, ptrs, len(ids))
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        return list(vals)

    def reg_write_many(self, items: Sequence[tuple[str, int]]) -> None:
        names = tuple(n for n, _ in items)
        ids, vals, ptrs = self._batch(names)
        for i, (_, value) in enumerate(items):
            vals[i] = value & _NEVER
        status = uclib.uc_reg_write_batch(self.uc._uch, ids, ptrs, len(ids))
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)

    def _batch(self, names: tuple[str, ...]) -> tuple[Any, Any, Any]:
        """Register ids, a 64-bit value array and pointers into it for ``names`` (built
        once per list of names)."""
        got = self._batches.get(names)
        if got is None:
            n = len(names)
            ids = (ctypes.c_int * n)(*(self._regs[x] for x in names))
            vals = (ctypes.c_uint64 * n)()
            base = ctypes.addressof(vals)
            ptrs = (ctypes.c_void_p * n)(*(base + 8 * i for i in range(n)))
            got = self._batches[names] = (ids, vals, ptrs)
        return got

    def register_names(self) -> tuple[str, ...]:
        """Every register name this backend knows."""
        return tuple(self._regs)

    def save_context(self) -> object:
        """Snapshot the whole CPU state (for a nested call from a handler)."""
        return self.uc.context_save()

    def restore_context(self, ctx: object) -> None:
        """Restore a snapshot taken by :meth:`save_context`."""
        self.uc.context_restore(ctx)

    # -- hooks -----------------------------------------------------------------------------------
    def _raw_hook(self, kind: int, callback: Any, begin: int = 1, end: int = 0) -> int:
        """Register a ctypes callback with unicorn directly (for ``[begin, end]``; every
        address when ``begin > end``) and return its handle.  The code hook runs before
        every instruction, so it skips the binding's two Python wrapper layers; its errors
        are caught here (a ctypes callback cannot raise) and re-raised by :meth:`run`."""
        handle = uc_hook_h()
        status = uclib.uc_hook_add(self._uch, ctypes.byref(handle), kind, callback, None,
                                   ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        if callback not in self._callbacks:
            self._callbacks.append(callback)  # unicorn keeps only the pointer
        return int(handle.value)

    def _set_counting(self, exact: bool) -> None:
        """Install or remove the every-instruction hook (a run with watched addresses
        counts exactly whatever :attr:`counting` says: a hook on each of them would cost
        more than the one hook)."""
        if exact and self._global is None:
            self._global = self._raw_hook(unicorn.UC_HOOK_CODE, self._code_cb)
        elif not exact and self._global is not None:
            status = uclib.uc_hook_del(self._uch, uc_hook_h(self._global))
            if status != unicorn.UC_ERR_OK:
                raise unicorn.UcError(status)
            self._global = None

    def _point_hook(self, _uc: object, address: int, size: int, _data: object) -> None:
        """A ranged hook on one address of ``stop_at`` (runs that do not count; a counting
        run's hook before every instruction does this itself)."""
        try:
            if self._global is not None:
                return
            if self._stop is not None:
                uclib.uc_emu_stop(self._uch)
            elif address in self._stop_at:
                self._halt(StopKind.STOP_AT, address)
        except BaseException as exc:
            self._hook_failed(exc)

    def _code_hook(self, _uc: object, address: int, size: int, _data: object) -> None:
        try:
            self._on_code(self.uc, address, size, None)
        except BaseException as exc:
            self._hook_failed(exc)

    def _intr_hook(self, _uc: object, intno: int, _data: object) -> None:
        try:
            self._on_intr(self.uc, intno, None)
        except BaseException as exc:
            self._hook_failed(exc)

    def _hook_failed(self, exc: BaseException) -> None:
        if self._hook_error is None:
            self._hook_error = exc
        uclib.uc_emu_stop(self._uch)

    def _halt(self, kind: StopKind, pc: int, **kw: Any) -> None:
        if self._stop is None:
            self._stop = Stop(kind, pc, self._steps, **kw)
        uclib.uc_emu_stop(self._uch)

    def _on_code(self, uc: unicorn.Uc, address: int, size: int, _: object) -> None:
        if self._stop is not None:
            uclib.uc_emu_stop(self._uch)
            return
        if address in self._stop_at:
            self._halt(StopKind.STOP_AT, address)
            return
        if self._steps >= self._max:
            self._halt(StopKind.STEP_LIMIT, address)
            return
        self._steps += 1
        if address in self.watch:
            self.exec_counts[address] += 1

    def _on_intr(self, uc: unicorn.Uc, intno: int, _: object) -> None:
        pc = self.reg_read(self._pc_name)
        if self.isa == "x86_64" and intno == 3:
            self._halt(StopKind.BREAK, pc - 1, detail="int3")
        elif self.isa == "aarch64" and intno == 7:
            word = int.from_bytes(self._peek(pc, 4), "little")
            self._halt(StopKind.BREAK, pc, code=(word >> 5) & 0xFFFF, detail="brk")
        elif self.isa == "aarch64" and intno == 2:
            self._halt(StopKind.SYSCALL, pc - 4, detail="svc")
        elif self.isa == "riscv64" and intno == 8:
            self._halt(StopKind.SYSCALL, pc - 4, detail="ecall")  # PC is past the ecall
        else:
            self._halt(StopKind.FAULT, pc, detail=f"exception {intno}")

    def _on_mem_invalid(
        self, uc: unicorn.Uc, access: int, address: int, size: int, value: int, _: object
    ) -> bool:
        self._fault_addr = address
        return False

    # -- running ---------------------------------------------------------------------------------
    def run(self, pc: int, stop_at: frozenset[int], max_steps: int) -> Stop:
        self._stop, self._stop_at, self._max, self._steps = None, stop_at, max_steps, 0
        self._fault_addr = self._hook_error = self.uc._hook_exception = None
        exact = self.counting or bool(self.watch)
        if exact == (self._global is None):
            self._set_counting(exact)
        count = 0
        if not exact:
            for addr in stop_at - self._points:
                self._raw_hook(unicorn.UC_HOOK_CODE, self._point_cb, addr, addr)
                self._points.add(addr)
            count, self._steps = max(max_steps, 1), 1
        status = uclib.uc_emu_start(self._uch, pc, _NEVER, 0, count)
        failed = self._hook_error or self.uc._hook_exception
        if failed is not None:
            raise failed
        if status != unicorn.UC_ERR_OK:
            return self._error_stop(status)
        if self._stop is None and count:  # unicorn's instruction count ran out
            return Stop(StopKind.STEP_LIMIT, self.reg_read(self._pc_name), count)
        if self._stop is None:
            here = self.reg_read(self._pc_name)
            return Stop(StopKind.FAULT, here, self._steps, detail="emulation ended")
        return self._stop

    def _error_stop(self, status: int) -> Stop:
        """The stop for an ``emu_start`` that ended with error ``status``: a riscv
        breakpoint, or a fault."""
        if self._stop is not None:
            return self._stop
        here = self.reg_read(self._pc_name)
        if self.isa == "riscv64" and status in _RV_BREAK_ERRORS:
            word = int.from_bytes(self._peek(here, 4), "little")
            if riscv_break_length(word):
                return Stop(StopKind.BREAK, here, self._steps, detail="ebreak")
        return Stop(StopKind.FAULT, here, self._steps, detail=str(unicorn.UcError(status)),
                    fault_addr=self._fault_addr)

    def _peek(self, addr: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``addr`` read straight into a reused buffer (a 4-byte read
        that crosses into an unmapped page returns the first 2, zero-padded)."""
        buf = self._peek_buf
        if uclib.uc_mem_read(self._uch, addr, buf, n) == unicorn.UC_ERR_OK:
            return buf.raw[:n]
        if n > 2 and uclib.uc_mem_read(self._uch, addr, buf, 2) == unicorn.UC_ERR_OK:
            return buf.raw[:2] + b"\0\0"
        return b"\0" * n
