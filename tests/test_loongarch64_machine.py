"""loongarch64 on the machine (P-code CPU): the frame; a kprobe at every instruction of the
class functions gives the unprobed results and execution counts; kretprobes on recursion
leave ``ra`` as an unprobed return leaves it; uprobes and uretprobes in a process, isolated
from another process; a nested call from a handler."""

from __future__ import annotations

from typing import Any

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.arch.loongarch64 import encoding as E
from kprobe_ref.arch.loongarch64.regs import CPU_REGS, LoongArch64PtRegs
from kprobe_ref.sim import Machine
from kprobe_ref.tools.verify import bundled_image, bundled_specs

KERNEL = bundled_image("loongarch64")
USER = bundled_image("loongarch64", "user")
M64 = (1 << 64) - 1


def test_pt_regs_layout_aliases_and_zero() -> None:
    r = LoongArch64PtRegs()
    assert r.FIELDS == ("orig_a0", "csr_era", "csr_badvaddr", "csr_crmd", "csr_prmd",
                        "csr_euen", "csr_ecfg", "csr_estat")
    assert len(r.regs) == 32 and r.ZERO == "r0" and r.PC == "csr_era"
    r.set("r3", 0x1000)
    r.set("a0", 5)
    r.set("fp", 6)
    r.pc = 0x42
    assert (r.sp, r.regs[3], r.regs[4], r.get("s9"), r.get("r22"), r.get("csr_era")) == (
        0x1000, 0x1000, 5, 6, 6, 0x42)
    r.sp = -16
    assert r.get("r3") == M64 - 15
    assert [r.ALIASES[n] for n in ("zero", "ra", "tp", "a7", "t0", "t8", "u0", "s0", "s8")] == [
        f"regs[{i}]" for i in (0, 1, 2, 11, 12, 20, 21, 23, 31)]
    assert r.arg(7) == 0 and r.RET == ("a0", "a1")
    assert set(CPU_REGS.values()) == {f"r{i}" for i in range(1, 32)} | {"pc"}


def _run_cases(m: Machine, name: str) -> list[int]:
    addr = m.images[0].symbols[name]
    spec = bundled_specs("loongarch64")[name]
    return [m.call(addr, *[a for a in c.args if isinstance(a, int)]) for c in spec.cases]


@pytest.mark.parametrize("name", ["la_branches", "la_jumps", "la_fcc", "factorial", "gcd"])
def test_kprobe_at_every_instruction_keeps_results_and_counts(name: str) -> None:
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    start, size = img.symbols[name], img.sizes[name]
    where = list(range(start, start + size, 4))
    counts = m.watch(set(where))
    want = _run_cases(m, name)
    plain = {a: n for a, n in counts.items() if n}
    counts.clear()
    hits: dict[int, int] = dict.fromkeys(where, 0)
    handles = []
    for addr in where:
        def pre(_d: object, regs: Any, a: int = addr) -> None:
            assert regs.pc == a
            hits[a] += 1
        handles.append(register_kprobe(m.manager, m.points,
                                       ProbeBuilder().with_symbol_addr(addr).with_pre_handler(pre)))
    assert _run_cases(m, name) == want
    assert {a: n for a, n in hits.items() if n} == plain
    for h in handles:
        unregister_kprobe(m.manager, m.points, h)
    assert _run_cases(m, name) == want


def test_kprobe_writes_break_10_and_restores_the_word() -> None:
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    at = img.symbols["la_leaf"]
    before = m.read(at, 4)
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(at))
    assert m.read(at, 4) == E.BREAK_KPROBE
    unregister_kprobe(m.manager, m.points, h)
    assert m.read(at, 4) == before


def test_kretprobe_on_recursive_factorial() -> None:
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    fact = img.symbols["factorial"]
    seen: list[tuple[int, int]] = []
    entry_sp: list[int] = []
    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(fact)
                            .with_entry_handler(lambda _d, r: entry_sp.append(r.sp))
                            .with_ret_handler(lambda _d, r: seen.append(
                                (r.first_ret_value(), r.sp)))
                            .with_maxactive(32))
    assert m.call(fact, 6) == 720
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)
    assert seen[-1][0] == 720 and len(seen) == len(entry_sp) >= 1
    assert [sp for _, sp in seen] == entry_sp[::-1]
    assert m.regs().pc == 0x1000
    unregister_kretprobe(m.manager, m.points, rp)
    assert m.call(fact, 6) == 720


def test_kretprobe_leaves_ra_as_the_real_return_address() -> None:
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    leaf = img.symbols["la_leaf"]
    m.call(leaf, 3, 4)
    plain = m.regs()
    register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(leaf)
                       .with_ret_handler(lambda _d, _r: None))
    assert m.call(leaf, 3, 4) == 19
    probed = m.regs()
    assert probed.get("ra") == plain.get("ra") == 0x1000
    assert probed.as_dict() == plain.as_dict()


def test_kretprobe_through_the_call36_jirl_ra_ra_0_call() -> None:
    """la_jumps calls la_leaf three ways, once with ``pcaddu18i ra`` + ``jirl ra, ra, 0``;
    a return probe on la_leaf fires for each and the results stay."""
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    jumps, leaf = img.symbols["la_jumps"], img.symbols["la_leaf"]
    want = [m.call(jumps, s, 7) for s in range(8)]
    rets: list[int] = []
    register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(leaf)
                       .with_ret_handler(lambda _d, r: rets.append(r.first_ret_value())))
    for addr in range(jumps, jumps + img.sizes["la_jumps"], 4):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr))
    assert [m.call(jumps, s, 7) for s in range(8)] == want
    assert len(rets) == 3 * 8


def test_nested_call_from_a_handler() -> None:
    m = Machine("loongarch64")
    img = m.load_elf(KERNEL)
    fact, leaf = img.symbols["factorial"], img.symbols["la_leaf"]
    inner: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(fact)
                    .with_pre_handler(lambda _d, _r: inner.append(m.call(leaf, 1, 2))))
    assert m.call(fact, 5) == 120
    assert inner and set(inner) == {7}


def test_uprobe_and_uretprobe_in_a_process() -> None:
    m = Machine("loongarch64")
    pid = m.spawn(USER)
    other = m.spawn(USER)
    proc = m.process(pid)
    fib = proc.image.symbols["fibonacci"]
    want = m.call_user(pid, fib, 10)
    hits: list[int] = []
    rets: list[int] = []
    register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(fib)
                    .with_user_mode(pid).with_pre_handler(lambda _d, r: hits.append(r.arg(0))))
    register_uretprobe(proc.manager, proc.points, KretprobeBuilder().with_symbol_addr(fib)
                       .with_user_mode(pid).with_maxactive(64)
                       .with_ret_handler(lambda _d, r: rets.append(r.first_ret_value())))
    assert proc.space.read(fib, 4) == E.BREAK_UPROBE
    assert m.call_user(pid, fib, 10) == want
    assert hits and rets and rets[-1] == want and len(hits) == len(rets)
    before = m.trap_count
    assert m.call_user(other, m.process(other).image.symbols["fibonacci"], 10) == want
    assert m.trap_count == before


@pytest.mark.parametrize("name", ["la_jumps", "la_pcrel_data", "la_fcc"])
def test_uprobe_at_every_instruction_of_a_class_function(name: str) -> None:
    m = Machine("loongarch64")
    pid = m.spawn(USER)
    proc = m.process(pid)
    start, size = proc.image.symbols[name], proc.image.sizes[name]
    spec = bundled_specs("loongarch64")[name]
    cases = [[a for a in c.args if isinstance(a, int)] for c in spec.cases]
    wants = [m.call_user(pid, start, *a) for a in cases]
    hits: list[int] = []
    for addr in range(start, start + size, 4):
        register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(addr)
                        .with_user_mode(pid).with_pre_handler(lambda _d, r: hits.append(1)))
    assert [m.call_user(pid, start, *a) for a in cases] == wants
    assert hits
