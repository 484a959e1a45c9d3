"""The probe engine on the simulated aarch64 machine (unicorn): probed and unprobed runs
agree, literal loads reach the right address space and V register, exclusive sequences and
refused classes cannot be probed, return probes work through recursion and in processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    UnsupportedInstruction,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
)
from kprobe_ref.arch.aarch64 import encoding as enc
from kprobe_ref.arch.aarch64.decode import decode
from kprobe_ref.sim import Machine
from tests.helpers import KERNEL_TEXT

CORPUS = Path(__file__).resolve().parent.parent / "kprobe_ref" / "corpus" / "aarch64"
KERNEL, USER = CORPUS / "kernel.elf", CORPUS / "user.elf"
M64 = (1 << 64) - 1


def kernel() -> tuple[Machine, dict[str, int], dict[str, int]]:
    m = Machine("aarch64")
    img = m.load_elf(KERNEL)
    return m, img.symbols, img.sizes


CASES: dict[str, list[tuple[int, ...]]] = {
    "a64_bcond": [(1, 2), (2, 1), (5, 5), (M64, 1), (1 << 63, 1 << 63)],
    "a64_b_bl": [(0,), (1,)],
    "a64_cb_tb": [(0, 0), (8, 1 << 40), (M64, M64), (1 << 32, 1)],
    "a64_indirect": [(i, 7) for i in range(8)],
    "a64_literals": [(i,) for i in range(4)],
    "factorial": [(0,), (5,)],
    "gcd": [(48, 18), (M64 - 47, 18)],
    "dense_switch": [(i, 0x1234567) for i in (0, 3, 7, 15, 31)],
    "bubble_sort": [],
}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c])
def test_kprobe_at_every_instruction_matches_unprobed(name: str) -> None:
    m, syms, sizes = kernel()
    addrs = set(range(syms[name], syms[name] + sizes[name], 4))
    counts = m.watch(addrs)
    expected = [m.call(syms[name], *args) for args in CASES[name]]
    unprobed = dict(counts)
    m2, syms2, _ = kernel()
    probes = {
        a: register_kprobe(
            m2.manager,
            m2.points,
            ProbeBuilder().with_symbol_addr(syms2[name]).with_offset(a - syms2[name]),
        )
        for a in sorted(addrs)
    }
    assert [m2.call(syms2[name], *args) for args in CASES[name]] == expected
    assert {a: p.nhit for a, p in probes.items()} == {a: unprobed.get(a, 0) for a in addrs}
    assert m2.trap_count >= sum(unprobed.values())
    for p in probes.values():
        unregister_kprobe(m2.manager, m2.points, p)
    assert m2.read(syms2[name], sizes[name]) == m.read(syms[name], sizes[name])


def _word_addr(m: Machine, start: int, size: int, klass: str) -> list[int]:
    return [a for a in range(start, start + size, 4) if decode(m.read(a, 4), a).klass == klass]


def test_ldr_literal_q_on_machine_matches_unprobed() -> None:
    m, syms, sizes = kernel()
    (ldr_q,) = _word_addr(m, syms["a64_literals"], sizes["a64_literals"], "ldr_lit_q")
    for q in ("q2", "q1", "q0"):
        m.cpu.reg_write(q, 0xDEAD_BEEF << 64 | 0xFFFF)
    expected = m.call(syms["a64_literals"], 3)
    regs_after = {q: m.cpu.reg_read(q) for q in ("q0", "q1", "q2")}
    m2, syms2, _ = kernel()
    for q in ("q2", "q1", "q0"):
        m2.cpu.reg_write(q, 0xDEAD_BEEF << 64 | 0xFFFF)
    seen: list[int] = []
    probe = register_kprobe(
        m2.manager,
        m2.points,
        ProbeBuilder()
        .with_symbol_addr(ldr_q)
        .with_post_handler(lambda _d, _r: seen.append(m2.cpu.reg_read("q2"))),
    )
    assert m2.call(syms2["a64_literals"], 3) == expected
    assert {q: m2.cpu.reg_read(q) for q in ("q0", "q1", "q2")} == regs_after
    assert seen == [0x5555_6666_7777_8888_1111_2222_3333_4444]
    unregister_kprobe(m2.manager, m2.points, probe)
    stack = 0x7FF0_0000 - 0x1000
    assert m2.read(stack, 0x1000) == m.read(stack, 0x1000)
    text = KERNEL_TEXT["aarch64"]
    assert m2.read(text, 0x4000) == m.read(text, 0x4000)


def test_literal_load_in_uprobe_reads_the_process_memory() -> None:
    m, _, _ = kernel()
    pid = m.spawn(USER)
    proc = m.process(pid)
    start = proc.image.symbols["a64_literals"]
    ldr_x = start + 8
    d = decode(proc.space.read(ldr_x, 4), ldr_x)
    assert d.klass == "ldr_lit_x"
    literal = ldr_x + 4 * d.fields["imm"]
    proc.space.write(literal, (0x1111).to_bytes(8, "little"), enforce=False)
    m.map(literal & ~0xFFF, 0x1000, "rw")
    m.write(literal, (0x9999_9999).to_bytes(8, "little"))
    expected = m.call_user(pid, start, 0)
    hits: list[int] = []
    register_uprobe(
        proc.manager,
        proc.points,
        ProbeBuilder()
        .with_symbol_addr(ldr_x)
        .with_user_mode(pid)
        .with_post_handler(lambda _d, r: hits.append(r.get("x9"))),
    )
    assert m.call_user(pid, start, 0) == expected
    assert hits == [0x1111]
    assert proc.space.read(ldr_x, 4) == enc.BREAK_UPROBE


EXCLUSIVE_LOOP = (
    0x885F7C20,  # 1: ldxr  w0, [x1]
    0x11000400,  #    add   w0, w0, #1
    0x88027C20,  #    stxr  w2, w0, [x1]
    0x35FFFFA2,  #    cbnz  w2, 1b
    0xD65F03C0,  #    ret
)
CODE = 0x5000_0000


def _map_code(m: Machine, words: tuple[int, ...]) -> None:
    m.map(CODE, 0x1000, "rx")
    m.write(CODE, b"".join(enc.to_bytes(w) for w in words))
    m.add_symbol("loop", CODE, 4 * len(words))


def test_probe_inside_ldxr_stxr_loop_is_rejected() -> None:
    m = Machine("aarch64")
    _map_code(m, EXCLUSIVE_LOOP)
    buf = m.alloc(0x1000)
    before = m.read(CODE, 20)
    for offset, reason in (
        (0, "exclusive-access"),
        (4, "inside-exclusive-sequence"),
        (8, "exclusive-access"),
    ):
        with pytest.raises(UnsupportedInstruction) as err:
            register_kprobe(
                m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE).with_offset(offset)
            )
        assert err.value.reason == reason
    assert m.read(CODE, 20) == before
    probes = [
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE).with_offset(o))
        for o in (12, 16)
    ]
    m.write(buf, (41).to_bytes(4, "little"))
    m.call(CODE, 0, buf)
    assert int.from_bytes(m.read(buf, 4), "little") == 42
    assert [p.nhit for p in probes] == [1, 1]


REJECTED_WORDS = (
    0xD4000021,
    0xD4200120,
    0xD69F03E0,
    0xD65F0BFF,
    0xD50323BF,
    0xD50342DF,
    0xD53B4224,
    0xC8027C20,
    0x1D010440,
)


def test_every_rejected_class_is_refused_on_the_machine() -> None:
    m = Machine("aarch64")
    _map_code(m, REJECTED_WORDS)
    before = m.read(CODE, 4 * len(REJECTED_WORDS))
    for i, w in enumerate(REJECTED_WORDS):
        with pytest.raises(UnsupportedInstruction) as err:
            register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE + 4 * i))
        assert err.value.reason == decode(enc.to_bytes(w), 0).reason
    assert m.read(CODE, len(before)) == before


def test_kretprobe_on_recursive_function() -> None:
    m, syms, _ = kernel()
    f = syms["hanoi_moves"]
    calls = m.watch({f})
    expected = m.call(f, 6)
    m2, _, _ = kernel()
    entries: list[int] = []
    returns: list[int] = []
    rp = register_kretprobe(
        m2.manager,
        m2.points,
        KretprobeBuilder()
        .with_symbol_addr(f)
        .with_entry_handler(lambda _d, r: entries.append(r.sp))
        .with_ret_handler(lambda _d, r: returns.append(r.first_ret_value()))
        .with_maxactive(32),
    )
    assert m2.call(f, 6) == expected == 63
    assert len(entries) == len(returns) == calls[f] > 1
    assert returns[-1] == expected
    assert all(v & (v + 1) == 0 for v in returns)
    assert rp.nmissed == 0
    regs = m2.regs()
    assert regs.get("x30") == regs.pc


def test_kretprobe_misses_beyond_maxactive() -> None:
    m, syms, _ = kernel()
    f = syms["fibonacci"]
    rp = register_kretprobe(
        m.manager, m.points, KretprobeBuilder().with_symbol_addr(f).with_maxactive(1)
    )
    assert m.call(f, 10) == 55
    assert rp.nmissed > 0


def test_kretprobe_on_recursive_fibonacci_counts_every_call() -> None:
    m, syms, _ = kernel()
    counts = m.watch({syms["fibonacci"]})
    expected = m.call(syms["fibonacci"], 10)
    calls = counts[syms["fibonacci"]]
    m2, syms2, _ = kernel()
    returns: list[int] = []
    register_kretprobe(
        m2.manager,
        m2.points,
        KretprobeBuilder()
        .with_symbol_addr(syms2["fibonacci"])
        .with_ret_handler(lambda _d, r: returns.append(r.first_ret_value()))
        .with_maxactive(64),
    )
    assert m2.call(syms2["fibonacci"], 10) == expected
    assert len(returns) == calls and returns[-1] == expected


def test_uprobe_and_uretprobe_in_a_spawned_process() -> None:
    m = Machine("aarch64")
    pid = m.spawn(USER)
    proc = m.process(pid)
    f = proc.image.symbols["a64_b_bl"]
    expected = [m.call_user(pid, f, a) for a in (0, 1)]
    hits: list[int] = []
    rets: list[int] = []
    register_uprobe(
        proc.manager,
        proc.points,
        ProbeBuilder()
        .with_symbol_addr(f)
        .with_offset(20)
        .with_user_mode(pid)
        .with_pre_handler(lambda _d, r: hits.append(r.pc)),
    )
    register_uretprobe(
        proc.manager,
        proc.points,
        KretprobeBuilder()
        .with_symbol_addr(f)
        .with_user_mode(pid)
        .with_ret_handler(lambda _d, r: rets.append(r.first_ret_value())),
    )
    assert [m.call_user(pid, f, a) for a in (0, 1)] == expected
    assert hits == [f + 20, f + 20]
    assert rets == expected
    assert proc.space.read(f, 4) == enc.BREAK_UPROBE


def test_brk_traps_and_fp_on_unicorn() -> None:
    m, syms, _ = kernel()
    post = ProbeBuilder().with_post_handler(lambda d, r: None)  # two traps: no boost
    register_kprobe(m.manager, m.points, post.with_symbol_addr(syms["a64_leaf"]))
    stepped = register_kprobe(
        m.manager, m.points, post.with_symbol_addr(syms["a64_leaf"]).with_offset(4)
    )
    assert m.call(syms["a64_b_bl"], 1) == 5 + 7 + 0x20 + 0x1000
    assert stepped.nhit == 1
    assert m.trap_count == 4
    assert m.call(syms["a64_literals"], 2) != m.call(syms["a64_literals"], 0)


def test_handler_may_call_back_into_emulated_code() -> None:
    m, syms, _ = kernel()
    expected = m.call(syms["a64_indirect"], 5, 7)
    nested: list[int] = []

    def pre(_d: object, regs: object) -> None:
        nested.append(m.call(syms["a64_leaf"], 3, 4))
        nested.append(m.call(syms["a64_literals"], 3))

    for offset in (0, 36):
        register_kprobe(
            m.manager,
            m.points,
            ProbeBuilder()
            .with_symbol_addr(syms["a64_indirect"])
            .with_offset(offset)
            .with_pre_handler(pre),
        )
    assert m.call(syms["a64_indirect"], 5, 7) == expected
    assert nested[0] == nested[2] == 19 and nested[1] == nested[3]
