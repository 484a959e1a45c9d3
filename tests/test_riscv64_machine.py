"""riscv64 on the machine: the unicorn backend's breakpoint, ecall, step-counting and FP
behaviour; a kprobe at every instruction of corpus functions gives the unprobed results and
execution counts; kretprobes on recursion; uprobes and uretprobes in a process; the
instruction-boundary and LR..SC checks at registration; a nested call from a handler."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from kprobe_ref import (
    InvalidAddress,
    KretprobeBuilder,
    ProbeBuilder,
    UnsupportedInstruction,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.arch.riscv64 import encoding as E
from kprobe_ref.arch.riscv64.regs import Riscv64PtRegs
from kprobe_ref.sim import Machine
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.unicorn_cpu import UnicornCpu

CORPUS = Path(__file__).resolve().parent.parent / "kprobe_ref" / "corpus"
KERNEL = CORPUS / "riscv64" / "kernel.elf"
USER = CORPUS / "riscv64" / "user.elf"
M64 = (1 << 64) - 1
ADDI_A0_1 = E.encode_i(0x13, 0, 10, 10, 1)
RET = E.encode_c_jr(1)


@cache
def cases() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / "functions.json").read_text())
    return data


def boundaries(m: Machine, addr: int, size: int) -> list[int]:
    code, pc, out = m.read(addr, size), 0, []
    while pc < size:
        out.append(addr + pc)
        pc += E.length(code[pc:])
    return out


# -- the frame ------------------------------------------------------------------------------------


def test_pt_regs_order_aliases_and_zero() -> None:
    r = Riscv64PtRegs()
    assert r.FIELDS[:3] == ("epc", "ra", "sp") and r.FIELDS[-4:] == (
        "status", "badaddr", "cause", "orig_a0")
    assert r.FIELDS[1:32] == tuple(Riscv64PtRegs.ALIASES[f"x{i}"] for i in range(1, 32))
    r.set("x2", 0x1000)
    r.set("x8", 5)
    r.pc = 0x42
    got = (r.sp, r.get("sp"), r.get("fp"), r.get("epc"), r.get("pc"))
    assert got == (0x1000, 0x1000, 5, 0x42, 0x42)
    r.sp = -16
    assert r.get("x2") == M64 - 15
    assert r.ZERO == "x0"


# -- the unicorn backend --------------------------------------------------------------------------


def _cpu(code: bytes) -> UnicornCpu:
    cpu = UnicornCpu("riscv64")
    cpu.map(0x10000, 0x1000, "rx")
    cpu.mem_write(0x10000, code)
    return cpu


def test_unicorn_ebreak_and_c_ebreak_stop_at_the_breakpoint_and_count_it() -> None:
    cpu = _cpu(ADDI_A0_1 + E.EBREAK + ADDI_A0_1 + E.C_EBREAK + ADDI_A0_1)
    cpu.watch = {0x10004, 0x1000C}
    stop = cpu.run(0x10000, frozenset(), 100)
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.BREAK, 0x10004, 2)
    stop = cpu.run(0x10008, frozenset(), 100)  # restart after the ebreak
    assert (stop.kind, stop.pc, stop.steps) == (StopKind.BREAK, 0x1000C, 2)
    assert cpu.reg_read("x10") == 2
    assert cpu.exec_counts == {0x10004: 1, 0x1000C: 1}
    assert cpu.run(0x10000, frozenset({0x10004}), 100).kind is StopKind.STOP_AT
    limit = cpu.run(0x10000, frozenset(), 1)
    assert (limit.kind, limit.pc, limit.steps) == (StopKind.STEP_LIMIT, 0x10004, 1)


def test_unicorn_ecall_is_interrupt_8_at_the_ecall() -> None:
    stop = _cpu(ADDI_A0_1 + (0x73).to_bytes(4, "little")).run(0x10000, frozenset(), 10)
    assert (stop.kind, stop.pc) == (StopKind.SYSCALL, 0x10004)


def test_unicorn_floating_point_is_enabled() -> None:
    fcvt_d_l, fadd_d, fcvt_l_d = 0xD2257553, 0x02A57553, 0xC2257553  # fa0 = a0; fa0 += fa0
    code = b"".join(w.to_bytes(4, "little") for w in (fcvt_d_l, fadd_d, fcvt_l_d))
    cpu = _cpu(code)
    cpu.reg_write("x10", 21)
    assert cpu.run(0x10000, frozenset({0x1000C}), 10).kind is StopKind.STOP_AT
    assert cpu.reg_read("x10") == 42


def test_an_illegal_word_is_a_fault_not_a_break() -> None:
    stop = _cpu(b"\0\0\0\0").run(0x10000, frozenset(), 10)
    assert stop.kind is StopKind.FAULT


# -- kprobes over whole functions -----------------------------------------------------------------


def _run_cases(m: Machine, name: str) -> list[int]:
    addr = m.images[0].symbols[name]
    return [m.call(addr, *args) for args in cases()[name]["cases"]]


@pytest.mark.parametrize("name", ["rv_branches", "rv_jumps", "rv_auipc_data", "factorial",
                                  "gcd", "fibonacci"])
def test_kprobe_at_every_instruction_keeps_results_and_counts(name: str) -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    start, size = img.symbols[name], img.sizes[name]
    where = boundaries(m, start, size)
    counts = m.watch(set(where))
    want = _run_cases(m, name)
    plain_counts = dict(counts)
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
    assert {a: n for a, n in hits.items() if n} == {a: n for a, n in plain_counts.items() if n}
    for h in handles:
        unregister_kprobe(m.manager, m.points, h)
    assert _run_cases(m, name) == want


def test_probe_inside_a_4_byte_instruction_is_refused() -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    start, size = img.symbols["factorial"], img.sizes["factorial"]
    code = m.read(start, size)
    inside = next(start + off + 2 for off in (b - start for b in boundaries(m, start, size))
                  if E.length(code[off:]) == 4)
    with pytest.raises(InvalidAddress, match="boundary"):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(inside))
    assert m.read(start, size) == code


def test_c_ebreak_over_a_16_bit_instruction_leaves_the_next_alone() -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    start = img.symbols["factorial"]
    before = m.read(start, 8)
    assert E.length(before) == 2
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(start))
    assert m.read(start, 8) == E.C_EBREAK + before[2:]
    unregister_kprobe(m.manager, m.points, h)
    assert m.read(start, 8) == before


# -- LR/SC ----------------------------------------------------------------------------------------


def _cas_machine() -> tuple[Machine, list[int]]:
    """cas(ptr, old, new): a lr.d/sc.d compare-and-swap loop; returns the old value."""
    insns = [
        E.encode_lr(5, 10),                      # 1: lr.d t0, (a0)
        E.encode_branch(1, 5, 11, 12),           #    bne t0, a1, 2f
        E.encode_sc(6, 12, 10),                  #    sc.d t1, a2, (a0)
        E.encode_branch(1, 6, 0, -12),           #    bnez t1, 1b
        E.encode_i(0x13, 0, 10, 5, 0),           # 2: mv a0, t0
        RET,
    ]  # fmt: skip
    m = Machine("riscv64")
    m.map(0x40_0000, 0x1000, "rx")
    m.write(0x40_0000, b"".join(insns))
    m.add_symbol("cas", 0x40_0000, sum(map(len, insns)))
    offsets = [0x40_0000 + sum(len(i) for i in insns[:k]) for k in range(len(insns))]
    return m, offsets


def test_lr_sc_and_probes_inside_the_sequence_are_refused() -> None:
    m, at = _cas_machine()
    for addr, reason in ((at[0], "exclusive-access"), (at[1], "inside-exclusive-sequence"),
                         (at[2], "exclusive-access")):
        with pytest.raises(UnsupportedInstruction) as exc:
            register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr))
        assert exc.value.reason == reason
    for addr in at[3:]:
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr))
    buf = m.alloc(8)
    m.write(buf, (7).to_bytes(8, "little"))
    assert m.call(at[0], buf, 7, 9) == 7
    assert m.read(buf, 8) == (9).to_bytes(8, "little")


# -- return probes --------------------------------------------------------------------------------


def test_kretprobe_on_recursive_factorial() -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    fact = img.symbols["factorial"]
    seen: list[tuple[int, int]] = []

    def on_ret(_d: object, regs: Any) -> None:
        seen.append((regs.first_ret_value(), regs.sp))

    entry_sp: list[int] = []
    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(fact)
                            .with_entry_handler(lambda _d, r: entry_sp.append(r.sp))
                            .with_ret_handler(on_ret).with_maxactive(32))
    assert m.call(fact, 6) == 720
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)
    assert seen[-1][0] == 720 and len(seen) == len(entry_sp) >= 1
    assert [sp for _, sp in seen] == entry_sp[::-1]
    assert m.regs().get("ra") != 0 and m.regs().pc == 0x1000
    unregister_kretprobe(m.manager, m.points, rp)
    assert m.call(fact, 6) == 720


def test_kretprobe_leaves_ra_as_the_real_return_address() -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    leaf = img.symbols["rv_leaf"]
    m.call(leaf, 3, 4)
    plain = m.regs()
    register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(leaf)
                       .with_ret_handler(lambda _d, _r: None))
    assert m.call(leaf, 3, 4) == 19
    probed = m.regs()
    assert probed.get("ra") == plain.get("ra") == 0x1000
    assert probed.as_dict() == plain.as_dict()


def test_nested_call_from_a_handler() -> None:
    m = Machine("riscv64")
    img = m.load_elf(KERNEL)
    fact, leaf = img.symbols["factorial"], img.symbols["rv_leaf"]
    inner: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(fact)
                    .with_pre_handler(lambda _d, _r: inner.append(m.call(leaf, 1, 2))))
    assert m.call(fact, 5) == 120
    assert inner and set(inner) == {7}


# -- user probes ----------------------------------------------------------------------------------


def test_uprobe_and_uretprobe_in_a_process() -> None:
    m = Machine("riscv64")
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
    assert m.call_user(pid, fib, 10) == want
    assert hits and rets and rets[-1] == want and len(hits) == len(rets)
    before = m.trap_count
    assert m.call_user(other, m.process(other).image.symbols["fibonacci"], 10) == want
    assert m.trap_count == before
    jumps = proc.image.symbols["rv_jumps"]
    size = proc.image.sizes["rv_jumps"]
    wants = [m.call_user(pid, jumps, *a) for a in cases()["rv_jumps"]["cases"]]
    code = m.process(pid).space.read(jumps, size)
    pc = 0
    while pc < size:
        register_uprobe(proc.manager, proc.points, ProbeBuilder().with_symbol_addr(jumps + pc)
                        .with_user_mode(pid))
        pc += E.length(code[pc:])
    assert [m.call_user(pid, jumps, *a) for a in cases()["rv_jumps"]["cases"]] == wants
