"""Return-address hijacking, driven call by call in the emulator (issue: rethook proofs and
state-machine tests).

Each ISA has a small function ``F`` whose body stops at ``decide``; from there the test
either calls ``F`` again (``call_site``), returns (``ret_site``), or performs a non-local
exit (moves the stack pointer past saved frames, like ``longjmp``).  One or two kretprobes
sit on ``F``'s entry with small pools, and are registered and unregistered mid-flight.  The
model is a plain list of frames (expected return address, stack pointer) and, per kretprobe,
the list of live instances it expects; after every return the PC, the stack pointer, the
callee-visible registers and the frame's stack words must be exactly as the unprobed return
leaves them, and exactly the right return handlers must have fired with their own data.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kprobe_ref import Kretprobe, KretprobeBuilder, PtRegs, register_kretprobe, unregister_kretprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.sim import Machine
from kprobe_ref.sim.elf import read_image
from kprobe_ref.sim.machine import RETURN_STOP, STACK_TOP

SOURCES = {
    "x86_64": """
F:  push %rbp
    mov %rsp, %rbp
decide: nop
call_site: call F
after_call: jmp decide
ret_site: pop %rbp
    ret
""",
    "aarch64": """
F:  stp x29, x30, [sp, #-16]!
    mov x29, sp
decide: nop
call_site: bl F
after_call: b decide
ret_site: ldp x29, x30, [sp], #16
    ret
""",
    "riscv64": """
.option norvc
F:  addi sp, sp, -16
    sd ra, 8(sp)
    sd s0, 0(sp)
    addi s0, sp, 16
decide: nop
call_site: jal ra, F
after_call: j decide
ret_site: ld ra, 8(sp)
    ld s0, 0(sp)
    addi sp, sp, 16
    ret
""",
    "loongarch64": """
F:  addi.d $sp, $sp, -16
    st.d $ra, $sp, 8
    st.d $fp, $sp, 0
    addi.d $fp, $sp, 16
decide: nop
call_site: bl F
after_call: b decide
ret_site: ld.d $ra, $sp, 8
    ld.d $fp, $sp, 0
    addi.d $sp, $sp, 16
    ret
""",
}
LABELS = ("F", "decide", "call_site", "after_call", "ret_site")
FP = {"x86_64": "rbp", "aarch64": "x29", "riscv64": "s0", "loongarch64": "fp"}
SCRATCH = {"x86_64": ("rax", "rdx", "rbx", "r12"), "aarch64": ("x0", "x1", "x19", "x20"),
           "riscv64": ("a0", "a1", "s1", "s2"), "loongarch64": ("a0", "a1", "s1", "s2")}
TEXT = 0x40_0000


@cache
def build(isa: str) -> tuple[bytes, dict[str, int]]:
    """Assemble ``F`` with ziglang; return its code and label addresses."""
    body = "".join(f".globl {lab}\n" for lab in LABELS) + SOURCES[isa]
    with TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "f.S", Path(tmp) / "f.elf"
        src.write_text(".text\n" + body)
        link = Path(tmp) / "l.ld"
        link.write_text(f"SECTIONS {{ . = {TEXT:#x}; .text : {{ *(.text) }} }}\n")
        subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target",
                        f"{isa}-freestanding-none", "-nostdlib", "-static", "-Wl,--entry=F",
                        "-T", str(link), str(src), "-o", str(out)], check=True,
                       capture_output=True)
        image = read_image(out, isa)
        seg = next(s for s in image.segments if "x" in s.perms)
        labels = {lab: image.symbols[lab] for lab in LABELS}
        return seg.data[: labels["ret_site"] - seg.vaddr + 32], labels


@dataclass
class Frame:
    ret: int
    sp: int
    fp: int
    instances: list[tuple[Kretprobe, int]] = field(default_factory=list)
    """(kretprobe, instance id) hooked on this call, in entry order."""


@dataclass
class Hook:
    """One entry of the model of the task's instance stack."""

    rp: Kretprobe
    ident: int
    skipped: bool = False


def _machine_for(isa: str) -> tuple[Machine, dict[str, int]]:
    code, labels = build(isa)
    m = Machine(isa)
    m.map(TEXT, 0x1000, "rx")
    m.write(TEXT, code)
    m.add_symbol("F", labels["F"], labels["ret_site"] + 16 - labels["F"])
    return m, labels


LINK = {"aarch64": "x30", "riscv64": "ra", "loongarch64": "ra"}


class RethookMachine(RuleBasedStateMachine):
    """Calls, returns, recursion, nested kretprobes, pool exhaustion, non-local exits and
    registration changes, against a list model."""

    isa = "x86_64"

    @initialize(pools=st.tuples(st.integers(1, 4), st.integers(1, 4)), two=st.booleans())
    def start(self, pools: tuple[int, int], two: bool) -> None:
        self.m, self.lab = _machine_for(self.isa)
        self.stops = frozenset({self.lab["decide"], RETURN_STOP})
        self.order: list[Kretprobe] = []
        self.free: dict[int, int] = {}
        self.missed: dict[int, int] = {}
        self.fired: list[tuple[int, int]] = []
        self.task: list[Hook] = []
        self.next_id = 0
        self.pools = pools
        for i in range(2 if two else 1):
            self._register(i)
        regs = self.m.arch.regs_class()
        sp = STACK_TOP - 0x1000
        if self.m.arch.link_register is None:
            sp -= 8
            self.m.write(sp, RETURN_STOP.to_bytes(8, "little"))
        else:
            regs.set(LINK[self.isa], RETURN_STOP)
        regs.sp = sp
        self.frames: list[Frame] = []
        self.m.set_regs(regs)
        self._enter(RETURN_STOP)

    # -- helpers ---------------------------------------------------------------------------
    def _register(self, i: int) -> None:
        def entry(data: dict[str, int], _regs: PtRegs) -> None:
            data["id"] = self.next_id
            self.next_id += 1

        def ret(data: dict[str, int], _regs: PtRegs) -> None:
            self.fired.append((id(rp), data["id"]))

        rp = register_kretprobe(self.m.manager, self.m.points, KretprobeBuilder()
                                .with_symbol_addr(self.lab["F"]).with_data({})
                                .with_entry_handler(entry).with_ret_handler(ret)
                                .with_maxactive(self.pools[i % 2]))
        self.order.append(rp)
        self.free[id(rp)] = self.pools[i % 2]
        self.missed[id(rp)] = 0

    def _enter(self, ret: int) -> None:
        """Run F from its entry (the CPU is at F) to ``decide``; model the hooks."""
        first = self.next_id
        pc = self.m.run(self.lab["F"], self.stops)
        assert pc == self.lab["decide"]
        hooked = []
        for rp in self.order:
            if self.free[id(rp)] > 0:
                self.free[id(rp)] -= 1
                hooked.append((rp, first + len(hooked)))
            else:
                self.missed[id(rp)] += 1
        assert self.next_id == first + len(hooked)
        self.task += [Hook(rp, ident) for rp, ident in hooked]
        now = self.m.regs()
        self.frames.append(Frame(ret, now.sp, now.get(FP[self.isa]), hooked))
        for rp in self.order:
            assert rp.nmissed == self.missed[id(rp)]

    def _model_return(self, frame: Frame) -> list[tuple[int, int]]:
        """What the trampoline does for ``frame``: drop skipped deeper instances, then pop
        the frame's own; returns the handler firings expected."""
        if not frame.instances:
            return []
        while self.task and self.task[-1].skipped:
            dropped = self.task.pop()
            if dropped.rp.registered:
                self.free[id(dropped.rp)] += 1
        expected = []
        for rp, ident in reversed(frame.instances):
            top = self.task.pop()
            assert (top.rp, top.ident) == (rp, ident)
            if rp.registered:
                expected.append((id(rp), ident))
                self.free[id(rp)] += 1
        return expected

    # -- rules -------------------------------------------------------------------------------
    @precondition(lambda self: len(self.frames) < 10)
    @rule()
    def call(self) -> None:
        pc = self.m.run(self.lab["call_site"], frozenset({self.lab["F"]}))
        assert pc == self.lab["F"]
        self._enter(self.lab["after_call"])

    @precondition(lambda self: len(self.frames) > 1)
    @rule(values=st.lists(st.integers(0, (1 << 64) - 1), min_size=4, max_size=4))
    def ret(self, values: list[int]) -> None:
        frame = self.frames.pop()
        caller = self.frames[-1]
        regs = self.m.regs()
        for name, v in zip(SCRATCH[self.isa], values, strict=True):
            regs.set(name, v)
        self.m.set_regs(regs)
        stack_words = self.m.read(caller.sp, 64)
        fired_before = len(self.fired)
        expected = self._model_return(frame)
        pc = self.m.run(self.lab["ret_site"], frozenset({frame.ret}))
        assert pc == frame.ret
        after = self.m.regs()
        for name, v in zip(SCRATCH[self.isa], values, strict=True):
            assert after.get(name) == v, name
        assert after.get(FP[self.isa]) == caller.fp
        assert self.m.read(caller.sp, 64) == stack_words
        if self.isa in LINK:
            assert after.get(LINK[self.isa]) == frame.ret
        assert self.fired[fired_before:] == expected
        assert self.m.run(pc, self.stops) == self.lab["decide"]
        assert self.m.regs().sp == caller.sp

    @precondition(lambda self: len(self.frames) > 2)
    @rule(depth=st.integers(1, 8))
    def longjmp(self, depth: int) -> None:
        """Abandon the innermost frames: continue at an outer frame's ``decide``."""
        keep = max(1, len(self.frames) - depth)
        for frame in self.frames[keep:]:
            for hook in self.task:
                if any(hook.rp is rp and hook.ident == ident for rp, ident in frame.instances):
                    hook.skipped = True
        del self.frames[keep:]
        target = self.frames[-1]
        regs = self.m.regs()
        regs.sp, regs.pc = target.sp, self.lab["decide"]
        regs.set(FP[self.isa], target.fp)
        self.m.set_regs(regs)

    @rule(i=st.integers(0, 1))
    def toggle_registration(self, i: int) -> None:
        if i < len(self.order):
            rp = self.order.pop(i)
            unregister_kretprobe(self.m.manager, self.m.points, rp)
        elif len(self.order) < 2:
            self._register(i)

    @invariant()
    def instance_stack_matches_the_model(self) -> None:
        if not hasattr(self, "m"):
            return
        live = self.m.task_kretprobe_instances()
        assert [(inst.rp, inst.data["id"] if inst.data else None) for inst in live] == [
            (h.rp, h.ident) for h in self.task
        ]

    def teardown(self) -> None:
        if not hasattr(self, "m"):
            return
        while len(self.frames) > 1:
            self.ret([1, 2, 3, 4])
        frame = self.frames.pop()
        self._model_return(frame)
        pc = self.m.run(self.lab["ret_site"], frozenset({RETURN_STOP}))
        assert pc == frame.ret == RETURN_STOP
        assert len(self.m.task_kretprobe_instances()) == len(self.task)


def _case(isa: str) -> type:
    return type(f"RethookMachine_{isa}", (RethookMachine,), {"isa": isa})


@pytest.mark.slow
@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_rethook_state_machine(isa: str) -> None:
    machine = _case(isa)
    runner = machine.TestCase  # type: ignore[attr-defined]
    runner.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
    runner("runTest").runTest()
