"""Kernel layout: code at virtual address 0 and in the kernel half; machine pages placed where
nothing is mapped; coalesced page runs; patching leaves the CPU's memory regions whole."""

from __future__ import annotations

from kprobe_ref import ProbeBuilder
from kprobe_ref.manager import register_kprobe, unregister_kprobe
from kprobe_ref.sim.elf import _page_runs as _runs
from kprobe_ref.sim.machine import Machine
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

CODE = bytes.fromhex("b807000000" "01f8" "c3")  # mov eax, 7; add eax, edi; ret


def test_adjacent_pages_with_equal_permissions_form_one_run() -> None:
    pages = {0x0: "rx", 0x1000: "rx", 0x2000: "rw", 0x5000: "rw"}
    assert _runs(pages) == [(0, 0x2000, "rx"), (0x2000, 0x1000, "rw"), (0x5000, 0x1000, "rw")]


def _probe_and_call(base: int) -> Machine:
    m = Machine("x86_64")
    m.map(base, 0x40000, "rx")
    m.write(base + 0x10, CODE)
    m.add_symbol("f", base + 0x10, len(CODE))
    assert m.call(base + 0x10, 5) == 12
    cpu = m.cpu
    assert isinstance(cpu, UnicornCpu)
    regions = len(list(cpu.uc.mem_regions()))
    before = m.read(base + 0x10, len(CODE))
    for off in (0, 5, 7):
        p = register_kprobe(m.manager, m.points,
                            ProbeBuilder().with_symbol_addr(base + 0x10).with_offset(off))
        assert m.call(base + 0x10, 5) == 12
        unregister_kprobe(m.manager, m.points, p)
    assert m.read(base + 0x10, len(CODE)) == before
    assert len(list(cpu.uc.mem_regions())) == regions + 1  # the one slot area, no splits
    return m


def test_code_at_address_zero_moves_the_machine_pages_elsewhere() -> None:
    m = _probe_and_call(0)
    stop = m.kernel.return_stop
    assert stop is not None and stop >= 0x40000


def test_code_in_the_x86_64_kernel_half_runs_and_is_probed() -> None:
    m = _probe_and_call(0xFFFF_FFFF_8100_0000)
    assert m.kernel.return_stop == 0x1000
