"""Boosted slots on the machine: one trap per pre-handler hit, two when a post handler needs
the second, the variant chosen at the hit without rewriting the slot, faults inside it, the
grace period before a slot is freed, process slots, reach fallbacks and the x86 boost
rules."""

from __future__ import annotations

import pytest

from kprobe_ref import (
    ProbeBuilder,
    register_kprobe,
    register_uprobe,
    unregister_kprobe,
)
from kprobe_ref.arch import Verdict
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.arch.x86_64.encoding import parse
from kprobe_ref.sim import GuestFault, Machine
from kprobe_ref.tools.verify import bundled_image

CODE = 0x40_0000
# An instruction that returns the first argument, then a return; or a load through it.
SNIPPETS: dict[str, tuple[str, str, str]] = {
    "x86_64": ("4889f8", "488b07", "c3"),
    "aarch64": ("00000091", "000040f9", "c0035fd6"),
    "riscv64": ("13050500", "03350500", "67800000"),
    "loongarch64": ("8400c002", "8400c028", "2000004c"),
}
ISAS = tuple(SNIPPETS)


def machine(isa: str, which: int = 0) -> Machine:
    first, load, ret = (bytes.fromhex(h) for h in SNIPPETS[isa])
    code = (first if which == 0 else load) + ret
    m = Machine(isa)
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, code)
    m.add_symbol("f", CODE, len(code))
    return m


def traps_per_call(m: Machine, arg: int = 5) -> int:
    before = m.trap_count
    assert m.call(CODE, arg) == arg
    return m.trap_count - before


@pytest.mark.parametrize("isa", ISAS)
def test_pre_handler_only_takes_one_trap_and_a_post_handler_two(isa: str) -> None:
    m = machine(isa)
    pre = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                          .with_pre_handler(lambda _d, _r: None))
    point = pre.point
    assert point is not None and point.decoded.verdict is Verdict.STEP_OUT_OF_LINE
    assert point.boost_plan is not None and point.boost_addr is not None
    slot = m.read(point.slot_addr or 0, m.arch.slot_size)
    assert traps_per_call(m) == 1
    post = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                           .with_post_handler(lambda _d, _r: None))
    assert traps_per_call(m) == 2
    assert m.read(point.slot_addr or 0, m.arch.slot_size) == slot  # nothing rewritten
    post.disable()
    assert traps_per_call(m) == 1
    post.enable()
    unregister_kprobe(m.manager, m.points, post)
    assert traps_per_call(m) == 1
    assert pre.nhit == 4


@pytest.mark.parametrize("isa", ISAS)
def test_a_fault_in_a_boosted_slot_is_reported_at_the_probed_address(isa: str) -> None:
    m = machine(isa, which=1)
    seen: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                        .with_fault_handler(lambda _d, regs, _e: seen.append(regs.pc)))
    assert h.point is not None and h.point.boost_plan is not None
    with pytest.raises(GuestFault) as info:
        m.call(CODE, 0x5000_0000)  # unmapped
    assert info.value.pc == CODE
    assert seen == [CODE]
    assert m.trap_count == 1
    assert m.manager.ctl_stack() == []


def test_a_slot_is_kept_while_a_stopped_run_is_inside_it() -> None:
    m = machine("x86_64")
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE))
    point = h.point
    assert point is not None and point.boost_addr is not None and point.slot_addr is not None
    slot, jump = point.slot_addr, point.boost_addr + point.decoded.length
    m.regs()
    assert m.run(CODE, {jump}) == jump  # stopped inside the boosted variant
    unregister_kprobe(m.manager, m.points, h)
    assert m.manager.slot_garbage == [point]
    assert any(slot in area.used for area in m.kernel.exec_areas)
    assert m.run(jump, {CODE + point.decoded.length}) == CODE + point.decoded.length
    assert m.manager.slot_garbage == []
    assert not any(slot in area.used for area in m.kernel.exec_areas)


def test_an_x86_process_slot_boosts_with_an_absolute_jump() -> None:
    m = Machine("x86_64")
    pid = m.spawn(bundled_image("x86_64", "user"))
    proc = m.process(pid)
    gcd = proc.image.symbols["gcd"]
    want = m.call_user(pid, gcd, 48, 18)
    h = register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(gcd)
                        .with_user_mode(pid))
    assert h.point is not None and h.point.boost_plan is not None
    assert h.point.decoded.verdict is Verdict.STEP_OUT_OF_LINE
    assert h.point.boost_plan.code[h.point.decoded.length:][:2] == b"\xff\x25"
    before = m.trap_count
    assert m.call_user(pid, gcd, 48, 18) == want
    assert m.trap_count - before == h.nhit == 1


@pytest.mark.parametrize("isa", ["aarch64", "riscv64"])
def test_a_process_slot_out_of_jump_reach_takes_two_traps(isa: str) -> None:
    m = Machine(isa)
    pid = m.spawn(bundled_image(isa, "user"))
    proc = m.process(pid)
    point = None
    for addr in range(proc.image.symbols["gcd"], proc.image.symbols["gcd"] + 64, 4):
        h = register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(addr)
                            .with_user_mode(pid))
        if h.point is not None and h.point.decoded.verdict is Verdict.STEP_OUT_OF_LINE:
            point = h.point
            break
    assert point is not None and point.boost_plan is None


def test_a_riscv_kernel_slot_beyond_jal_reach_falls_back_to_two_traps() -> None:
    m = machine("riscv64")
    m.map(CODE - 0x10_0000, 0x10_0000, "rw")  # nothing free within jal reach
    m.map(CODE + 0x1000, 0x10_0000, "rw")
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE))
    assert h.point is not None and h.point.slot_addr is not None
    assert abs(h.point.slot_addr - CODE) >= 1 << 20
    assert h.point.boost_plan is None
    assert traps_per_call(m) == 2


@pytest.mark.parametrize(("hexcode", "boostable"), [
    ("4883c001", True),      # add rax, 1
    ("0fafc1", True),        # imul eax, ecx
    ("c5f877", True),        # vzeroupper (VEX)
    ("f00fc101", True),      # lock xadd [rcx], eax
    ("0fa2", False),         # cpuid
    ("2e90", False),         # cs nop
    ("678b00", False),       # mov eax, [eax]: address-size prefix
    ("0f3800c1", False),     # pshufb: three-byte opcode map
    ("f6c801", False),       # test al, 1 as F6 /1 (AMD alias)
    ("f6d0", True),          # not al
    ("fec0", True),          # inc al
    ("fff0", False),         # push rax as FF /6
    ("d9c0", False),         # fld st0: x87 escape
])  # fmt: skip
def test_x86_boost_rule(hexcode: str, boostable: bool) -> None:
    insn = parse(bytes.fromhex(hexcode), CODE)
    assert insn is not None
    assert (x86_slot.boost_refusal(insn) is None) is boostable
