"""x86_64 return probes and user probes: processes, isolation, far out-of-line areas with
RIP-relative operands, unregistering with instances live, and bad input."""

from __future__ import annotations

import pytest

from kprobe_ref import (
    InvalidAddress,
    InvalidProbeDefinition,
    KprobeError,
    KretprobeBuilder,
    NoSuchProcess,
    ProbeBuilder,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
    unregister_kretprobe,
    unregister_uprobe,
)
from kprobe_ref.arch import Verdict
from kprobe_ref.sim import Machine
from kprobe_ref.tools.verify import bundled_image

KERNEL, USER = bundled_image("x86_64"), bundled_image("x86_64", "user")
USER_TEXT = 0x1000_0000  # where user.elf is linked (link-user.ld)


def user_machine(**spawn: int) -> tuple[Machine, int]:
    m = Machine("x86_64")
    m.load_elf(KERNEL)
    return m, m.spawn(USER, **spawn)


def test_kretprobe_sees_the_return_value_and_its_own_data() -> None:
    m = Machine("x86_64")
    img = m.load_elf(KERNEL)
    seen: list[tuple[int, int]] = []

    def entry(data: dict[str, int], regs: PtRegs) -> None:
        data["n"] = regs.arg(0)

    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder()
                            .with_symbol_addr(img.symbols["fibonacci"]).with_data({})
                            .with_entry_handler(entry).with_maxactive(64)
                            .with_ret_handler(lambda d, r: seen.append((d["n"], r.rax))))
    assert m.call(img.symbols["fibonacci"], 6) == 8
    fib = {0: 0, 1: 1}
    for i in range(2, 16):
        fib[i] = fib[i - 1] + fib[i - 2]
    assert seen and all(fib[n] == v for n, v in seen)
    assert seen[-1] == (6, 8)
    unregister_kretprobe(m.manager, m.points, rp)


def test_kretprobe_away_from_a_function_entry_is_an_error() -> None:
    m = Machine("x86_64")
    img = m.load_elf(KERNEL)
    with pytest.raises(InvalidAddress, match="not a function entry"):
        register_kretprobe(m.manager, m.points, KretprobeBuilder()
                           .with_symbol_addr(img.symbols["gcd"]).with_offset(1))
    assert not m.points


@pytest.mark.parametrize("n", [0, -1, 5000, "3"])
def test_bad_maxactive_is_an_error(n: object) -> None:
    m = Machine("x86_64")
    img = m.load_elf(KERNEL)
    with pytest.raises(InvalidProbeDefinition):
        register_kretprobe(m.manager, m.points, KretprobeBuilder()
                           .with_symbol_addr(img.symbols["gcd"]).with_maxactive(n))  # type: ignore[arg-type]


def test_unregister_with_instances_live_still_returns_correctly() -> None:
    """The kretprobe on ``call_op`` goes away while ``call_op`` is inside its callee: the
    pending return still lands at the real return address; its handler no longer runs."""
    m = Machine("x86_64")
    img = m.load_elf(KERNEL)
    fired: list[int] = []
    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder()
                            .with_symbol_addr(img.symbols["call_op"])
                            .with_ret_handler(lambda _d, _r: fired.append(1)))
    k = register_kprobe(m.manager, m.points, ProbeBuilder()
                        .with_symbol_addr(img.symbols["op_add"])
                        .with_pre_handler(
                            lambda _d, _r: unregister_kretprobe(m.manager, m.points, rp)))
    assert m.call(img.symbols["call_op"], 0, 100, 7) == 107
    assert fired == [] and not m.task_kretprobe_instances()
    unregister_kprobe(m.manager, m.points, k)
    assert m.call(img.symbols["call_op"], 0, 100, 7) == 107


def test_uprobe_fires_only_in_its_own_process() -> None:
    m, a = user_machine()
    b = m.spawn(USER)
    gcd = m.process(a).image.symbols["gcd"]
    page = m.read_memory(gcd & ~0xFFF, 0x1000, b)
    hits: list[int] = []
    pa = m.process(a)
    h = register_uprobe(pa.manager, pa.points, ProbeBuilder().with_symbol_addr(gcd)
                        .with_user_mode(a).with_pre_handler(lambda _d, _r: hits.append(1)))
    assert m.call_user(b, gcd, 48, 18) == 6
    assert hits == []
    assert m.read_memory(gcd & ~0xFFF, 0x1000, b) == page
    assert m.call_user(a, gcd, 48, 18) == 6
    assert hits == [1]
    unregister_uprobe(pa.manager, pa.points, h)
    assert m.read_memory(gcd & ~0xFFF, 0x1000, a) == page


def test_kernel_and_user_probes_do_not_cross() -> None:
    m, pid = user_machine()
    proc = m.process(pid)
    kgcd, ugcd = m.images[0].symbols["gcd"], proc.image.symbols["gcd"]
    khits: list[int] = []
    uhits: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(kgcd)
                    .with_pre_handler(lambda _d, _r: khits.append(1)))
    register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(ugcd)
                    .with_user_mode(pid).with_pre_handler(lambda _d, _r: uhits.append(1)))
    m.call_user(pid, ugcd, 12, 8)
    assert (khits, uhits) == ([], [1])
    m.call(kgcd, 12, 8)
    assert (khits, uhits) == ([1], [1])


def test_unknown_pid_and_wrong_tables_are_errors() -> None:
    m, pid = user_machine()
    with pytest.raises(NoSuchProcess):
        m.process(pid + 1000)
    with pytest.raises(NoSuchProcess):
        m.call_user(pid + 1000, 0x1000)
    with pytest.raises(InvalidProbeDefinition):
        register_uprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(USER_TEXT)
                        .with_user_mode(pid))
    proc = m.process(pid)
    with pytest.raises(KprobeError):
        register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(USER_TEXT)
                        .with_user_mode(pid + 1))


RIPREL_FUNCS = ("x86_riprel", "x86_vex_riprel", "counter_bump", "lcg_next", "weighted_sum")


@pytest.mark.parametrize("xol", ["far", "near"])
def test_rip_relative_uprobes_with_the_slot_area_far_or_near(xol: str) -> None:
    from kprobe_ref.tools.verify import bundled_specs

    specs = bundled_specs("x86_64")
    m, pid = user_machine(**({} if xol == "far" else {"xol_base": 0x2000_0000}))
    proc = m.process(pid)
    img = proc.image
    rules = set()
    for name in RIPREL_FUNCS:
        start, size = img.symbols[name], img.sizes[name]
        code = m.read_memory(start, size, pid)
        off = 0
        while off < size:
            d = m.arch.decode(code[off:], start + off, True)
            if d.verdict is Verdict.STEP_OUT_OF_LINE and "disp_offset" in d.fields:
                for case in specs[name].cases:
                    ints = [a for a in case.args if isinstance(a, int)]
                    if len(ints) != len(case.args):
                        continue
                    m1, pid1 = user_machine()
                    want = [m1.call_user(pid1, start, *ints) for _ in range(2)]
                    m2, pid2 = user_machine(**({} if xol == "far" else {"xol_base": 0x2000_0000}))
                    p2 = m2.process(pid2)
                    h = register_uprobe(p2.manager, p2.points, ProbeBuilder()
                                        .with_symbol_addr(start + off).with_user_mode(pid2))
                    got = [m2.call_user(pid2, start, *ints) for _ in range(2)]
                    assert h.point is not None and h.point.plan is not None
                    rules.add(h.point.plan.rule)
                    assert got == want, (name, hex(start + off), d.text)
                    assert h.nhit >= 2
            off += d.length
    assert rules == ({"rip-scratch-register"} if xol == "far" else {"rip-displacement"})


def test_uretprobe_and_recursion_in_a_process() -> None:
    m, pid = user_machine()
    proc = m.process(pid)
    fib = proc.image.symbols["fibonacci"]
    want = m.call_user(pid, fib, 9)
    values: list[int] = []
    rp = register_uretprobe(proc.manager, proc.points, KretprobeBuilder().with_symbol_addr(fib)
                            .with_user_mode(pid).with_maxactive(3)
                            .with_ret_handler(lambda _d, r: values.append(r.rax)))
    assert m.call_user(pid, fib, 9) == want
    assert values[-1] == want and rp.nmissed > 0
    assert m.trap_count > 0
