"""Jump-optimized kprobes on x86_64: no trap per hit and the unprobed end state, the frame
the pre-handler sees, what unoptimizes a point (a post handler, an event callback, a probe
inside the region, disabling, unregistering), what refuses one (a branch into the region, an
indirect jump, the function's end, a CPU inside the region), faults in the detour, the
detour's grace period, and all-or-nothing lifecycle operations with optimization on."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    PtRegs,
    optimize_kprobes,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.kernel.elfscan import KernelElf
from kprobe_ref.kernel.extable import ExceptionTable, exception_table
from kprobe_ref.optimize import optimize_refusal, plan_region
from kprobe_ref.sim import GuestFault, Machine
from kprobe_ref.tools.verify import bundled_image
from tests.helpers import CODE, DATA, snippet_machine
from tests.kernel_elf import SHF_ALLOC, SHF_EXEC, KernelImage, Sec
from tests.test_lifecycle_transactions import FailingHost, HostFailure

LOOP_OK = bytes.fromhex("4889f8" "4883c001" "48ffcf" "75fb" "c3")
"""``mov rax, rdi; add rax, 1; l: dec rdi; jnz l; ret``: returns ``rdi + 1`` (rdi > 0)."""
LOOP_INTO = bytes.fromhex("4889f8" "4883c001" "48ffcf" "75f7" "c3")
"""The same with the loop branching back to the ``add``, inside the region of offset 0."""
INDIRECT = bytes.fromhex("4889f8" "4883c001" "488d0d02000000" "ffe1" "c3")
"""``mov rax, rdi; add rax, 1; lea rcx, [rip+2]; jmp rcx; ret``."""
LOADS = bytes.fromhex("4889f8" "480307" "48030500000000" "c3")
"""``mov rax, rdi; add rax, [rdi]; add rax, [rip+disp]; ret`` (disp patched in)."""


def loads_code() -> bytes:
    disp = (DATA + 8) - (CODE + 13)
    return LOADS[:9] + disp.to_bytes(4, "little", signed=True) + LOADS[13:]


def pre_probe(m: Machine, addr: int, f: Callable[[object, PtRegs], Any] | None = None,
              **kw: Any) -> Any:
    b = ProbeBuilder().with_symbol_addr(addr).with_pre_handler(f or (lambda _d, _r: None))
    for name, value in kw.items():
        b = getattr(b, f"with_{name}")(value)
    return register_kprobe(m.manager, m.points, b)


def traps(m: Machine, call: Callable[[], int], want: int) -> int:
    before = m.trap_count
    assert call() == want
    return m.trap_count - before


def test_an_optimized_probe_takes_no_trap_and_the_handler_sees_the_breakpoint_frame() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    seen: list[tuple[int, int]] = []
    h = pre_probe(m, CODE, lambda _d, r: seen.append((r.pc, r.rdi)))
    assert not h.optimized and traps(m, lambda: m.call(CODE, 4), 5) == 1
    assert optimize_kprobes(m.manager) == 1 and h.optimized
    assert m.read(CODE, 1) == b"\xe9"
    assert m.points.overlay_original(CODE, m.read(CODE, len(LOOP_OK))) == LOOP_OK
    assert traps(m, lambda: m.call(CODE, 4), 5) == 0
    assert seen == [(CODE + 1, 4), (CODE + 1, 4)] and h.nhit == 2 and m.optimized_hits == 1
    unregister_kprobe(m.manager, m.points, h)
    assert m.read(CODE, len(LOOP_OK)) == LOOP_OK
    assert not m.manager.opt_entries and not m.manager.opt_garbage


def test_register_changes_from_a_pre_handler_are_kept_and_a_new_pc_is_followed() -> None:
    m = snippet_machine("x86_64", LOOP_OK)

    def bump(_d: object, r: PtRegs) -> None:
        r.rdi = 9

    h = pre_probe(m, CODE, bump)
    optimize_kprobes(m.manager)
    assert h.optimized and m.call(CODE, 4) == 10
    unregister_kprobe(m.manager, m.points, h)

    def skip(_d: object, r: PtRegs) -> bool:
        r.rax, r.pc = 77, CODE + len(LOOP_OK) - 1  # straight to the ret
        return True

    h = pre_probe(m, CODE, skip)
    optimize_kprobes(m.manager)
    assert h.optimized and m.call(CODE, 4) == 77


def test_a_post_handler_or_an_event_callback_unoptimizes_and_leaving_reoptimizes() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.manager.optimization = True
    pre = pre_probe(m, CODE)
    assert pre.optimized and traps(m, lambda: m.call(CODE, 3), 4) == 0
    post = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                           .with_post_handler(lambda _d, _r: None))
    assert not pre.optimized and m.read(CODE, 1) == b"\xcc"
    assert m.read(CODE + 1, 4) == LOOP_OK[1:5]
    assert traps(m, lambda: m.call(CODE, 3), 4) == 2
    unregister_kprobe(m.manager, m.points, post)
    assert pre.optimized and traps(m, lambda: m.call(CODE, 3), 4) == 0
    pre.register_event_callback(1, lambda _r: None)
    assert not pre.optimized and traps(m, lambda: m.call(CODE, 3), 4) == 2
    pre.unregister_event_callback(1)
    assert pre.optimized
    assert optimize_refusal(m.manager, pre.point) is None or pre.optimized


def test_disabling_unoptimizes_and_restores_the_code() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.manager.optimization = True
    h = pre_probe(m, CODE)
    assert h.optimized
    h.disable()
    assert not h.optimized and m.read(CODE, len(LOOP_OK)) == LOOP_OK
    h.enable()
    assert h.optimized and traps(m, lambda: m.call(CODE, 2), 3) == 0


def test_a_probe_inside_an_optimized_region_unoptimizes_it_and_both_fire() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.manager.optimization = True
    outer = pre_probe(m, CODE)
    assert outer.optimized
    inner = pre_probe(m, CODE + 3)
    assert not outer.optimized
    assert optimize_refusal(m.manager, m.points[CODE]) == "probe-in-region"
    assert m.call(CODE, 2) == 3 and outer.nhit == 1 and inner.nhit == 1
    unregister_kprobe(m.manager, m.points, inner)
    assert outer.optimized


@pytest.mark.parametrize(("code", "reason", "result"), [
    (LOOP_INTO, "jump-target-in-region", 6),
    (INDIRECT, "indirect-jump-in-function", 4),
], ids=["branch-into-region", "indirect-jump"])
def test_a_function_whose_control_flow_may_enter_the_region_is_refused(
        code: bytes, reason: str, result: int) -> None:
    m = snippet_machine("x86_64", code)
    h = pre_probe(m, CODE)
    assert plan_region(m.manager, CODE) == reason
    assert optimize_kprobes(m.manager) == 0 and not h.optimized
    assert traps(m, lambda: m.call(CODE, 3), result) >= 1


def test_the_region_must_end_inside_the_function_and_be_boostable() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    assert plan_region(m.manager, CODE + 10) == "region-crosses-function-end"  # jnz; ret
    assert plan_region(m.manager, CODE + 7) == "region-not-boostable"  # dec, then jnz
    assert plan_region(m.manager, CODE + 3) == "jump-target-in-region"  # the loop's dec
    short = snippet_machine("x86_64", bytes.fromhex("4889f8" "90"))
    assert plan_region(short.manager, CODE) == "region-crosses-function-end"


def test_a_rip_relative_operand_is_relocated_into_the_detour() -> None:
    m = snippet_machine("x86_64", loads_code())
    m.write(DATA, (5).to_bytes(8, "little") + (1000).to_bytes(8, "little"))
    h = pre_probe(m, CODE + 3)
    assert optimize_kprobes(m.manager) == 1 and h.optimized
    point = h.point
    assert point is not None and point.opt is not None and point.opt.plan.region == 10
    assert traps(m, lambda: m.call(CODE, DATA), DATA + 1005) == 0


def test_a_fault_in_the_detour_is_reported_at_the_original_instruction() -> None:
    m = snippet_machine("x86_64", loads_code())
    with pytest.raises(GuestFault) as plain:
        m.call(CODE, 0x5000_0000)
    h = pre_probe(m, CODE)
    optimize_kprobes(m.manager)
    assert h.optimized
    with pytest.raises(GuestFault) as probed:
        m.call(CODE, 0x5000_0000)
    assert plain.value.pc == probed.value.pc == CODE + 3 and h.nhit == 1


def test_a_hit_from_inside_a_handler_is_missed_and_still_runs_the_region() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    inner: list[int] = []
    h = pre_probe(m, CODE, lambda _d, _r: inner.append(m.call(CODE, 6)))
    optimize_kprobes(m.manager)
    assert h.optimized and m.call(CODE, 1) == 2
    assert inner == [7] and h.nhit == 1 and h.nmissed == 1 and m.trap_count == 0


def test_a_cpu_inside_the_region_defers_optimization() -> None:
    m = Machine("x86_64", cpus=2)
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, LOOP_OK)
    m.add_symbol("f", CODE, len(LOOP_OK))
    h = pre_probe(m, CODE)
    m.start(1, CODE, 3)
    refusals = []
    while m.smp.pc(1) != CODE + 3:
        m.step(1)
        point = h.point
        assert point is not None
        refusals.append(optimize_refusal(m.manager, point))
    assert refusals[-1] == "cpu-in-region" and "cpu-in-slot" in refusals
    assert optimize_kprobes(m.manager) == 0 and not h.optimized
    while not m.done(1):
        m.step(1)
    assert m.result(1) == 4
    assert optimize_kprobes(m.manager) == 1 and h.optimized
    m.start(0, CODE, 5)
    m.start(1, CODE, 8)
    while not (m.done(0) and m.done(1)):
        m.step(0)
        m.step(1)
    assert (m.result(0), m.result(1)) == (6, 9) and h.nhit == 3


def test_a_detour_a_cpu_is_in_is_freed_only_after_it_leaves() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    h = pre_probe(m, CODE)
    optimize_kprobes(m.manager)
    point = h.point
    assert point is not None and point.opt is not None
    detour, copy = point.opt.detour, point.opt.detour + point.opt.plan.entry
    m.run(CODE, {copy})  # stopped inside the detour
    unregister_kprobe(m.manager, m.points, h)
    assert [o.detour for o in m.manager.opt_garbage] == [detour]
    assert m.run(copy, {CODE + 7}) == CODE + 7
    m.call(CODE, 1)
    assert not m.manager.opt_garbage and detour not in m.manager.opt_entries


def test_a_kretprobe_entry_is_optimized_and_only_the_return_traps() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.manager.optimization = True
    seen: list[int] = []
    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(CODE)
                            .with_ret_handler(lambda _d, r: seen.append(r.rax)))
    assert rp.kprobe.optimized
    assert traps(m, lambda: m.call(CODE, 4), 5) == 1 and seen == [5]
    unregister_kretprobe(m.manager, m.points, rp)
    assert m.read(CODE, len(LOOP_OK)) == LOOP_OK


def test_the_pcode_cpu_delivers_optimized_hits_too() -> None:
    m = Machine("x86_64", cpu="pcode")
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, LOOP_OK)
    m.add_symbol("f", CODE, len(LOOP_OK))
    h = pre_probe(m, CODE)
    assert optimize_kprobes(m.manager) == 1
    assert traps(m, lambda: m.call(CODE, 4), 5) == 0 and h.nhit == 1


def test_uprobes_are_never_optimized() -> None:
    m = Machine("x86_64")
    pid = m.spawn(bundled_image("x86_64", "user"))
    proc = m.process(pid)
    addr = proc.image.functions["adler32"]
    proc.manager.optimization = True
    h = register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(addr)
                        .with_user_mode(pid).with_pre_handler(lambda _d, _r: None))
    assert optimize_kprobes(proc.manager) == 0 and not h.optimized


# -- all or nothing -----------------------------------------------------------------------


def _state(m: Machine) -> tuple[object, ...]:
    used = sorted((a.base, tuple(sorted(a.used))) for a in m.kernel.exec_areas if a.used)
    return (m.read(CODE, len(LOOP_OK)), dict(m.points), dict(m.manager.opt_entries),
            [(p.armed, p.opt, list(p.probes)) for p in m.points.values()], used)


def _operation(op: str) -> tuple[Callable[[Machine, Any], None], Callable[[Machine], Any]]:
    """(prepare, perform) of one lifecycle operation on an optimized point at CODE."""
    if op == "register-post":
        return (lambda _m, _h: None,
                lambda m: register_kprobe(m.manager, m.points, ProbeBuilder()
                                          .with_symbol_addr(CODE)
                                          .with_post_handler(lambda _d, _r: None)))
    if op == "register-inside":
        return lambda _m, _h: None, lambda m: pre_probe(m, CODE + 3)
    if op == "unregister":
        return lambda _m, _h: None, lambda m: unregister_kprobe(m.manager, m.points,
                                                                  m.points[CODE].probes[0])
    if op == "disable":
        return lambda _m, _h: None, lambda m: m.points[CODE].probes[0].disable()
    return (lambda _m, h: h.disable() or h.enable(),
            lambda m: m.points[CODE].probes[0].register_event_callback(1, lambda _r: None))


@pytest.mark.parametrize("op", ["register-post", "register-inside", "unregister", "disable",
                                "event-callback"])
def test_failing_any_host_write_leaves_the_optimized_point_as_it_was(op: str) -> None:
    prepare, perform = _operation(op)
    k, failed = 1, True
    while failed:
        m = snippet_machine("x86_64", LOOP_OK)
        m.manager.optimization = True
        h = pre_probe(m, CODE)
        prepare(m, h)
        assert h.optimized
        host = FailingHost(m)
        host.install()
        before = _state(m)
        host.fail_at = k
        try:
            perform(m)
            failed = False
        except HostFailure:
            host.fail_at = None
            assert _state(m) == before, f"{op}: write {k} failed and left changes"
            assert h.optimized and traps(m, lambda m=m: m.call(CODE, 2), 3) == 0
        k += 1
    assert k > 2


# -- exception tables -----------------------------------------------------------------------


def test_a_function_with_an_exception_table_entry_is_not_optimized() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.exception_table = ExceptionTable([CODE + 7])  # the dec: anywhere in the function
    h = pre_probe(m, CODE)
    assert plan_region(m.manager, CODE) == "exception-table"
    assert optimize_kprobes(m.manager) == 0 and not h.optimized
    m.exception_table = ExceptionTable([CODE + len(LOOP_OK)])  # past the function's end
    assert optimize_kprobes(m.manager) == 1 and h.optimized


def test_the_exception_table_is_read_from_the_image(tmp_path: Path) -> None:
    base = 0xFFFF_FFFF_8100_0000
    table = base + 0x1000
    rows = [(base + 0x10, base + 0x20), (base + 0x44, base + 0x50)]
    raw = b"".join(struct.pack("<iii", insn - (table + 12 * i), fix - (table + 12 * i + 4), 0)
                   for i, (insn, fix) in enumerate(rows))
    img = KernelImage(62, sections=[Sec(".text", base, b"\x90" * 0x100, SHF_ALLOC | SHF_EXEC),
                                    Sec("__ex_table", table, raw)])
    path = tmp_path / "vmlinux"
    path.write_bytes(img.build())
    kelf = KernelElf(path)
    try:
        got = exception_table(kelf)
    finally:
        kelf.close()
    assert got.insns == [base + 0x10, base + 0x44]
    assert got.any_in(base + 0x40, 8) and not got.any_in(base + 0x11, 0x33)


# -- jump tables --------------------------------------------------------------------------------


def switch_code(table: int) -> bytes:
    """``mov rax, rdi; and rax, 1; jmp [rax*8 + table]``, then case 0 ``mov rax, 10; ret``
    at +0xe and case 1 ``mov rax, 20; ret`` at +0x16."""
    jmp = b"\xff\x24\xc5" + table.to_bytes(4, "little")
    return (bytes.fromhex("4889f8" "4883e001") + jmp + bytes.fromhex("48c7c00a000000c3")
            + bytes.fromhex("48c7c014000000c3"))


def test_a_readable_jump_table_is_followed() -> None:
    m = snippet_machine("x86_64", switch_code(DATA))
    m.write(DATA, (CODE + 0xE).to_bytes(8, "little") + (CODE + 0x16).to_bytes(8, "little"))
    h = pre_probe(m, CODE)
    assert optimize_kprobes(m.manager) == 1 and h.optimized
    assert traps(m, lambda: m.call(CODE, 0), 10) == 0
    assert traps(m, lambda: m.call(CODE, 1), 20) == 0
    assert not isinstance(plan_region(m.manager, CODE + 0xE), str)  # a case label starts it


def test_a_jump_table_entry_inside_the_region_refuses() -> None:
    m = snippet_machine("x86_64", switch_code(DATA))
    m.write(DATA, (CODE + 0xE).to_bytes(8, "little") + (CODE + 3).to_bytes(8, "little"))
    assert plan_region(m.manager, CODE) == "jump-target-in-region"


@pytest.mark.parametrize("table", [0x5000_0000, DATA + 0x100], ids=["unmapped", "elsewhere"])
def test_a_jump_table_that_cannot_be_read_refuses(table: int) -> None:
    m = snippet_machine("x86_64", switch_code(table))
    m.write(DATA + 0x100, (0x1234_5678).to_bytes(8, "little"))  # points out of the function
    assert plan_region(m.manager, CODE) == "indirect-jump-in-function"


def test_a_point_deferred_by_a_cpu_in_its_region_is_optimized_at_the_next_quiescent_point(
        ) -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    m.manager.optimization = True
    frame = m.arch.regs_class()
    frame.set("rdi", 2)
    m.set_regs(frame)
    m.run(CODE, {CODE + 3})  # stopped inside the region [CODE, CODE + 7)
    h = pre_probe(m, CODE)
    point = h.point
    assert point is not None and not h.optimized
    assert optimize_refusal(m.manager, point) == "cpu-in-region"
    assert m.manager.opt_deferred == {CODE}
    assert m.run(CODE + 3, {CODE + len(LOOP_OK) - 1}) == CODE + len(LOOP_OK) - 1
    assert h.optimized and not m.manager.opt_deferred
    assert traps(m, lambda: m.call(CODE, 3), 4) == 0


def test_the_tracer_sees_optimization_hits_and_unoptimization() -> None:
    m = snippet_machine("x86_64", LOOP_OK)
    events: list[str] = []
    m.manager.tracers.append(lambda e: events.append(e.kind))
    h = pre_probe(m, CODE)
    optimize_kprobes(m.manager)
    m.call(CODE, 1)
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                    .with_post_handler(lambda _d, _r: None))
    unregister_kprobe(m.manager, m.points, h)
    assert events[events.index("optimized"):] == ["optimized", "hit", "detour", "unoptimized"]
