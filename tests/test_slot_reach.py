"""Slots within reach: ``ArchOps.reach``, the machine's outward allocator, and the proofs."""

from __future__ import annotations

import pytest

from kprobe_ref import ProbeBuilder, register_kprobe
from kprobe_ref.arch import ARCHES, get_arch
from kprobe_ref.arch.base import Decoded, Reach, SlotReach, reach_window
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.proofs.reach import reach_obligations
from kprobe_ref.sim import Machine
from tests.helpers import KERNEL_TEXT, compare_probed, run_snippet, snippet_machine

STEPPED = {
    "x86_64": bytes.fromhex("4801d8") + bytes.fromhex("90") * 4,  # add rax, rbx; nops
    "aarch64": bytes.fromhex("2000028b") + bytes.fromhex("1f2003d5"),  # add x0, x1, x2; nop
    "riscv64": bytes.fromhex("3305b500") + bytes.fromhex("13000000"),  # add a0, a0, a1; nop
    "loongarch64": bytes.fromhex("84941000") + bytes.fromhex("00004003"),
    # add.d a0, a0, a1; nop
}
REGS = {"x86_64": ("rax", "rbx"), "aarch64": ("x1", "x2"), "riscv64": ("a0", "a1"),
        "loongarch64": ("a0", "a1")}


def _probe(m: Machine, addr: int) -> int:
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr)
                        .with_pre_handler(lambda _d, _r: None))
    assert h.point is not None and h.point.slot_addr is not None
    return h.point.slot_addr


@pytest.mark.parametrize("isa", sorted(ARCHES))
@pytest.mark.parametrize("where", ["low", "kernel"])
def test_a_slot_goes_next_to_its_code_and_boosts(isa: str, where: str) -> None:
    at = KERNEL_TEXT[isa] if where == "kernel" else 0x40_0000
    m = snippet_machine(isa, STEPPED[isa], at)
    slot = _probe(m, at)
    assert abs(slot - at) <= 0x20000, f"slot {slot:#x} is not the free place nearest {at:#x}"
    point = m.points[at]
    assert point.boost_plan is not None, "a slot next to the code reaches back"
    assert all(r.holds(slot) for r in m.arch.reach(point.decoded, False).boost)


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_probed_kernel_half_code_ends_as_unprobed(isa: str) -> None:
    a, b = REGS[isa]
    nxt = len(STEPPED[isa]) - (1 if isa == "x86_64" else 4)
    compare_probed(isa, STEPPED[isa], {a: 5, b: 7}, {KERNEL_TEXT[isa] + nxt},
                   code_at=KERNEL_TEXT[isa])


def test_x86_rip_relative_near_the_edge_of_its_reach_gets_a_slot_that_reaches() -> None:
    """The target lies almost 2 GiB above the code, so only slots above the code reach it;
    the allocator finds one (a lowest-address search would pick one below and refuse)."""
    code_at, target = 0x40_0000, 0x40_0000 + 0x7FF0_0000
    disp = target - (code_at + 7)
    code = bytes.fromhex("488b05") + disp.to_bytes(4, "little") + bytes.fromhex("90")
    m = snippet_machine("x86_64", code, code_at)
    m.map(target, 0x1000, "rw")
    m.write(target, (0x1122_3344_5566_7788).to_bytes(8, "little"))
    plain = run_snippet(m, code_at, {}, {code_at + 7})
    probed = run_snippet(m, code_at, {}, {code_at + 7}, probe_at=code_at)
    assert plain.regs == probed.regs and probed.regs["rax"] == 0x1122_3344_5566_7788
    slot = _probe(m, code_at)
    assert 0 < slot - code_at <= 0x20000
    assert abs(target - slot) < 1 << 31
    assert m.points[code_at].boost_plan is not None


def test_a_slot_searches_past_mapped_memory_to_the_nearest_free_place() -> None:
    m = snippet_machine("riscv64", STEPPED["riscv64"], 0x40_0000)
    m.map(0x41_0000, 0x8_0000, "r")
    m.map(0x30_0000, 0x10_0000, "r")
    slot = _probe(m, 0x40_0000)
    assert slot == 0x49_0000
    assert m.points[0x40_0000].boost_plan is not None


def test_x86_kernel_rip_relative_to_address_zero_reaches_by_wrapping() -> None:
    """A kernel-half instruction addressing the per-CPU segment at virtual address 0 (as
    x86_64 kernels do) is reached from a slot in the top 2 GiB, as from Linux's module
    area."""
    code_at = KERNEL_TEXT["x86_64"]
    disp = (0x10 - (code_at + 7)) & 0xFFFF_FFFF  # [rip + disp] wraps to address 0x10
    code = bytes.fromhex("488b05") + disp.to_bytes(4, "little") + bytes.fromhex("90")
    m = snippet_machine("x86_64", code, code_at)
    m.map(0, 0x1000, "rw")
    m.write(0x10, (0xAB_CDEF).to_bytes(8, "little"))
    plain = run_snippet(m, code_at, {}, {code_at + 7})
    probed = run_snippet(m, code_at, {}, {code_at + 7}, probe_at=code_at)
    assert plain.regs == probed.regs and probed.regs["rax"] == 0xAB_CDEF
    slot = _probe(m, code_at)
    assert slot >= (1 << 64) - (1 << 31)
    assert m.points[code_at].boost_plan is not None


def test_windows_intersect_to_one_interval_or_none() -> None:
    a = Reach(1000, 0, -100, 100, "a")
    b = Reach(1150, 0, -100, 100, "b")
    assert reach_window([a, b]) == (1050, 1100)
    assert reach_window([a, Reach(5000, 0, -1, 1, "c")]) is None
    assert reach_window([], 10, 20) == (10, 20)


def test_x86_reach_matches_what_the_slot_builder_accepts() -> None:
    arch = get_arch("x86_64")
    d = arch.decode(bytes.fromhex("488b0500000080"), 0x1000_0000, False)
    (r,) = arch.reach(d, False).required
    first, last = r.window()
    for slot in (first - 1, first, last, last + 1):
        try:
            arch.build_slot(d, slot, False)
            built = True
        except Exception:
            built = False
        assert built == r.holds(slot) == (first <= slot <= last)
    assert arch.reach(d, True).required == ()  # a process slot borrows a scratch register


# -- the proofs, and that they can fail ----------------------------------------------------


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_reach_obligations_hold(isa: str) -> None:
    for ob in reach_obligations(isa):
        result = ob.check()
        assert result.proved, (ob.klass, result.detail, result.counterexample)


def _widened(rule: object, extra: int) -> object:
    def wide(d: Decoded, user: bool) -> SlotReach:
        r: SlotReach = rule(d, user)  # type: ignore[operator]
        grow = tuple(Reach(x.target, x.offset, x.low, x.high + extra, x.why) for x in r.boost)
        req = tuple(Reach(x.target, x.offset, x.low, x.high + extra, x.why) for x in r.required)
        return SlotReach(req, grow)
    return wide


@pytest.mark.parametrize("isa", sorted(ARCHES))
def test_a_boost_window_one_step_too_wide_fails(isa: str) -> None:
    from kprobe_ref.arch.aarch64 import slot as a64
    from kprobe_ref.arch.loongarch64 import slot as la
    from kprobe_ref.arch.riscv64 import slot as rv

    mod = {"x86_64": x86_slot, "aarch64": a64, "riscv64": rv, "loongarch64": la}[isa]
    step = get_arch(isa).insn_align if isa != "x86_64" else 1
    (ob, _) = reach_obligations(isa, _widened(mod.reach, step))  # type: ignore[arg-type]
    result = ob.check()
    assert not result.proved and result.counterexample is not None


def test_an_x86_relocation_window_one_byte_too_wide_fails() -> None:
    (_, ob) = reach_obligations("x86_64", _widened(x86_slot.reach, 1))  # type: ignore[arg-type]
    result = ob.check()
    assert not result.proved and result.counterexample is not None


def test_a_fixed_width_rule_that_requires_a_window_fails() -> None:
    from kprobe_ref.arch.riscv64 import slot as rv

    def needy(d: Decoded, user: bool) -> SlotReach:
        return SlotReach((Reach(d.address, 0, -8, 8, "needless"),), rv.reach(d, user).boost)

    (_, ob) = reach_obligations("riscv64", needy)
    assert not ob.check().proved
