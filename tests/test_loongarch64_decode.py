"""The loongarch64 decode table: rows compile, name known reasons and are pairwise
disjoint; every simulated and rejected class from concrete words (assembled by zig's
LLVM assembler where it knows the instruction); plain steps; the LL..SC window; the
encoders against the assembler and Ghidra's disassembler; the breakpoints."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from kprobe_ref import ProbeBuilder, UnsupportedInstruction, register_kprobe
from kprobe_ref.arch import ARCHES, Verdict
from kprobe_ref.arch.loongarch64 import decode as D
from kprobe_ref.arch.loongarch64 import encoding as E
from kprobe_ref.reasons import REASONS
from kprobe_ref.sim import Machine

LA = ARCHES["loongarch64"]
AT = 0x40_1000


def word(w: int) -> bytes:
    return w.to_bytes(4, "little")


def verdict(raw: bytes) -> tuple[str, str, str]:
    d = LA.decode(raw, AT, False)
    return d.verdict.value, d.klass, d.reason


def test_every_row_compiles_and_names_a_known_reason() -> None:
    for row in D.ROWS:
        mask, match = row.mask_match
        assert match & ~mask == 0 and len(row.bits) == 32
        assert row.reason in REASONS, row.klass
        if row.verdict is Verdict.SIMULATE:
            assert row.fmt, row.klass
    for _, _, _, reason, _ in D.doc_rows():
        assert reason in REASONS


def test_rows_are_pairwise_disjoint() -> None:
    for a, b in itertools.combinations(D.ROWS, 2):
        (ma, xa), (mb, xb) = a.mask_match, b.mask_match
        assert (xa ^ xb) & ma & mb, f"{a.klass} {a.pattern} overlaps {b.klass} {b.pattern}"


def test_random_members_of_each_row_decode_to_that_row() -> None:
    rng = random.Random(3)
    for row in D.ROWS:
        mask, match = row.mask_match
        for _ in range(50):
            w = match | (rng.getrandbits(32) & ~mask & 0xFFFF_FFFF)
            assert verdict(word(w)) == (row.verdict.value, row.klass, row.reason), hex(w)


# -- words from the assembler -----------------------------------------------------------------

ASSEMBLED: list[tuple[str, str, str, str]] = [
    # (assembly, verdict, class, reason)
    ("pcaddi $t0, -524288", "simulate", "pcaddi", "pc-relative-address"),
    ("pcalau12i $a0, 524287", "simulate", "pcalau12i", "pc-relative-address"),
    ("pcaddu12i $t8, 1", "simulate", "pcaddu12i", "pc-relative-address"),
    ("pcaddu18i $ra, -1", "simulate", "pcaddu18i", "pc-relative-address"),
    ("b -134217728", "simulate", "b", "branch-relative"),
    ("bl 134217724", "simulate", "bl", "call-relative"),
    ("jirl $ra, $ra, 0", "simulate", "jirl", "call-indirect"),
    ("jirl $zero, $ra, 0", "simulate", "jirl", "call-indirect"),
    ("beq $t0, $t1, -131072", "simulate", "beq", "branch-relative"),
    ("bne $a0, $zero, 131068", "simulate", "bne", "branch-relative"),
    ("blt $s0, $s1, 8", "simulate", "blt", "branch-relative"),
    ("bge $s0, $s1, -8", "simulate", "bge", "branch-relative"),
    ("bltu $a1, $a2, 4", "simulate", "bltu", "branch-relative"),
    ("bgeu $a1, $a2, 4", "simulate", "bgeu", "branch-relative"),
    ("beqz $t3, -4194304", "simulate", "beqz", "branch-relative"),
    ("bnez $t3, 4194300", "simulate", "bnez", "branch-relative"),
    ("bceqz $fcc3, 0x3ffffc", "simulate", "bceqz", "branch-relative"),
    ("bcnez $fcc7, -4", "simulate", "bcnez", "branch-relative"),
    ("ll.w $t0, $a0, 0", "reject", "ll", "exclusive-access"),
    ("ll.d $t0, $a0, 8", "reject", "ll", "exclusive-access"),
    ("sc.w $t1, $a0, 0", "reject", "sc", "exclusive-access"),
    ("sc.d $t1, $a0, 8", "reject", "sc", "exclusive-access"),
    ("amswap.w $t0, $t1, $a0", "reject", "am", "loongarch64-atomic-memory-access"),
    ("amadd.d $t0, $t1, $a0", "reject", "am", "loongarch64-atomic-memory-access"),
    ("ammin.du $t0, $t1, $a0", "reject", "am", "loongarch64-atomic-memory-access"),
    ("amswap_db.w $t0, $t1, $a0", "reject", "am", "loongarch64-atomic-memory-access"),
    ("ammin_db.du $t0, $t1, $a0", "reject", "am", "loongarch64-atomic-memory-access"),
    ("break 10", "reject", "break", "exception-generating"),
    ("break 0", "reject", "break", "exception-generating"),
    ("dbcl 1", "reject", "dbcl", "exception-generating"),
    ("syscall 0", "reject", "syscall", "privilege-change"),
    ("ertn", "reject", "ertn", "privilege-change"),
    ("idle 0", "reject", "idle", "halts"),
    ("csrrd $t0, 0x1", "reject", "csr", "loongarch64-csr-access"),
    ("csrwr $t0, 0x6", "reject", "csr", "loongarch64-csr-access"),
    ("csrxchg $t0, $t1, 0x5", "reject", "csr", "loongarch64-csr-access"),
    ("iocsrrd.w $t0, $t1", "reject", "iocsr", "loongarch64-iocsr-access"),
    ("iocsrwr.d $t0, $t1", "reject", "iocsr", "loongarch64-iocsr-access"),
    ("cacop 0x10, $a0, 0", "reject", "cacop", "loongarch64-cache-maintenance"),
    ("tlbclr", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("tlbflush", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("tlbsrch", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("tlbrd", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("tlbwr", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("tlbfill", "reject", "tlb", "loongarch64-tlb-maintenance"),
    ("invtlb 0x1, $t0, $t1", "reject", "invtlb", "loongarch64-tlb-maintenance"),
    ("lddir $t0, $t1, 1", "reject", "lddir", "loongarch64-tlb-maintenance"),
    ("ldpte $t0, 1", "reject", "ldpte", "loongarch64-tlb-maintenance"),
    ("add.d $a0, $a0, $a1", "step", "plain", "no-pc-use"),
    ("ld.d $ra, $sp, 24", "step", "plain", "no-pc-use"),
    ("stptr.d $t0, $a0, 8", "step", "plain", "no-pc-use"),
    ("dbar 0", "step", "plain", "no-pc-use"),
    ("ibar 0", "step", "plain", "no-pc-use"),
    ("movgr2cf $fcc1, $a2", "step", "plain", "no-pc-use"),
    ("fcmp.clt.d $fcc0, $fa0, $fa1", "step", "plain", "no-pc-use"),
    ("rdtime.d $t0, $t1", "step", "plain", "no-pc-use"),
    ("cpucfg $t0, $t1", "step", "plain", "no-pc-use"),
    ("preld 0, $a0, 0", "step", "plain", "no-pc-use"),
]


def assemble(lines: list[str], tmp: Path) -> list[bytes]:
    """Assemble one instruction per line with zig's clang; return the words."""
    src, obj = tmp / "x.S", tmp / "x.o"
    src.write_text(".text\n" + "\n".join(lines) + "\n")
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target",
                    "loongarch64-freestanding-none", "-c", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    with obj.open("rb") as f:
        text = ELFFile(f).get_section_by_name(".text").data()
    assert len(text) == 4 * len(lines)
    return [text[i : i + 4] for i in range(0, len(text), 4)]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    lines = [a for a, *_ in ASSEMBLED]
    return dict(zip(lines, assemble(lines, tmp_path_factory.mktemp("la")), strict=True))


@pytest.mark.parametrize(("asm", "want_verdict", "klass", "reason"), ASSEMBLED,
                         ids=[a for a, *_ in ASSEMBLED])
def test_assembled_words(assembled: dict[str, bytes], asm: str, want_verdict: str,
                         klass: str, reason: str) -> None:
    assert verdict(assembled[asm]) == (want_verdict, klass, reason)


def test_encoders_match_the_assembler(assembled: dict[str, bytes]) -> None:
    t0, t1, a0, t3, ra = 12, 13, 4, 15, 1
    assert assembled["pcaddi $t0, -524288"] == E.encode_pc_rel("pcaddi", t0, -524288)
    assert assembled["pcalau12i $a0, 524287"] == E.encode_pc_rel("pcalau12i", a0, 524287)
    assert assembled["pcaddu18i $ra, -1"] == E.encode_pc_rel("pcaddu18i", ra, -1)
    assert assembled["b -134217728"] == E.encode_b(-(1 << 27))
    assert assembled["bl 134217724"] == E.encode_bl((1 << 27) - 4)
    assert assembled["jirl $ra, $ra, 0"] == E.encode_jirl(ra, ra, 0)
    assert assembled["beq $t0, $t1, -131072"] == E.encode_branch("beq", t0, t1, -(1 << 17))
    assert assembled["bne $a0, $zero, 131068"] == E.encode_branch("bne", a0, 0, (1 << 17) - 4)
    assert assembled["beqz $t3, -4194304"] == E.encode_beqz(t3, -(1 << 22))
    assert assembled["bnez $t3, 4194300"] == E.encode_bnez(t3, (1 << 22) - 4)
    assert assembled["bceqz $fcc3, 0x3ffffc"] == E.encode_bceqz(3, 0x3FFFFC)
    assert assembled["bcnez $fcc7, -4"] == E.encode_bcnez(7, -4)
    assert assembled["ll.w $t0, $a0, 0"] == E.encode_ll_sc("ll.w", t0, a0)
    assert assembled["sc.d $t1, $a0, 8"] == E.encode_ll_sc("sc.d", t1, a0, 2)
    assert assembled["break 10"] == E.BREAK_KPROBE


@pytest.mark.parametrize(("w", "klass", "reason"), [
    (0x3857_0000 | 13 << 10 | 4 << 5 | 12, "sc_q", "exclusive-access"),       # sc.q
    (0x3857_8000 | 4 << 5 | 12, "llacq", "exclusive-access"),                 # llacq.w
    (0x3857_8800 | 4 << 5 | 12, "llacq", "exclusive-access"),                 # llacq.d
    (0x3857_8400 | 4 << 5 | 12, "screl", "exclusive-access"),                 # screl.w
    (0x3857_8C00 | 4 << 5 | 12, "screl", "exclusive-access"),                 # screl.d
    (0x3858_0000 | 13 << 10 | 4 << 5 | 12, "am", "loongarch64-atomic-memory-access"),  # amcas.b
    (0x385C_0000 | 13 << 10 | 4 << 5 | 12, "am", "loongarch64-atomic-memory-access"),  # amswap.b
    (0x385F_8000 | 13 << 10 | 4 << 5 | 12, "am", "loongarch64-atomic-memory-access"),  # amadd_db.h
    (0x002B_8000, "hvcl", "privilege-change"),
    (0x0500_0400 | 12, "gcsr", "loongarch64-csr-access"),
    (0x4800_0200, "jiscr", "loongarch64-lbt-jump"),                           # jiscr0
    (0x4800_0300, "jiscr", "loongarch64-lbt-jump"),                           # jiscr1
])  # fmt: skip
def test_v1_1_and_extension_words_the_assembler_does_not_know(w: int, klass: str,
                                                              reason: str) -> None:
    assert verdict(word(w)) == ("reject", klass, reason)


@pytest.mark.parametrize("w", [0x0000_0000, 0xFFFF_FFFF])
def test_undecodable_words_are_refused(w: int) -> None:
    assert verdict(word(w)) == ("reject", "undecodable", "undecodable")


def test_simulated_fields_are_assembled_unsigned() -> None:
    d = LA.decode(E.encode_jirl(1, 12, -4), AT, False)
    assert dict(d.fields) == {"rd": 1, "rj": 12, "imm": (1 << 18) - 4}
    d = LA.decode(E.encode_bcnez(5, -8), AT, False)
    assert dict(d.fields) == {"cj": 5, "imm": (1 << 23) - 8}
    d = LA.decode(E.encode_pc_rel("pcaddu18i", 7, -1), AT, False)
    assert dict(d.fields) == {"rd": 7, "imm": ((1 << 20) - 1) << 18}
    d = LA.decode(E.encode_b(-4), AT, False)
    assert dict(d.fields) == {"imm": (1 << 28) - 4}


def test_random_words_step_only_when_ghidra_decodes_them() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        w = rng.getrandbits(32)
        d = LA.decode(word(w), AT, False)
        if D.lookup(w) is None:
            assert (d.verdict is Verdict.STEP_OUT_OF_LINE) == (D.disassemble(word(w), AT)
                                                               is not None)


# -- breakpoints ------------------------------------------------------------------------------


def test_breakpoints_are_linux_break_codes() -> None:
    d = LA.decode(E.NOP, AT, False)
    assert LA.breakpoint(d, False) == E.encode_break(10) == word(0x002A_000A)
    assert LA.breakpoint(d, True) == E.encode_break(12)
    assert LA.step_breakpoint(False) == LA.trampoline(False) == E.encode_break(11)
    assert LA.step_breakpoint(True) == LA.trampoline(True) == E.encode_break(13)
    slot = LA.build_slot(d, 0x5000, True)
    assert (slot.code, slot.break_offset, slot.resume_delta) == (E.NOP + E.encode_break(13),
                                                                 4, 4)
    assert LA.build_slot(d, 0x5000, False).code == E.NOP + E.encode_break(11)


# -- registration on the machine, and the LL..SC window ----------------------------------------


def _machine(insns: list[bytes]) -> tuple[Machine, list[int]]:
    m = Machine("loongarch64")
    m.map(0x40_0000, 0x1000, "rx")
    m.write(0x40_0000, b"".join(insns))
    m.add_symbol("f", 0x40_0000, 4 * len(insns))
    return m, [0x40_0000 + 4 * k for k in range(len(insns))]


@pytest.mark.parametrize("asm", [a for a, v, *_ in ASSEMBLED if v == "reject"])
def test_rejected_classes_are_refused_at_registration_and_memory_is_untouched(
        assembled: dict[str, bytes], asm: str) -> None:
    m, at = _machine([E.NOP, assembled[asm], E.NOP])
    before = m.read(at[0], 12)
    with pytest.raises(UnsupportedInstruction) as exc:
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(at[1]))
    assert exc.value.reason == verdict(assembled[asm])[2]
    assert m.read(at[0], 12) == before and not m.points


def _cas(variant: str = "w") -> list[bytes]:
    """cas(ptr, old, new): 1: ll t0,(a0); bne t0,a1,2f; move t1,a2; sc t1,(a0);
    beqz t1,1b; 2: move a0,t0; ret."""
    mv = 0b00000000000101010  # or rd, rj, zero
    return [
        E.encode_ll_sc(f"ll.{variant}", 12, 4),
        E.encode_branch("bne", 12, 5, 16),
        E.encode_3r(mv, 13, 6, 0),
        E.encode_ll_sc(f"sc.{variant}", 13, 4),
        E.encode_beqz(13, -16),
        E.encode_3r(mv, 4, 12, 0),
        E.encode_jirl(0, 1, 0),
    ]


@pytest.mark.parametrize("variant", ["w", "d"])
def test_ll_sc_and_probes_inside_the_sequence_are_refused(variant: str) -> None:
    m, at = _machine(_cas(variant))
    expect = {at[0]: "exclusive-access", at[1]: "inside-exclusive-sequence",
              at[2]: "inside-exclusive-sequence", at[3]: "exclusive-access"}
    for addr, reason in expect.items():
        with pytest.raises(UnsupportedInstruction) as exc:
            register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr))
        assert exc.value.reason == reason
    hits: list[int] = []
    for addr in at[4:]:
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr)
                        .with_pre_handler(lambda _d, r: hits.append(r.pc)))
    buf = m.alloc(8)
    m.write(buf, (7).to_bytes(8, "little"))
    assert m.call(at[0], buf, 7, 9) == 7
    assert m.read(buf, 8)[:4] == (9).to_bytes(4, "little")
    assert hits == [at[4], at[5], at[6]]


def test_open_ll_far_back_is_outside_the_window() -> None:
    code = E.encode_ll_sc("ll.w", 12, 4) + E.NOP * 40
    start = 0x40_0000
    assert D.sequence_hazard(code, start, start + 4 * 32) == "inside-exclusive-sequence"
    assert D.sequence_hazard(code, start, start + 4 * 33) is None
    closed = E.encode_ll_sc("ll.w", 12, 4) + E.encode_ll_sc("sc.w", 13, 4) + E.NOP * 4
    assert D.sequence_hazard(closed, start, start + 12) is None
    acq = (0x3857_8000 | 4 << 5 | 12).to_bytes(4, "little") + E.NOP * 4
    assert D.sequence_hazard(acq, start, start + 8) == "inside-exclusive-sequence"
