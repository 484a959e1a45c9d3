"""Return-address hijacking is invisible to the caller: the trampoline, the entry hijack and
the instance stack.

Three obligations per ISA:

- ``trampoline``: for every register state and memory, returning into the trampoline (the
  actual bytes kprobe_ref writes, lifted through pypcode: their P-code must only trap) and
  then the host side (find the instance by frame, ``rethook_return``) leaves every ``pt_regs``
  register, the PC and all memory at and above the stack pointer exactly as the unprobed
  return does, and continues at the saved return address.  Precondition: the stack does not
  wrap around the top of the address space.
- ``entry-hijack``: ``rethook_prepare`` returns the real return address and the frame, and
  changes nothing but the return-address location (the link register, or on x86_64 the
  quadword at ``[rsp]``).
- ``instance-stack``: every well-nested sequence of calls and returns of depth up to 8, with
  one or two kretprobes on the function and pools of 1 to 3 instances, and sequences with a
  non-local exit (the stack pointer moves past saved frames), run through the engine's own
  entry handler and trampoline handler on a minimal host: each return lands at its own
  return address, each return handler sees its own instance's data, exactly the calls that
  found the pool empty are counted in ``nmissed``, and skipped instances are dropped without
  misrouting a later return.  This one is a proof by exhaustion of a finite space.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import pypcode
import z3

from kprobe_ref import bits
from kprobe_ref.arch import ArchOps, get_arch
from kprobe_ref.arch.base import NO_REACH, SlotReach
from kprobe_ref.kretprobe import Kretprobe, RethookTable, RetprobeInstance, _entry_handler
from kprobe_ref.manager import ProbeManager, kprobe_handler_from_break
from kprobe_ref.models.state import load, store, symbolic_memory
from kprobe_ref.probe import Kprobe
from kprobe_ref.proofs.core import Obligation, Result, prove, timed
from kprobe_ref.proofs.symstate import SymState, initial_state
from kprobe_ref.ptregs import PtRegs

__all__ = ["LINK", "obligations"]

LINK = {"x86_64": None, "aarch64": "x30", "riscv64": "ra", "loongarch64": "ra"}
"""The ``pt_regs`` name of the register a call links through (x86_64: the stack)."""
SIM_REGS = {
    "x86_64": ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10",
               "r11", "r12", "r13", "r14", "r15", "rflags"),
    "aarch64": (*(f"x{i}" for i in range(31)), "sp"),
    "riscv64": tuple(f"x{i}" for i in range(1, 32)),
    "loongarch64": tuple(f"r{i}" for i in range(1, 32)),
}
"""The register names each ISA's rules use in a ``SimState``."""
PCODE_LANG = {"x86_64": "x86:LE:64:default", "aarch64": "AARCH64:LE:64:v8A",
              "riscv64": "RISCV:LE:64:RV64GC", "loongarch64": "Loongarch:LE:64:lp64d"}
TRAMPOLINE_AT = 0x7000_0000
FUNCTION_AT = 0x40_0000


# -- the trampoline ------------------------------------------------------------------------------


_TRANSFERS = frozenset({"CALL", "CALLIND", "BRANCH", "BRANCHIND", "RETURN"})


def _trap_output_ok(op: pypcode.PcodeOp) -> bool:
    out = op.output
    if out is None:
        return True
    space = out.space.name
    return bool(space == "unique" or (space == "register" and out.getRegisterName() == "pc"))


def trampoline_only_traps(isa: str, code: bytes) -> bool:
    """Lift the trampoline's bytes with pypcode: its first instruction's P-code must be a
    trap (a CALLOTHER whose result is at most a temporary or the PC: where the exception
    goes) and the transfer of control into it; nothing may write a register or memory."""
    ctx = pypcode.Context(PCODE_LANG[isa])
    tx = ctx.translate(code, TRAMPOLINE_AT, max_instructions=1)
    ops = [op for op in tx.ops if op.opcode != pypcode.OpCode.IMARK]
    traps = [op for op in ops if op.opcode == pypcode.OpCode.CALLOTHER]
    others = [op for op in ops if op.opcode != pypcode.OpCode.CALLOTHER]
    return (bool(traps) and all(_trap_output_ok(op) for op in traps)
            and all(op.opcode.name in _TRANSFERS for op in others))


def _symbolic_regs(arch: ArchOps) -> PtRegs:
    regs = arch.regs_class()
    for name in regs.names():
        value = z3.BitVec(f"r_{name}", 64)
        if name.startswith("regs["):
            regs.regs[int(name[5:-1])] = value
        else:
            regs.__dict__[name] = value
    if regs.ZERO is not None and regs.ZERO in regs.ALIASES:
        regs.set(regs.ZERO, 0)
    return regs


def _ret(isa: str, regs: PtRegs, mem: z3.ArrayRef) -> None:
    """The ISA's plain return (x86 ``ret``, aarch64 ``ret``, riscv ``jalr x0, 0(ra)``,
    loongarch ``jirl r0, ra, 0``), from the manuals."""
    link = LINK[isa]
    if link is None:
        sp = regs.sp
        regs.pc = load(mem, sp, 8)
        regs.sp = bits.add(sp, 8)
    elif isa == "riscv64":
        regs.pc = bits.and_(regs.get(link), ~1 & ((1 << 64) - 1))
    else:
        regs.pc = regs.get(link)


def _frame_regs(regs: PtRegs) -> list[tuple[str, object]]:
    return [(n, regs.get(n) if not n.startswith("regs[") else regs.regs[int(n[5:-1])])
            for n in regs.names()]


def trampoline_claim(isa: str, arch: ArchOps | None = None) -> z3.BoolRef:
    """The trampoline obligation's claim (``arch`` may be a mutated copy for tests)."""
    arch = arch or get_arch(isa)
    trampoline = z3.BitVec("trampoline", 64)
    mem = symbolic_memory()
    unprobed = _symbolic_regs(arch)
    probed = unprobed.copy()
    link = LINK[isa]
    if link is None:
        real = load(mem, unprobed.sp, 8)
        probed_mem = store(mem, unprobed.sp, 8, trampoline)
    else:
        real = unprobed.get(link)
        probed.set(link, trampoline)
        probed_mem = mem
    frame = unprobed.sp
    _ret(isa, unprobed, mem)
    _ret(isa, probed, probed_mem)
    lands = probed.pc == trampoline
    probed.pc = arch.trap_pc(probed.pc)
    finds = arch.return_frame(probed) == frame
    arch.rethook_return(probed, real)
    a = z3.BitVec("a", 64)
    same_regs = z3.And(*[x == y for (_, x), (_, y) in
                         zip(_frame_regs(unprobed), _frame_regs(probed), strict=True)])
    same_mem = z3.ForAll([a], z3.Implies(z3.UGE(a, unprobed.sp),
                                         z3.Select(mem, a) == z3.Select(probed_mem, a)))
    no_wrap = z3.ULE(frame, z3.BitVecVal((1 << 64) - 64, 64))
    aligned = z3.Extract(1, 0, trampoline) == 0  # slots and trampolines are allocated aligned
    return z3.Implies(z3.And(no_wrap, aligned),
                      z3.And(lands, finds, same_regs, same_mem, probed.pc == unprobed.pc))


def _trampoline(isa: str) -> Result:
    arch = get_arch(isa)
    code = arch.trampoline(False)
    if not trampoline_only_traps(isa, code):
        return Result(False, 0.0, None, f"trampoline {code.hex()} does more than trap")
    return prove(trampoline_claim(isa), f"trampoline {code.hex()}: caller cannot tell")


# -- the entry hijack ----------------------------------------------------------------------------


def entry_claim(isa: str, arch: ArchOps | None = None) -> z3.BoolRef:
    """The entry-hijack obligation's claim."""
    arch = arch or get_arch(isa)
    start = initial_state(SIM_REGS[isa])
    state = SymState(start, None)
    trampoline = z3.BitVec("trampoline", 64)
    sp_name = "rsp" if isa == "x86_64" else {"aarch64": "sp", "riscv64": "x2",
                                               "loongarch64": "r3"}[isa]
    link_name = {"aarch64": "x30", "riscv64": "x1", "loongarch64": "r1"}.get(isa)
    real, frame = arch.rethook_prepare(state, trampoline)
    sp = start.regs[sp_name]
    if link_name is None:
        want_real = load(start.mem, sp, 8)
        want_mem = store(start.mem, sp, 8, trampoline)
    else:
        want_real = start.regs[link_name]
        want_mem = start.mem
    others = [state.regs[r] == start.regs[r] for r in SIM_REGS[isa] if r != link_name]
    link_ok = [state.regs[link_name] == trampoline] if link_name else []
    return z3.And(real == want_real, frame == sp, state.mem == want_mem, *others, *link_ok)


def _entry(isa: str) -> Result:
    return prove(entry_claim(isa), "rethook_prepare changes only the return address")


# -- the instance stack (exhaustive) ---------------------------------------------------------------


class MiniHost:
    """The smallest host the return-probe code needs: flat memory, one CPU, one task."""

    def __init__(self) -> None:
        self.mem: dict[int, int] = {}
        self.instances: list[RetprobeInstance] = []
        self._next = TRAMPOLINE_AT

    def read_memory(self, addr: int, size: int, pid: int | None) -> bytes:
        return bytes(self.mem.get(addr + i, 0) for i in range(size))

    def write_memory(self, addr: int, data: bytes, pid: int | None) -> None:
        for i, b in enumerate(data):
            self.mem[addr + i] = b

    def set_writeable_for_address(self, addr: int, size: int, pid: int | None,
                                  action: Callable[[], None]) -> None:
        action()

    def is_executable(self, addr: int, size: int, pid: int | None) -> bool:
        return True

    def probe_forbidden(self, addr: int, pid: int | None) -> str | None:
        return None

    def within_kprobe_blacklist(self, addr: int) -> str | None:
        return None

    def function_containing(self, addr: int, pid: int | None) -> tuple[int, int] | None:
        return None

    def lookup_symbol(self, name: str, pid: int | None) -> list[int]:
        return []

    def alloc_kernel_exec_memory(self, near: int, size: int, reach: SlotReach = NO_REACH) -> int:
        self._next += 0x100
        return self._next

    def alloc_user_exec_memory(self, pid: int, near: int, size: int,
                               reach: SlotReach = NO_REACH) -> int:
        return self.alloc_kernel_exec_memory(near, size, reach)

    def free_user_exec_memory(self, pid: int, addr: int) -> None:
        return None

    def exec_memory_in_use(self, addr: int, size: int, pid: int | None) -> bool:
        return False

    def read_extra_register(self, name: str) -> int:
        raise KeyError(name)

    def write_extra_register(self, name: str, value: int) -> None:
        raise KeyError(name)

    def free_kernel_exec_memory(self, addr: int) -> None:
        return None

    def current_cpu(self) -> int:
        return 0

    def current_task(self) -> int:
        return 0

    def insert_kretprobe_instance_to_task(self, instance: RetprobeInstance) -> None:
        self.instances.append(instance)

    def pop_kretprobe_instance_from_task(self) -> RetprobeInstance | None:
        return self.instances.pop() if self.instances else None

    def task_kretprobe_instances(self) -> list[RetprobeInstance]:
        return list(self.instances)


@dataclass
class _Frame:
    ret: int
    sp: int
    hooks: list[tuple[Kretprobe, int]] = field(default_factory=list)


class _Run:
    """One sequence, executed on the engine and checked against a list model."""

    def __init__(self, isa: str, pools: tuple[int, ...]) -> None:
        self.isa, self.arch = isa, get_arch(isa)
        self.host = MiniHost()
        self.m = ProbeManager(self.arch, self.host)
        self.m.rethooks = RethookTable(self.m)
        self.regs = self.arch.regs_class()
        self.regs.sp = 0x7FF0_0000
        self.next_id = 0
        self.fired: list[tuple[int, int]] = []
        self.rps = [self._kretprobe(i, n) for i, n in enumerate(pools)]
        self.free = {id(rp): rp.maxactive for rp in self.rps}
        self.missed = {id(rp): 0 for rp in self.rps}
        self.model: list[tuple[Kretprobe, int, bool]] = []  # the task stack: rp, id, skipped
        self.frames: list[_Frame] = []

    def _kretprobe(self, i: int, pool: int) -> Kretprobe:
        def entry(data: dict[str, int], _r: PtRegs) -> None:
            data["id"] = self.next_id
            self.next_id += 1

        def ret(data: dict[str, int], _r: PtRegs) -> None:
            self.fired.append((i, data["id"]))

        rp = Kretprobe(FUNCTION_AT, entry, ret, {}, pool, None)
        rp.free = [RetprobeInstance(rp) for _ in range(pool)]
        rp.kprobe = Kprobe(FUNCTION_AT, _entry_handler(self.m, rp), None, None, None, None)
        rp.registered = True
        return rp

    def _push(self, value: int) -> None:
        self.regs.sp -= 16
        self.host.write_memory(self.regs.sp, value.to_bytes(8, "little"), None)

    def _pop(self) -> int:
        value = int.from_bytes(self.host.read_memory(self.regs.sp, 8, None), "little")
        self.regs.sp += 16
        return value

    def call(self) -> None:
        ret = 0x50_0000 + 0x10 * len(self.frames)
        link = LINK[self.isa]
        if link is None:
            self.regs.sp -= 8
            self.host.write_memory(self.regs.sp, ret.to_bytes(8, "little"), None)
        else:
            self.regs.set(link, ret)
        frame = _Frame(ret, self.regs.sp)
        for i, rp in enumerate(self.rps):
            assert rp.kprobe is not None and rp.kprobe.pre_handler is not None
            first = self.next_id
            rp.kprobe.pre_handler(None, self.regs)
            if self.free[id(rp)]:
                self.free[id(rp)] -= 1
                frame.hooks.append((rp, first))
                self.model.append((rp, first, False))
            else:
                self.missed[id(rp)] += 1
            assert rp.nmissed == self.missed[id(rp)], "nmissed"
            del i
        if link is not None:
            self._push(self.regs.get(link))  # the callee saves its link register
        self.frames.append(frame)

    def ret(self) -> None:
        frame = self.frames.pop()
        expected = self._model_return(frame)
        fired = len(self.fired)
        link = LINK[self.isa]
        if link is None:
            pc = int.from_bytes(self.host.read_memory(self.regs.sp, 8, None), "little")
            self.regs.sp += 8
        else:
            pc = self._pop()
            self.regs.set(link, pc)
        assert self.m.rethooks is not None
        if pc == self.m.rethooks.trampoline:
            self.regs.pc = self.arch.trap_pc(pc)
            assert kprobe_handler_from_break(self.m, self.regs), "trampoline not handled"
            pc = self.regs.pc
        assert pc == frame.ret, "misrouted return"
        if link is not None:
            assert self.regs.get(link) == frame.ret, "link register"
        assert self.fired[fired:] == expected, "wrong return handlers"

    def _model_return(self, frame: _Frame) -> list[tuple[int, int]]:
        if not frame.hooks:
            return []
        while self.model and self.model[-1][2]:
            rp, _, _ = self.model.pop()
            self.free[id(rp)] += 1
        out = []
        for rp, ident in reversed(frame.hooks):
            top = self.model.pop()
            assert top[:2] == (rp, ident)
            out.append((self.rps.index(rp), ident))
            self.free[id(rp)] += 1
        return out

    def longjmp(self, keep: int) -> None:
        for frame in self.frames[keep:]:
            hooked = {(id(rp), ident) for rp, ident in frame.hooks}
            self.model = [(rp, i, s or (id(rp), i) in hooked) for rp, i, s in self.model]
        del self.frames[keep:]
        self.regs.sp = self.frames[-1].sp - (0 if LINK[self.isa] is None else 16)


def dyck_words(max_pairs: int) -> Iterator[str]:
    """Every well-nested call/return word (``c``/``r``) with 1..max_pairs pairs."""
    def grow(word: str, opened: int, depth: int, pairs: int) -> Iterator[str]:
        if opened == pairs and depth == 0:
            yield word
            return
        if opened < pairs:
            yield from grow(word + "c", opened + 1, depth + 1, pairs)
        if depth > 0:
            yield from grow(word + "r", opened, depth - 1, pairs)

    for n in range(1, max_pairs + 1):
        yield from grow("", 0, 0, n)


def _sequences() -> Iterator[str]:
    """Call/return words up to depth 8, and shorter ones with one non-local exit ``j<k>``
    (back to ``k`` live frames) inserted wherever at least two frames are live."""
    yield from dyck_words(8)
    for word in dyck_words(5):
        depth = 0
        for pos, ch in enumerate(word):
            depth += 1 if ch == "c" else -1
            for keep in range(1, depth):
                head = word[: pos + 1] + f"j{keep}"
                yield head + "r" * keep
                yield head + "cr" + "r" * keep
                yield head + "cc" + f"j{keep}" + "r" * keep


def _execute(isa: str, word: str, pools: tuple[int, ...]) -> None:
    run = _Run(isa, pools)
    run.call()  # the outermost call
    i = 0
    while i < len(word):
        ch = word[i]
        if ch == "c":
            run.call()
        elif ch == "r":
            run.ret()
        else:
            j = i + 1
            while j < len(word) and word[j].isdigit():
                j += 1
            run.longjmp(1 + int(word[i + 1 : j]))
            i = j - 1
        i += 1
    run.ret()
    assert not run.frames


def instance_stack(isa: str) -> Result:
    """Run every sequence under every pool configuration; the first failure is reported."""
    start = time.perf_counter()
    configs = [(1,), (2,), (3,), (1, 1), (2, 1), (1, 3)]
    count = 0
    for word, pools in itertools.product(_sequences(), configs):
        try:
            _execute(isa, word, pools)
        except AssertionError as exc:
            return Result(False, time.perf_counter() - start,
                          {"sequence": word, "pools": str(pools)}, f"{exc}")
        count += 1
    return Result(True, time.perf_counter() - start, None,
                  f"{count} call/return sequences up to depth 9, pools {configs}")


def obligations(isas: list[str] | None = None) -> list[Obligation]:
    """The rethook obligations of the given ISAs (default: every registered one)."""
    from kprobe_ref.arch import ARCHES

    out = []
    for isa in isas or sorted(ARCHES):
        out.append(Obligation(isa, "trampoline", "rethook", timed(partial(_trampoline, isa))))
        out.append(Obligation(isa, "entry-hijack", "rethook", timed(partial(_entry, isa))))
        out.append(Obligation(isa, "instance-stack", "rethook",
                              timed(partial(instance_stack, isa))))
    return out
