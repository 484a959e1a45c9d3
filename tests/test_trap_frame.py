"""The lazily synchronised trap frame: nothing but the PC moves unless a handler touches a
register, only changed registers are written back, and a handler that fails leaves the CPU
as it was."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kprobe_ref import ProbeBuilder, PtRegs, register_kprobe
from kprobe_ref.sim import Machine
from kprobe_ref.sim.frame import FrameLayout, trap_frame, write_back

CODE = 0x40_0000
# mov rax, rdi ; ret
X86 = bytes.fromhex("4889f8c3")


def machine() -> tuple[Machine, list[list[str]]]:
    m = Machine("x86_64")
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, X86)
    m.add_symbol("f", CODE, len(X86))
    writes: list[list[str]] = []
    cpu = m.cpu
    original = cpu.reg_write_many

    def spy(items: Sequence[tuple[str, int]]) -> None:
        writes.append([n for n, _ in items])
        original(items)

    cpu.reg_write_many = spy  # type: ignore[method-assign]
    return m, writes


def test_a_handler_that_touches_no_register_moves_none() -> None:
    m, writes = machine()
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                    .with_pre_handler(lambda _d, _r: None))
    writes.clear()
    assert m.call(CODE, 7) == 7
    assert m.trap_count == 1
    assert all("rax" not in w and "rdi" not in w for w in writes)


def test_only_the_register_a_handler_changes_is_written_back() -> None:
    m, writes = machine()

    def pre(_d: object, regs: PtRegs) -> None:
        regs.set("rdi", regs.get("rdi") + 1)

    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                    .with_pre_handler(pre))
    writes.clear()
    assert m.call(CODE, 7) == 8
    trap_writes = [w for w in writes if w == ["rdi"]]
    assert trap_writes == [["rdi"]]


def test_a_failing_handler_leaves_the_cpu_registers_alone() -> None:
    m, writes = machine()

    def pre(_d: object, regs: PtRegs) -> None:
        regs.set("rdi", 99)
        raise RuntimeError("handler bug")

    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                    .with_pre_handler(pre))
    writes.clear()
    assert m.call(CODE, 7) == 7
    assert all("rdi" not in w for w in writes)


@pytest.mark.parametrize("isa", ["x86_64", "aarch64", "riscv64", "loongarch64"])
def test_a_lazy_frame_reads_as_the_eager_one(isa: str) -> None:
    m = Machine(isa)
    eager = m.regs()
    for i, name in enumerate(m.arch.regs_class.ARGS):
        eager.set(name, 0x1000 + i)
    eager.sp = 0x7000_0000
    m.set_regs(eager)
    layout = FrameLayout(m.arch.regs_class, m.arch.cpu_regs)
    lazy = trap_frame(layout, eager.pc, lambda: m.cpu.reg_read_many(layout.cpu_names))
    untouched = lazy.copy()
    assert isinstance(lazy, m.arch.regs_class)
    assert lazy.sp == 0x7000_0000 and lazy.arg(1) == 0x1001
    assert lazy == eager and lazy.copy() == eager
    lazy.set(m.arch.regs_class.ARGS[0], 5)
    lazy.restore_from(untouched)
    written: list[Sequence[tuple[str, int]]] = []
    write_back(layout, lazy, written.append)
    assert written == [] and lazy.arg(0) == 0x1000
